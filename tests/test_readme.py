"""The README's two commands are the ones CI and users run."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    head = text[: text.index("\n## ")]
    return re.findall(r"```(?:bash|sh)\n(.+?)\n```", head, flags=re.S)


def test_readme_opens_with_exactly_two_commands():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    run, test = commands
    assert "python -m w2v_jax.main --config=w2v_jax/configs/synthetic.py" in run
    assert "pytest" in test
    for command in commands:
        assert command.startswith("pip install -q -r requirements.txt -e . && ")


def test_ci_runs_exactly_the_readme_test_command_and_then_the_slow_tests():
    """The README's command is the quick set (``-m "not slow"``); CI runs it, then the slow
    rest, so every test runs in CI; the README says how to run the slow ones."""
    ci = (ROOT / ".ci/run").read_text().splitlines()
    quick = _readme_commands()[1]
    assert quick in ci and quick.endswith('python -m pytest -q -m "not slow"')
    assert "python -m pytest -q -m slow" in ci[ci.index(quick) + 1 :]
    assert "python -m pytest -q -m slow" in (ROOT / "README.md").read_text()


def test_requirements_are_pinned():
    lines = [
        line.split("#")[0].strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][0-9A-Za-z.]*", x) for x in lines)
    names = {x.split("==")[0].lower() for x in lines}
    assert {"jax", "jaxlib", "flax", "optax", "numpy", "absl-py", "ml-collections"} <= names
    assert "tensorflow" not in names
