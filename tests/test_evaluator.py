"""The trainer's Evaluator: held-out likelihood, self-normalisation and truth keys on tiny."""

import math

import jax
import numpy as np
import pytest
from conftest import tiny_config

from w2v_jax import evaluator, run_folder, settings, trainer
from w2v_jax.data import sources
from w2v_jax.evaluation import likelihood, truth_fit
from w2v_jax.model import output_layers
from w2v_jax.step import update

LIKELIHOOD_KEYS = {
    "eval/heldout_loss",
    "eval/heldout_nll",
    "eval/heldout_ppl",
    "eval/heldout_nll_unnormalised",
    "eval/log_z_mean",
    "eval/log_z_std",
    *(f"eval/log_z_q{q}" for q in ("05", "25", "50", "75", "95")),
}
TRUTH_KEYS = {"eval/kl_truth", "eval/corr_true_logp", "eval/corr_true_pmi"}


def _evaluator(config):
    """The Evaluator and freshly initialised host parameters (output vectors at zero)."""
    run = settings.resolve(config)
    cfg = run.step
    dataset = sources.load(run.corpus)
    aux = output_layers.constants_for(cfg.loss, dataset.train.vocab.counts, run.loop.ns_exponent)
    vocab_size = len(dataset.train.vocab)
    state = update.init_state(jax.random.PRNGKey(0), vocab_size, config.dim, cfg)
    evaluate = evaluator.Evaluator(dataset, run.evaluation, run.pipeline, cfg, aux)
    return evaluate, jax.device_get(state.params), dataset


def test_zero_output_vectors_give_uniform_predictions():
    """s = 0 everywhere: NLL = log Z = log V, ppl = V, KL = log V - H(W | C)."""
    evaluator, params, dataset = _evaluator(tiny_config())
    metrics = evaluator(params)
    assert LIKELIHOOD_KEYS | TRUTH_KEYS <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())
    v = len(dataset.train.vocab)
    assert metrics["eval/heldout_nll"] == pytest.approx(math.log(v), rel=1e-6)
    assert metrics["eval/heldout_ppl"] == pytest.approx(v, rel=1e-5)
    assert metrics["eval/heldout_nll_unnormalised"] == pytest.approx(0.0, abs=1e-6)
    for q in ("05", "50", "95"):
        assert metrics[f"eval/log_z_q{q}"] == pytest.approx(math.log(v), rel=1e-6)
    assert metrics["eval/log_z_std"] < 1e-5
    target = truth_fit.true_conditional(dataset.truth, model="skipgram", window=2)
    entropy = -np.sum(target.joint * target.log_cond)
    assert metrics["eval/kl_truth"] == pytest.approx(math.log(v) - entropy, rel=1e-6)


def test_random_parameters_agree_with_the_library():
    config = tiny_config(**{"loss.use_bias": True})
    evaluator, params, _ = _evaluator(config)
    rng = np.random.default_rng(0)
    params = {k: rng.normal(0, 0.5, x.shape).astype(np.float32) for k, x in params.items()}
    metrics = evaluator(params)
    assert LIKELIHOOD_KEYS | TRUTH_KEYS <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())
    direct = likelihood.heldout_nll(
        params, evaluator.batches, model="skipgram", loss_name="neg", chunk_size=7
    )
    assert metrics["eval/heldout_nll"] == pytest.approx(direct.nll, rel=1e-5)
    assert metrics["eval/log_z_q50"] == pytest.approx(direct.log_z_quantiles[2], rel=1e-5)
    assert metrics["eval/kl_truth"] > 0 and -1 <= metrics["eval/corr_true_pmi"] <= 1


def test_hs_has_log_z_zero():
    evaluator, params, _ = _evaluator(tiny_config(**{"loss.name": "hs"}))
    rng = np.random.default_rng(1)
    params = {k: rng.normal(0, 0.5, x.shape).astype(np.float32) for k, x in params.items()}
    metrics = evaluator(params)
    assert LIKELIHOOD_KEYS | TRUTH_KEYS <= set(metrics)
    assert metrics["eval/log_z_mean"] == metrics["eval/log_z_q95"] == 0.0
    # hs's training objective on held-out text is its exact NLL.
    assert metrics["eval/heldout_nll"] == pytest.approx(metrics["eval/heldout_loss"], rel=1e-5)
    assert metrics["eval/heldout_nll_unnormalised"] == metrics["eval/heldout_nll"]


def test_cbow_truth_keys():
    evaluator, params, _ = _evaluator(tiny_config(model="cbow"))
    metrics = evaluator(params)
    assert LIKELIHOOD_KEYS <= set(metrics) and not TRUTH_KEYS & set(metrics)
    assert np.isfinite(metrics["eval/kl_truth_heldout"]) and metrics["eval/kl_truth_heldout"] > 0
    one_left = tiny_config(model="cbow", left_only=True, window=1, dynamic_window=False)
    evaluator, params, _ = _evaluator(one_left)
    assert TRUTH_KEYS <= set(evaluator(params))


def test_no_heldout_text_means_no_likelihood_keys():
    evaluator, params, _ = _evaluator(tiny_config(**{"corpus.heldout": ""}))
    metrics = evaluator(params)
    assert not LIKELIHOOD_KEYS & set(metrics)
    assert TRUTH_KEYS <= set(metrics)  # the truth needs no held-out text


def test_train_and_evaluate_writes_the_new_keys(tmp_path):
    result = trainer.train_and_evaluate(tiny_config(**{"loss.name": "nce"}), str(tmp_path))
    final = run_folder.read_metrics(tmp_path)[-1]
    assert LIKELIHOOD_KEYS | TRUTH_KEYS <= set(final)
    assert all(np.isfinite(final[k]) for k in LIKELIHOOD_KEYS | TRUTH_KEYS)
    assert final["eval/heldout_nll"] == result["eval/heldout_nll"]
    assert final["eval/heldout_nll"] < math.log(
        len((tmp_path / "vocab.tsv").read_text().splitlines())
    )
