"""The learning-rate schedule of a whole run, as metrics.jsonl records it step by step.

word2vec's decay: every step's rate is ``alpha`` decayed linearly by the words processed
before it, so the rates never rise, the first is ``alpha``, and the schedule reaches
``min_alpha`` exactly as progress reaches 1.0 at the end of the last epoch (the last
step, like word2vec C's and gensim's, runs at the rate of the progress before it).
A fractional ``epochs`` (1.5) plans epochs × N tokens and ends part way through its last
pass, at the step that reaches them.
"""

import pathlib

import numpy as np
import pytest
from conftest import tiny_config

from w2v_jax import files, trainer
from w2v_jax.step import update


@pytest.mark.slow  # two whole runs with a metrics row per step
@pytest.mark.parametrize("mode", ["host", "device"])
@pytest.mark.parametrize("epochs", [2, 1.5])
def test_learning_rate_decays_to_min_alpha_as_progress_reaches_one(tmp_path, mode, epochs):
    # One row per step (steps_per_call 1): each row's lr is its step's.
    config = tiny_config(
        log_every=1, epochs=epochs, **{"input.mode": mode, "eval.heldout_batches": 1}
    )
    trainer.train_and_evaluate(config, str(tmp_path))
    rows = files.read_jsonl(pathlib.Path(tmp_path) / "metrics.jsonl")
    rows = [r for r in rows if "train/lr" in r]
    alpha, min_alpha = config.optimizer.alpha, config.optimizer.min_alpha
    lr = np.array([r["train/lr"] for r in rows])
    progress = np.array([r["train/progress"] for r in rows])  # after each step
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))  # every step logged
    assert len(rows) > 20

    assert lr[0] == np.float32(alpha)
    assert np.all(np.diff(lr) <= 0), lr
    assert np.all(np.diff(progress) > 0) and 0 < progress[0]
    if epochs == int(epochs):
        assert progress[-1] == 1.0
    else:  # the run ends at the first step whose tokens reach epochs × N
        assert progress[-2] < 1.0 <= progress[-1]
        final = files.read_jsonl(pathlib.Path(tmp_path) / "metrics.jsonl")[-1]
        assert final["train/tokens"] == pytest.approx(epochs * 6_000, abs=64)  # N = 6,000
    # Each step's rate is the decay at the progress before it ...
    before = np.concatenate([[0.0], progress[:-1]])
    np.testing.assert_array_equal(lr, update.learning_rate(alpha, min_alpha, before))
    # ... so the schedule ends at min_alpha: the last step is one step's decay above it.
    assert update.learning_rate(alpha, min_alpha, progress[-1]) == np.float32(min_alpha)
    last_share = progress[-1] - progress[-2]
    assert min_alpha < lr[-1] <= min_alpha + (alpha - min_alpha) * last_share * (1 + 1e-6)


@pytest.mark.slow  # three tiny runs
@pytest.mark.parametrize("mode", ["host", "device"])
def test_a_fractional_epoch_run_resumes_to_the_same_end_and_then_stays_finished(tmp_path, mode):
    """epochs=1.5 stopped at step 40 and resumed ends where the uninterrupted run ends (the
    same vectors); rerun once finished, it trains nothing more."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    config = tiny_config(epochs=1.5, **{"input.mode": mode})
    done = trainer.train_and_evaluate(config, str(whole))
    trainer.train_and_evaluate(
        tiny_config(epochs=1.5, max_steps=40, **{"input.mode": mode}), str(parts)
    )
    resumed = trainer.train_and_evaluate(config, str(parts))
    assert resumed["step"] == done["step"] and 40 < done["step"]
    assert (parts / "vectors.bin").read_bytes() == (whole / "vectors.bin").read_bytes()
    again = trainer.train_and_evaluate(config, str(parts))
    assert again["step"] == done["step"]
    assert (
        len(files.read_jsonl(parts / "metrics.jsonl"))
        == len(files.read_jsonl(whole / "metrics.jsonl")) + 1
    )  # the stop at step 40 wrote its row; the finished rerun wrote none
