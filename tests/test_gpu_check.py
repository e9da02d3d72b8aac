"""experiments/gpu_check.py: its pip spec and parsing, a part's failure recorded while the
rest run, and (slow) every part at tiny sizes on the CPU (``--cpu_smoke``)."""

import importlib.util
import json
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("gpu_check", ROOT / "experiments" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(gpu_check)

PARTS = ["install", "env", "train/rows_small", "train/rows_large", "train/deterministic"]
PARTS += ["train/ftz_atomics", "train/tensorfloat32", "analogy", "tests"]


def test_pip_spec_is_the_pinned_jax_with_the_drivers_cuda():
    pin = re.search(r"(?m)^jax==(\S+)", (ROOT / "requirements.txt").read_text()).group(1)
    assert gpu_check.pinned_jax() == pin
    assert gpu_check.cuda_major("580.159.04") == "13"  # CUDA 13 needs a driver >= 580
    assert gpu_check.cuda_major("550.54.14") == "12"
    assert gpu_check.cuda_major("") == "12"
    assert gpu_check.pip_spec("13", pin) == f"jax[cuda13]=={pin}"


def test_pytest_counts():
    line = "3 failed, 40 passed, 2 skipped, 1 error in 61.20s"
    assert gpu_check.pytest_counts(line) == {"failed": 3, "passed": 40, "skipped": 2, "error": 1}


def test_a_failing_part_is_recorded_and_the_next_one_runs():
    check = gpu_check.Check(budget_s=120, smoke=True)
    check.run("train/bad", "train", {"overrides": {"batch_size": 0}})
    check.run("env", "env", {})
    check.deadline = 0  # budget spent: the next part is skipped, not run
    check.run("analogy", "analogy", {"overrides": {}})
    bad, env, late = (check.results[k] for k in ("train/bad", "env", "analogy"))
    assert bad["status"] == "failed" and "batch_size" in bad["error"], bad
    assert env["status"] == "ok" and env["backend"] == "cpu" and env["jax_is_pinned"]
    assert late["status"] == "skipped" and "budget" in late["error"]


def test_summary_names_each_part_and_its_failure():
    report = {
        "rows_per_step": {"small": 16_384, "large": 65_536},
        "analogy_epochs": 5,
        "parts": {
            "install": {"status": "ok", "ok": False, "spec": "jax[cuda13]==0.10.2", "pip_rc": 1},
            "env": {"status": "timeout", "error": "over 30 s"},
            "train/rows_small": {"status": "ok", "words_per_s": 2.1e7, "peak_bytes_in_use": 2**31},
            "train/deterministic": {"status": "ok", "words_per_s": 7e6},
            "train/ftz_atomics": {"status": "failed", "error": "ValueError: boom"},
            "analogy": {"status": "ok", "analogy/total": 0.105, "words_per_s": 1.9e7},
            "tests": {"status": "ok", "passed": 40, "failed": 1, "failed_tests": ["t::x"]},
        },
    }
    text = "\n".join(gpu_check.summarise(report))
    assert "env: timeout: over 30 s" in text
    assert "install: jax[cuda13]==0.10.2 pip failed (rc 1)" in text
    assert "16,384 rows/step: 21.00M words/s, peak 2.00 GiB" in text
    assert "deterministic=True: 7.00M words/s (0.33x the 16,384-row run)" in text
    assert "ftz-atomics XLA flag: failed: ValueError: boom" in text
    assert "65,536 rows/step: missing" in text
    assert "analogy, 16,384 rows, 5 epochs: 10.50% (gensim 8.2%" in text
    assert "tests: 40 passed, 1 failed" in text and "t::x" in text


@pytest.mark.slow
def test_cpu_smoke_runs_every_part(tmp_path):
    out = tmp_path / "check" / "gpu_check.json"
    cmd = [sys.executable, "experiments/gpu_check.py", "--cpu_smoke", f"--out={out}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert list(report["parts"]) == PARTS
    statuses = {k: v["status"] for k, v in report["parts"].items()}
    assert statuses == {k: "skipped" if k == "install" else "ok" for k in PARTS}, report
    for name in PARTS[2:7]:
        part = report["parts"][name]
        assert part["words_per_s"] > 0 and part["backend"] == "cpu", (name, part)
    assert "--xla_gpu_deterministic_ops=true" in report["parts"]["train/deterministic"]["xla_flags"]
    assert gpu_check.FTZ_ATOMICS in report["parts"]["train/ftz_atomics"]["xla_flags"]
    assert report["parts"]["analogy"]["analogy/total"] is not None
    assert report["parts"]["tests"]["passed"] >= 1
    summary = out.with_suffix(".txt").read_text().splitlines()
    assert summary == report["summary"] and len(summary) == 9
    assert done.stdout.strip().splitlines() == summary
