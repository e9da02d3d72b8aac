"""Precision and determinism as settings: config.matmul_precision sets the training step's
matmuls only, evaluation and the analyses trace every matmul at float32 whatever the
global default, and config.deterministic reaches XLA_FLAGS before the backend starts.

On XLA:CPU the precision changes nothing numerically (the optimised program is the same);
these tests read the precision from the lowered StableHLO, which every backend compiles.
"""

import functools
import os
import re
import subprocess
import sys
import textwrap

import jax
import ml_collections
import numpy as np
import pytest

from w2v_jax import evaluator, settings
from w2v_jax.analysis import gradient_bias
from w2v_jax.configs import default
from w2v_jax.data import input_pipeline, sources
from w2v_jax.evaluation import analogy, likelihood
from w2v_jax.model import output_layers, word2vec
from w2v_jax.parallel import distributed
from w2v_jax.step import update

V, D, B, C = 30, 8, 6, 4


def _precisions(lowered) -> list[str]:
    """The operand precision of every dot_general in a lowered program ("none" if unset)."""
    lines = [line for line in lowered.as_text().splitlines() if "dot_general" in line]
    found = [re.search(r"precision = \[(\w+), (\w+)\]", line) for line in lines]
    return [m.group(1) if m and m.group(1) == m.group(2) else "none" for m in found]


def _assert_all(lowered, want: str) -> None:
    got = _precisions(lowered)
    assert got and set(got) == {want}, got


@functools.cache
def _setup(loss: str = "neg"):
    rng = np.random.default_rng(0)
    counts = np.sort(rng.integers(1, 100, V))[::-1].astype(np.int64)
    aux = output_layers.constants_for(loss, counts)
    params = word2vec.init_params(jax.random.PRNGKey(0), V, D, loss, use_bias=loss != "hs")
    params = {k: v + 0.1 for k, v in params.items()}
    mask = (rng.random((B, C)) < 0.8).astype(np.float32)
    batch = input_pipeline.Batch(
        rng.integers(0, V, B).astype(np.int32), rng.integers(0, V, (B, C)).astype(np.int32), mask
    )
    return params, batch, aux


@pytest.fixture
def bf16_default():
    """The global default a TPU effectively has: one bf16 pass per f32 matmul."""
    with jax.default_matmul_precision("bfloat16"):
        yield


# ---- evaluation and the analyses: float32 whatever the global default ----------------


@pytest.mark.parametrize("model", ["skipgram", "cbow"])
def test_heldout_likelihood_traces_at_float32(bf16_default, model):
    params, batch, _ = _setup()
    _assert_all(likelihood.word_log_z.lower(params, chunk_size=8), "HIGHEST")
    lowered = likelihood.example_terms.lower(
        params, batch, None, None, model=model, loss_name="neg", cbow_mean=True, chunk_size=8
    )
    _assert_all(lowered, "HIGHEST")


def test_hs_likelihood_and_lbl_inputs_trace_at_float32(bf16_default):
    params, batch, aux = _setup("hs")
    tree = (aux.codes, aux.points, aux.path_mask)
    lowered = likelihood.example_terms.lower(
        params, batch, tree, None, model="cbow", loss_name="hs", cbow_mean=True, chunk_size=8
    )
    _assert_all(lowered, "HIGHEST")
    lbl = {**params, "ctx_matrices": word2vec.context_matrices(C, D, "full")}
    examples = jax.jit(functools.partial(likelihood.batch_examples, model="lbl"))
    _assert_all(examples.lower(lbl, batch), "HIGHEST")


def test_evaluator_heldout_loss_traces_at_float32_whatever_training_uses(bf16_default):
    params, batch, aux = _setup()
    cfg = update.StepConfig(loss="neg", k=3, share="row", matmul_precision="bfloat16")
    data = sources.Data(None, None, None, word_benchmarks=False)
    evaluate = evaluator.Evaluator(data, evaluator.EvalOptions("", (), 1, 1), None, cfg, aux)
    _assert_all(evaluate.loss_fn.lower(params, batch, aux, jax.random.PRNGKey(0)), "HIGHEST")


def test_gradient_bias_and_analogy_trace_at_float32(bf16_default):
    params, _, aux = _setup()
    inputs, out, bias = params["in_embed"][:5], params["out_embed"], params["out_bias"]
    labels = np.arange(5, dtype=np.int32)
    exact = gradient_bias.exact_gradient.lower(inputs, out, bias, labels, use_bias=True)
    _assert_all(exact, "HIGHEST")
    samples = np.zeros((2, 5, 3), np.int32)
    moments = gradient_bias._moments.lower(
        samples, inputs, out, bias, labels, aux.log_q, np.zeros(5 * D + V * D + V, np.float32),
        name="neg", k=3, use_bias=True, remove_accidental_hits=True,
    )  # fmt: skip
    _assert_all(moments, "HIGHEST")
    _assert_all(analogy._cosines.lower(out, np.arange(4, dtype=np.int32)), "HIGHEST")


# ---- training: config.matmul_precision --------------------------------------------------


@pytest.mark.parametrize(
    "setting, want", [("float32", "HIGHEST"), ("tensorfloat32", "HIGH"), ("bfloat16", "DEFAULT")]
)
def test_train_step_uses_the_configured_precision(bf16_default, setting, want):
    params, batch, aux = _setup()
    cfg = update.StepConfig(loss="neg", k=3, optimizer="adagrad", matmul_precision=setting)
    state = update.init_state(jax.random.PRNGKey(0), V, D, cfg)
    step = jax.jit(functools.partial(update.train_step, cfg=cfg))
    _assert_all(step.lower(state, batch, aux, np.float32(0.1)), want)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a statement about XLA:CPU")
def test_precision_does_not_change_the_cpu_program():
    """XLA:CPU ignores operand precision: float32 and the default compile to the same
    optimised program (so no CPU result or timing moves)."""
    _, batch, aux = _setup()
    programs = []
    for setting in ("float32", "default"):
        cfg = update.StepConfig(loss="neg", k=3, share="row", matmul_precision=setting)
        state = update.init_state(jax.random.PRNGKey(0), V, D, cfg)
        step = jax.jit(functools.partial(update.train_step, cfg=cfg))
        text = step.lower(state, batch, aux, np.float32(0.1)).compile().as_text()
        text = re.sub(r",? ?operand_precision=\{[a-z,]+\}", "", text)
        programs.append(re.sub(r"(HloModule \S+|metadata=\{[^}]*\})", "", text))
    assert programs[0] == programs[1]


def test_settings_pass_and_check_the_fields():
    config = default.get_config()
    assert settings.step_config(config).matmul_precision == "float32"
    config.matmul_precision = "tensorfloat32"
    assert settings.step_config(config).matmul_precision == "tensorfloat32"
    config.matmul_precision = "tf32"
    with pytest.raises(ValueError, match=r"config.matmul_precision='tf32' is not allowed"):
        settings.validate(config)
    config = ml_collections.ConfigDict(default.get_config().to_dict(), type_safe=False)
    config.deterministic = 1  # a ConfigDict built from a dict (a sweep's) is not type-safe
    with pytest.raises(ValueError, match="config.deterministic=1 must be True or False"):
        settings.validate(config)
    with pytest.raises(ValueError, match="config.deterministic=1 must be True or False"):
        distributed.options(config)


# ---- config.deterministic: XLA_FLAGS before the backend starts ----------------------------


def _fresh_process(code: str, xla_flags: str | None) -> str:
    """Runs ``code`` in a new Python (no backend yet); returns its stdout."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_deterministic_sets_the_flag_before_jax_starts():
    """Through distributed.initialize, as train_and_evaluate starts: the flag is added
    (a `=false` replaced, other flags kept) and the jaxlib accepts it (an unknown flag in
    XLA_FLAGS aborts the process when the backend starts)."""
    code = """
        import os, jax, jax.numpy as jnp
        from w2v_jax.parallel import distributed
        from w2v_jax.configs import default
        config = default.get_config()
        config.deterministic = True
        distributed.initialize(distributed.options(config))
        print(os.environ["XLA_FLAGS"])
        print(float(jnp.ones(3).sum()), jax.device_count())
    """
    out = _fresh_process(code, None).splitlines()
    assert out == ["--xla_gpu_deterministic_ops=true", "3.0 1"]
    flags = "--xla_gpu_deterministic_ops=false --xla_force_host_platform_device_count=2"
    out = _fresh_process(code, flags).splitlines()
    assert out == [
        "--xla_force_host_platform_device_count=2 --xla_gpu_deterministic_ops=true",
        "3.0 2",
    ]


def test_local_devices_without_a_coordinator_simulates_them():
    """``parallel.local_devices`` in one process (no coordinator) gives that many CPU
    devices, as it does per process in a multi-process run; it was silently ignored."""
    code = """
        import jax
        from w2v_jax.parallel import distributed
        from w2v_jax.configs import default
        config = default.get_config()
        config.parallel.local_devices = 3
        distributed.initialize(distributed.options(config))
        print(jax.device_count())
    """
    assert _fresh_process(code, None).split() == ["3"]


def test_local_devices_after_the_backend_started():
    """Too late to change the count: the same count passes, another is one line."""
    from w2v_jax import errors

    n = jax.local_device_count()
    distributed.simulate_cpu_devices(n)
    with pytest.raises(errors.ConfigError, match=f"local_devices={n + 1} but JAX already"):
        distributed.simulate_cpu_devices(n + 1)


def test_deterministic_false_leaves_xla_flags_alone(monkeypatch):
    for flags in ("", "--xla_gpu_deterministic_ops=false", "--xla_gpu_deterministic_ops"):
        monkeypatch.setenv("XLA_FLAGS", flags)
        distributed.set_deterministic(False)
        assert os.environ["XLA_FLAGS"] == flags


def test_deterministic_after_the_backend_started(monkeypatch):
    """This process's backend has started: on CPU (deterministic already) nothing to do;
    on a GPU without the flag, one line saying how to set it."""
    jax.devices()
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    distributed.set_deterministic(True)
    assert os.environ["XLA_FLAGS"] == ""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with pytest.raises(ValueError, match="XLA_FLAGS=--xla_gpu_deterministic_ops=true before"):
        distributed.set_deterministic(True)
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=true")
    distributed.set_deterministic(True)  # started with the flag: fine
