"""experiments/pmi_shift.py on a tiny sweep: one fit per neg/NCE point, table and JSON."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_pmi_shift_of_a_tiny_sweep(tmp_path):
    sweep = [
        sys.executable,
        "experiments/sweep_k.py",
        "--config=w2v_jax/configs/tiny.py",
        f"--workdir={tmp_path}",
        "--points=neg:2,nce:2,softmax",
        "--seeds=0",
        "--noplots",
    ]
    subprocess.run(sweep, cwd=ROOT, check=True, capture_output=True, timeout=600)
    proc = subprocess.run(
        [sys.executable, "experiments/pmi_shift.py", f"--sweep_dir={tmp_path}", "--min_count=2"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    rows = json.loads((tmp_path / "pmi_shift.json").read_text())
    assert sorted((r["loss"], r["k"]) for r in rows) == [("nce", 2), ("neg", 2)]
    for row in rows:
        assert row["pairs"] >= 2 and -1.0 <= row["pmi"]["pearson"] <= 1.0
        assert row["minus_log_k"] == pytest.approx(-0.6931, abs=1e-4)
    table = [
        line
        for line in proc.stdout.splitlines()
        if line.startswith("| ne") or line.startswith("| nc")
    ]
    assert len(table) == 2
    assert (tmp_path / "pmi_shift.png").read_bytes()[:4] == b"\x89PNG"
