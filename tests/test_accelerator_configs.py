"""configs/gpu.py and configs/tpu.py resolve and train on a CPU at tiny sizes, and the host
work per call stays O(1) arrays: learning rates as one NumPy expression (bit for bit the
scalar schedule), one fetched array per metric per log row, the tables copied to the
device once per evaluation."""

import ast
import pathlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2v_jax import evaluator, run_folder, settings, trainer
from w2v_jax.configs import gpu, tiny, tpu
from w2v_jax.data import input_pipeline, sources
from w2v_jax.model import output_layers
from w2v_jax.run import host, record
from w2v_jax.step import update

CONFIGS = {"gpu": gpu, "tpu": tpu}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_resolves_to_large_on_device_steps(name):
    run = settings.resolve(CONFIGS[name].get_config())
    assert run.loop.input_mode == "device" and run.parallel.mode == "single"
    assert run.parallel.steps_per_call == 32
    assert run.pipeline.rows_per_call == 32 * 16_384


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_override_is_commented(name):
    """Each ``config.x = ...`` in get_config has a comment on its line or just above it."""
    path = pathlib.Path(CONFIGS[name].__file__)
    lines = path.read_text().splitlines()
    (fn,) = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)]
    assigns = [n for n in fn.body if isinstance(n, ast.Assign)]
    # tpu.py is gpu.py's fields unchanged (its comments say what differs on a TPU)
    assert len(assigns) >= 5 or (name == "tpu" and "return gpu.get_config()" in lines[-1])
    for node in assigns:
        here, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
        assert "#" in here or above.startswith("#") or above.startswith("config."), here
    assert "not yet run on a" in CONFIGS[name].__doc__


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_trains_a_few_calls_on_a_shrunken_corpus(name, tmp_path):
    """The config's own step layout (32 steps per call, on-device input) at tiny sizes;
    a log row falls between calls, so pending calls are joined and checked."""
    config, small = CONFIGS[name].get_config(), tiny.get_config()
    config.corpus, config.synthetic = small.corpus, small.synthetic
    config.dim, config.window, config.sample = 8, 2, 0.0
    config.batch_size = 32  # 32 steps x 32 rows per call; ~90 steps per epoch
    config.epochs, config.max_steps, config.log_every = 1, 64, 40
    config.eval.heldout_batches = 2
    config.prefetch = 0
    final = trainer.train_and_evaluate(config, str(tmp_path))
    assert final["step"] == 64
    rows = run_folder.read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [64, 64]  # the log row (40 crossed) and the final row
    assert np.isfinite(rows[0]["train/loss"]) and np.isfinite(final["eval/heldout_loss"])


# ---- per-call host work ------------------------------------------------------------------


def _fake_run(alpha=0.3, min_alpha=1e-4, tokens_done=0, planned=1_000_003):
    loop = types.SimpleNamespace(alpha=alpha, min_alpha=min_alpha)
    return types.SimpleNamespace(
        settings=types.SimpleNamespace(loop=loop),
        at=host.Stand(0, None, tokens_done),
        planned=planned,
    )


def test_learning_rates_equal_the_scalar_schedule_bit_for_bit():
    rng = np.random.default_rng(0)
    for _ in range(200):
        planned = int(rng.integers(1, 10**9))
        done = int(rng.integers(0, planned + planned // 10))  # past the end too
        tokens = done + int(rng.integers(0, 10**6))
        n = int(rng.integers(1, 65))
        alpha, min_alpha = float(rng.uniform(0.001, 1.0)), float(rng.uniform(0, 1e-3))
        run = _fake_run(alpha, min_alpha, done, planned)
        item = input_pipeline.Item(None, None, tokens)
        got = host.Run.learning_rates(run, item, n)
        fractions = (np.arange(n) / n) * (tokens - done)
        want = [update.learning_rate(alpha, min_alpha, (done + f) / planned) for f in fractions]
        assert got.dtype == np.float32 and got.shape == (n,)
        np.testing.assert_array_equal(got.view(np.int32), np.asarray(want).view(np.int32))


def _reference_flush(pending, step, guard):
    """The per-array flush this replaced: every step checked, means of per-step means."""
    rows = []
    for metrics, n, index in pending:
        metrics = jax.device_get(metrics)
        if index is not None:
            metrics = {k: v[index] for k, v in metrics.items()}
        rows += [{k: v[i] for k, v in metrics.items()} for i in range(n)]
    first = step - len(rows)
    for i, m in enumerate(rows):
        problem = guard.problem(bool(np.all(m["finite"])), float(np.max(m["loss"])))
        if problem:
            raise record.NonFiniteLossError(f"loss became {problem} at step {first + i + 1}")
    keys = [k for k in rows[0] if k != "finite"]
    return {k: float(np.mean([np.mean(r[k]) for r in rows])) for k in keys}


def _calls(losses, sizes, group=None):
    """Pending calls as a runner returns them: metrics [S] (or [G, S] with ``group``)."""
    out, start = [], 0
    for size in sizes:
        loss = jnp.asarray(losses[start : start + size], jnp.float32)
        start += size
        metrics = {
            "examples": jnp.full_like(loss, 7.0),
            "finite": jnp.isfinite(loss),
            "loss": loss,
            "lr": jnp.linspace(0.3, 0.2, size, dtype=jnp.float32),
        }
        if group is not None:  # point groups: G runs in one program, this one at `group`
            metrics = {
                k: jnp.stack([v, v, v] if v.dtype == bool else [v + 1, v, v - 1])
                for k, v in metrics.items()
            }
        out.append(metrics)
    return out


def _flush_both(losses, sizes, ns=None, group=None, max_loss=5.0):
    ns = ns or sizes
    calls = _calls(losses, sizes, group)
    pending = [(m, n, group) for m, n in zip(calls, ns, strict=True)]
    results = []
    for impl in ("new", "reference"):
        guard = record.LossGuard(max_loss)
        step = 100 + sum(ns)
        metrics = record.Record(guard, pending=list(pending))
        try:
            if impl == "new":
                out = metrics.flush(step, "ckpt")
                assert metrics.pending == []
            else:
                out = _reference_flush(pending, step, guard)
        except record.NonFiniteLossError as e:
            out = str(e).split(";")[0]
        results.append((out, guard.initial))
    return results


@pytest.mark.parametrize(
    "losses, sizes, ns",
    [
        (np.linspace(3.0, 2.0, 40), [8, 8, 8, 8, 8], None),
        (np.linspace(3.0, 2.0, 40), [32, 8], [32, 5]),  # a call's metrics longer than n
        (np.r_[np.full(20, 3.0), np.nan, np.full(19, 2.0)], [8] * 5, None),
        (np.r_[np.full(20, 3.0), np.inf, np.full(19, 2.0)], [10] * 4, None),
        (np.r_[np.full(11, 3.0), 8.5, np.full(28, 2.0)], [8] * 5, None),  # diverged
        (np.r_[np.full(11, 3.0), 8.0, np.full(28, 2.0)], [8] * 5, None),  # at the limit
        (np.r_[np.nan, np.full(39, 2.0)], [8] * 5, None),  # the very first step
    ],
)
@pytest.mark.parametrize("group", [None, 1])
def test_flush_checks_every_step_and_logs_the_same_means(losses, sizes, ns, group):
    new, reference = _flush_both(losses, sizes, ns, group)
    assert new == reference


def test_flush_fetches_every_pending_call_at_once(monkeypatch):
    calls = _calls(np.linspace(3.0, 2.0, 64), [4] * 16)
    fetched = []
    real = jax.device_get
    monkeypatch.setattr(
        jax, "device_get", lambda x: fetched.append(len(jax.tree_util.tree_leaves(x))) or real(x)
    )
    metrics = record.Record(record.LossGuard(5.0), pending=[(m, 4, None) for m in calls])
    metrics.flush(64, "ckpt")
    assert fetched == [4 * 16]  # one device_get: every call's 4 metrics copied together
    assert metrics.flush(64, "ckpt") == {}  # nothing pending: nothing fetched
    assert fetched == [4 * 16]


def test_evaluator_puts_the_tables_on_the_device_once(monkeypatch):
    config = tiny.get_config()
    run = settings.resolve(config)
    dataset = sources.load(run.corpus)
    cfg = run.step
    aux = output_layers.constants_for(cfg.loss, dataset.train.vocab.counts, run.loop.ns_exponent)
    state = update.init_state(jax.random.PRNGKey(0), len(dataset.train.vocab), config.dim, cfg)
    evaluate = evaluator.Evaluator(dataset, run.evaluation, run.pipeline, cfg, aux)
    assert len(evaluate.batches) > 1
    seen = []
    loss_fn = evaluate.loss_fn

    def spy(params, batch, aux, key):
        seen.append(params)
        return loss_fn(params, batch, aux, key)

    evaluate.loss_fn = spy
    host = jax.device_get(state.params)
    metrics = evaluate(host)
    assert np.isfinite(metrics["eval/heldout_loss"])
    assert len(seen) == len(evaluate.batches)
    tables = [p["in_embed"] for p in seen]
    assert all(isinstance(t, jax.Array) and t is tables[0] for t in tables)  # one copy
