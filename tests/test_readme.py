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
    assert quick in ci and quick.endswith('python -m pytest -q -m "not slow" -n auto')
    assert "python -m pytest -q -m slow -n auto" in ci[ci.index(quick) + 1 :]
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


def test_accelerator_installs_pin_the_required_jax():
    """README's "On a GPU" and "On a Colab TPU" install lines, docs/ and every notebook
    name jax at requirements.txt's pin, with an extra jax 0.10.2 declares."""
    pin = re.search(r"(?m)^jax==(\S+)", (ROOT / "requirements.txt").read_text()).group(1)
    assert re.search(r"(?m)^jaxlib==(\S+)", (ROOT / "requirements.txt").read_text())[1] == pin
    readme = (ROOT / "README.md").read_text()
    for heading, extra in (("### On a GPU", "cuda13"), ("### On a Colab TPU", "tpu")):
        section = readme.split(heading, 1)[1].split("\n#", 1)[0]
        assert f'pip install "jax[{extra}]=={pin}"' in section, heading
    texts = {"README.md": readme}
    for path in [*(ROOT / "docs").glob("*.md"), *(ROOT / "notebooks").glob("*.ipynb")]:
        texts[path.name] = path.read_text()
    found = 0
    for name, text in texts.items():
        for extra, version in re.findall(r"jax\[([a-z0-9-]+)\]==([0-9][0-9a-z.]*)", text):
            assert (extra, version) in {(e, pin) for e in ("cuda12", "cuda13", "tpu")}, name
            found += 1
    assert found >= 2 + 3  # README's two sections, each notebook's TPU branch
