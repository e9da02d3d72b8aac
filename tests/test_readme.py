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


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci/run").read_text().splitlines()
    assert _readme_commands()[1] in ci


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
