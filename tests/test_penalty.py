"""The sixth output layer, softmax_penalty: the softmax NLL plus α (Z − 1 − log Z).

Naive float64 references, the exact reduction to the softmax at α = 0, gradients (finite
differences and the closed form in score space), the registry and config checks, the sweep,
and a tiny end-to-end run under the word2vec and the default optimisers.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import EXACTNESS, assert_same, tiny_config
from jax import test_util as jtu

from w2v_jax import settings, trainer
from w2v_jax.analysis import style, sweep
from w2v_jax.configs import default
from w2v_jax.model import losses, output_layers
from w2v_jax.model.losses import terms

B, V, D = 5, 23, 4  # 23 is prime: chunk sizes 4 and 5 leave a padded block


def _problem(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return (
        (scale * rng.normal(size=(B, D))).astype(np.float32),  # inputs [B, D]
        (scale * rng.normal(size=(V, D))).astype(np.float32),  # weights [V, D]
        rng.integers(0, V, size=B).astype(np.int32),  # labels [B]
        rng.normal(size=V).astype(np.float32),  # biases [V]
    )


def _reference(inputs, weights, labels, biases, penalty):
    """float64 loops: log Z - s(w) + α (Z - 1 - log Z)."""
    out = []
    for h, w in zip(inputs.astype(np.float64), labels, strict=True):
        s = np.array([weights[v].astype(np.float64) @ h + biases[v] for v in range(V)])
        z = np.exp(s).sum()
        out.append(math.log(z) - s[w] + penalty * (z - 1.0 - math.log(z)))
    return np.array(out)


@pytest.mark.parametrize("chunk_size", [None, 4, 5, 100])
@pytest.mark.parametrize("penalty", [0.0, 0.5, 1.0, 3.0])
def test_matches_float64_reference(penalty, chunk_size):
    x, w, y, b = _problem()
    fn = jax.jit(
        functools.partial(losses.softmax_penalty_loss, penalty=penalty, chunk_size=chunk_size)
    )
    got = fn(x, w, y, b)
    assert got.shape == (B,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, _reference(x, w, y, b, penalty), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("exact", EXACTNESS)
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_zero_penalty_is_the_softmax_exactly(chunk_size, exact):
    """Two programs, the same arithmetic: bit for bit on XLA:CPU (`EXACTNESS`)."""
    x, w, y, b = _problem()

    def total(fn, *xwb):
        return jnp.sum(fn(xwb[0], xwb[1], y, xwb[2], chunk_size=chunk_size))

    grad = jax.value_and_grad(total, argnums=(1, 2, 3))
    penalised = functools.partial(losses.softmax_penalty_loss, penalty=0.0)
    want_loss, want_grads = grad(losses.softmax_loss, x, w, b)
    got_loss, got_grads = grad(penalised, x, w, b)
    tolerance = dict(rtol=1e-6, atol=1e-7)
    assert_same(got_loss, want_loss, exact, **tolerance)
    for got, want in zip(got_grads, want_grads, strict=True):
        assert_same(got, want, exact, **tolerance)
    assert_same(
        penalised(x, w, y, b, chunk_size=chunk_size),
        losses.softmax_loss(x, w, y, b, chunk_size=chunk_size),
        exact,
        **tolerance,
    )


def test_penalty_is_zero_at_z_one_and_positive_elsewhere():
    log_z = jnp.array([-3.0, -1e-3, 0.0, 1e-3, 2.0])
    got = terms.normaliser_penalty(log_z)
    z = np.exp(np.asarray(log_z, np.float64))
    np.testing.assert_allclose(got, z - 1 - np.log(z), rtol=1e-4, atol=1e-9)
    assert got[2] == 0.0 and (np.delete(np.asarray(got), 2) > 0).all()
    # A self-normalised model (Z = 1 for every input) pays no penalty at any α.
    x, w, y, _ = _problem()
    x1, y1 = x[:1], y[:1]  # one input, its Z made 1 by a constant bias
    biases = jnp.full((V,), -jax.nn.logsumexp(jnp.asarray(w) @ jnp.asarray(x1[0])))
    np.testing.assert_allclose(
        losses.softmax_penalty_loss(x1, w, y1, biases, penalty=5.0),
        losses.softmax_loss(x1, w, y1, biases),
        rtol=1e-5,
    )


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_gradients_match_finite_differences(chunk_size):
    x, w, y, b = _problem(scale=0.5)
    with jax.enable_x64(True):
        fn = functools.partial(
            losses.softmax_penalty_loss, labels=y, penalty=0.7, chunk_size=chunk_size
        )
        args = [jnp.asarray(a, jnp.float64) for a in (x, w, b)]
        jtu.check_grads(
            lambda x, w, b: fn(x, w, biases=b), args, order=1, modes=("fwd", "rev"),
            atol=1e-6, rtol=1e-6,
        )  # fmt: skip


def test_score_gradient_is_softmax_plus_alpha_times_exp_s_minus_p():
    """∂ℓ/∂s = p − e_w + α (e^s − p): the penalty pushes every e^{s_v} towards p_v."""
    rng = np.random.default_rng(1)
    s, label, alpha = rng.normal(size=V).astype(np.float32), 7, 0.8

    def loss(scores):  # scores as biases of a zero-input model
        return losses.softmax_penalty_loss(
            jnp.zeros((1, 1)), jnp.zeros((V, 1)), jnp.array([label]), scores, penalty=alpha
        )[0]

    p = np.exp(s) / np.exp(s).sum()
    want = p - np.eye(V)[label] + alpha * (np.exp(s) - p)
    np.testing.assert_allclose(jax.grad(loss)(jnp.asarray(s)), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("penalty", [-0.1, float("nan"), float("inf"), True, jnp.array(1.0)])
def test_bad_penalty_is_refused_at_trace_time(penalty):
    x, w, y, b = _problem()
    with pytest.raises(ValueError, match="softmax_penalty_loss: penalty must be a finite"):
        losses.softmax_penalty_loss(x, w, y, b, penalty=penalty)


def test_registry_entry_trains_like_the_softmax():
    layer = output_layers.get("softmax_penalty")
    softmax = output_layers.get("softmax")
    assert layer.loss is losses.softmax_penalty_loss and layer.penalised
    for field in ("table", "sampled", "tree", "binary", "correction", "biases"):
        assert getattr(layer, field) == getattr(softmax, field), field
    assert "softmax_penalty" in sweep.REFERENCE_LOSSES  # no k: one point per seed
    x, w, y, b = _problem()
    np.testing.assert_allclose(
        layer.per_example(x, w, y, bias=b, penalty=2.0, chunk_size=4),
        losses.softmax_penalty_loss(x, w, y, b, penalty=2.0),
        rtol=1e-6,
    )


def test_sweep_points_and_colours():
    points = sweep.make_points(["softmax_penalty", "nce"], ks=[1, 5], seeds=[0])
    assert [p.name for p in points] == ["softmax_penalty_s0", "nce_k1_s0", "nce_k5_s0"]
    assert sweep.parse_points(["softmax_penalty"], [1]) == [sweep.Point("softmax_penalty", None, 1)]
    assert style.LOSS_COLORS["softmax_penalty"] not in {
        c for n, c in style.LOSS_COLORS.items() if n != "softmax_penalty"
    }


_config = functools.partial(tiny_config, **{"loss.name": "softmax_penalty"})


@pytest.mark.parametrize(
    "value,message",
    [
        (-0.5, r"^--config.loss.penalty=-0.5 must be a finite number >= 0 .*penalty=1.0$"),
        (float("inf"), r"^--config.loss.penalty=inf must be a finite number >= 0"),
    ],
)
def test_bad_penalty_in_the_config_is_one_line(value, message):
    config = _config(**{"loss.penalty": value})
    with pytest.raises(ValueError, match=message) as info:
        settings.resolve(config)
    assert "\n" not in str(info.value)


def test_other_layers_ignore_a_valid_penalty_but_not_a_negative_one():
    settings.resolve(_config(**{"loss.name": "nce", "loss.penalty": 3.0}))
    with pytest.raises(ValueError, match="config.loss.penalty=-1.0"):
        settings.resolve(_config(**{"loss.name": "nce", "loss.penalty": -1.0}))


def _trained(tmp_path, name, config):
    final = trainer.train_and_evaluate(config, str(tmp_path / name))
    vocab_size = len((tmp_path / name / "vocab.tsv").read_text().splitlines())
    return final, vocab_size


def test_tiny_run_learns_and_self_normalises(tmp_path):
    """word2vec's SGD on the tiny corpus: softmax_penalty learns as well as the softmax
    (held-out NLL well below log V), and its log Z sits near 0 where the softmax's does
    not; the held-out NLL is the plain softmax's, not the penalised objective.

    At word2vec's α = 0.025 the penalty diverges here within 4 steps (its gradient grows
    as e^s, unbounded, where NCE's sigmoid saturates); α = 0.01 trains both layers."""
    lower = {"epochs": 4, "optimizer.alpha": 0.01}
    final, vocab_size = _trained(tmp_path, "penalty", _config(**lower))
    plain, _ = _trained(tmp_path, "softmax", _config(**lower, **{"loss.name": "softmax"}))
    assert final["eval/heldout_nll"] < math.log(vocab_size) - 0.5, final
    assert final["eval/heldout_nll"] < plain["eval/heldout_nll"] + 0.1
    assert abs(final["eval/log_z_mean"]) < 0.3 < abs(plain["eval/log_z_mean"]), (final, plain)
    # The penalised objective on held-out data exceeds the NLL by the mean penalty > 0.
    assert final["eval/heldout_loss"] > final["eval/heldout_nll"]


def test_trains_under_the_default_optimiser(tmp_path):
    """Sparse AdaGrad with on-device input, as the other layers (dense output gradient)."""
    base = default.get_config()
    config = _config(batch_size=32, epochs=3)
    config.optimizer = base.optimizer
    config.loss.share, config.loss.skipgram_input = base.loss.share, base.loss.skipgram_input
    config.input.mode = base.input.mode
    final, vocab_size = _trained(tmp_path, "adagrad", config)
    assert final["eval/heldout_nll"] < math.log(vocab_size) - 0.5, final
    assert np.isfinite(final["eval/log_z_std"])


def test_ranking_nce_figure_draws_a_column_per_setting():
    from w2v_jax.analysis import figures

    rows = [
        {"setting": s, "loss": loss, "k": k, "kl_truth": 0.1 + i, "log_z_std": 0.2}
        for s in ("a", "b")
        for i, (loss, k) in enumerate(
            [("softmax", None), ("softmax_penalty", None), ("nce", 1), ("nce", 5)]
            + [("sampled_softmax", 1), ("sampled_softmax", 5)]
        )
    ]
    fig = figures.ranking_nce_figure(rows, {"a": "setting a"})
    axes = fig.axes
    assert len(axes) == 4 and axes[0].get_title() == "setting a"
    labels = axes[0].get_legend_handles_labels()[1]
    assert labels == ["softmax", "softmax_penalty", "nce", "sampled_softmax"]


def test_the_configured_weight_reaches_the_step():
    """settings -> StepConfig.penalty -> the loss: weight 0 is the softmax's loss exactly,
    and a larger weight adds the larger penalty on the same batch."""
    from w2v_jax.data import input_pipeline
    from w2v_jax.step import update

    rng = np.random.default_rng(0)
    batch = input_pipeline.Batch(
        rng.integers(0, 20, 8).astype(np.int32),
        rng.integers(0, 20, (8, 4)).astype(np.int32),
        np.ones((8, 4), np.float32),
    )
    losses = {}
    for name, weight in (("softmax", 1.0), ("softmax_penalty", 0.0), ("softmax_penalty", 2.0)):
        cfg = settings.resolve(_config(**{"loss.name": name, "loss.penalty": weight})).step
        assert cfg.penalty == weight
        state = update.init_state(jax.random.PRNGKey(0), 20, 6, cfg)
        params = {k: v + 0.3 * jax.random.normal(jax.random.PRNGKey(1), v.shape)
                  for k, v in state.params.items()}  # fmt: skip
        total, _ = update.eval_loss(params, batch, None, jax.random.PRNGKey(0), cfg=cfg)
        losses[(name, weight)] = float(total)
    assert losses[("softmax_penalty", 0.0)] == pytest.approx(losses[("softmax", 1.0)], rel=1e-6)
    assert losses[("softmax_penalty", 2.0)] > losses[("softmax", 1.0)] + 1e-3
