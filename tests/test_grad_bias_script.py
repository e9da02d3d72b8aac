"""experiments/grad_bias.py on two tiny trained states: rows, table and plot."""

import json
import pathlib
import subprocess
import sys

import pytest
from conftest import tiny_config

from w2v_jax import trainer

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gradient_bias_of_two_trained_states(tmp_path):
    # The two states are trained here, not by two `w2v_jax.main` processes: the script
    # reads any finished run folder, and each process would start JAX again.
    for loss in ("softmax", "nce"):
        trainer.train_and_evaluate(tiny_config(**{"loss.name": loss}), str(tmp_path / loss))
    out = tmp_path / "bias"
    proc = subprocess.run(
        [
            sys.executable,
            "experiments/grad_bias.py",
            f"--run_dirs={tmp_path / 'softmax'},{tmp_path / 'nce'}",
            f"--out_dir={out}",
            "--ks=1,4,64",
            "--draws=64",
            "--batches=2",
            "--accidental_hits=keep",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    rows = json.loads((out / "gradient_bias.json").read_text())
    assert len(rows) == 2 * 3 * 3 * 2  # states x losses x ks x batches
    assert {r["state"] for r in rows} == {"trained with softmax", "trained with nce k=5"}
    for r in rows:
        assert -1.0 <= r["cosine"] <= 1.0 and r["rel_variance"] >= 0.0 and r["examples"] > 0

    def cosine(loss, k):
        return min(r["cosine"] for r in rows if r["loss"] == loss and r["k"] == k)

    # Sampled softmax (accidental hits kept) is consistent: at k=64 of the 60-word
    # vocabulary its mean gradient is the softmax's, and closer than at k=1.
    assert cosine("sampled_softmax", 64) > 0.99 > cosine("sampled_softmax", 1)
    # NCE's limit is the softmax gradient only where log Z = 0 (the NCE-trained state);
    # negative sampling's noise term grows with k, away from the softmax direction.
    nce_state = [r for r in rows if r["state"] == "trained with nce k=5"]
    assert abs(nce_state[0]["log_z_mean"]) < 0.5
    assert min(r["cosine"] for r in nce_state if r["loss"] == "nce" and r["k"] == 64) > 0.99
    assert max(r["cosine"] for r in rows if r["loss"] == "neg" and r["k"] == 64) < 0.9
    assert (out / "gradient_bias.png").read_bytes()[:4] == b"\x89PNG"
    assert proc.stdout.count("| trained with") == 2 * 3 * 3
