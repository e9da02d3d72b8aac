"""End to end: train_and_evaluate on the tiny config, resume, determinism, guards."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import cpu_bitwise, tiny_config

from w2v_jax import run_folder, trainer
from w2v_jax.checkpoint import store
from w2v_jax.evaluation import keyed_vectors
from w2v_jax.run import record

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _vectors(workdir):
    return keyed_vectors.load_word2vec(pathlib.Path(workdir) / "vectors.bin")


def test_tiny_run_writes_every_output(tmp_path):
    result = trainer.train_and_evaluate(tiny_config(), str(tmp_path))
    for name in ("config.json", "metrics.jsonl", "vectors.txt", "vectors.bin", "vocab.tsv"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "config.json").read_text())["loss"]["name"] == "neg"
    rows = run_folder.read_metrics(tmp_path)
    logged = [r for r in rows if "train/loss" in r]
    assert logged and all(np.isfinite(r["train/loss"]) for r in logged)
    assert {"train/lr", "train/words_per_s", "train/grad_norm_in"} <= set(logged[0])
    assert logged[-1]["train/loss"] < logged[0]["train/loss"]
    assert "eval/heldout_loss" in rows[-1] and result["step"] == rows[-1]["step"]
    # The exported vectors are the input table, readable in both word2vec formats.
    binary, text = _vectors(tmp_path), keyed_vectors.load_word2vec(tmp_path / "vectors.txt")
    assert binary.words == text.words
    np.testing.assert_allclose(binary.vectors, text.vectors, rtol=1e-5, atol=1e-6)
    state, meta = store.load(store.folder_in(tmp_path), _template(tmp_path))
    np.testing.assert_array_equal(binary.vectors, state.params["in_embed"])
    vocab_lines = (tmp_path / "vocab.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in vocab_lines] == list(binary.words)


def _template(workdir):
    """A state shaped like the tiny run's, to read its checkpoint back."""
    import jax

    from w2v_jax import settings
    from w2v_jax.step import update

    config = tiny_config()
    vocab_size = len((pathlib.Path(workdir) / "vocab.tsv").read_text().splitlines())
    cfg = settings.step_config(config)
    return jax.device_get(update.init_state(jax.random.PRNGKey(0), vocab_size, config.dim, cfg))


# Reruns and resume: trained once per module; each equality is asserted bit for bit (an
# XLA:CPU property: `cpu_bitwise`) and, by its twin, to RERUN_TOLERANCE on any backend.
# Only the order of float32 additions may differ there (scatter-adds of duplicate rows,
# reductions), ~1 ulp per step, far below the tolerance over the tiny run's steps.
RERUN_TOLERANCE = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def reruns(tmp_path_factory):
    """Two runs of one config (a, b); one run whole, one stopped at step 37 and resumed."""
    root = tmp_path_factory.mktemp("reruns")
    trainer.train_and_evaluate(tiny_config(), str(root / "a"))
    trainer.train_and_evaluate(tiny_config(), str(root / "b"))
    first = trainer.train_and_evaluate(tiny_config(max_steps=37), str(root / "part"))
    second = trainer.train_and_evaluate(tiny_config(), str(root / "part"))
    return root, first["step"], second["step"]


def test_a_checkpoint_between_rows_keeps_its_steps_in_the_next_row(tmp_path):
    """A row's train/* means cover every step since the row before, a checkpoint saved
    between them included (saving checked the losses and once dropped those steps)."""
    rows = {}
    for every in (20, 1_000):
        workdir = tmp_path / f"checkpoint_every_{every}"
        config = tiny_config(max_steps=40, log_every=40, checkpoint_every=every)
        trainer.train_and_evaluate(config, str(workdir))
        (row,) = [
            r for r in run_folder.read_metrics(workdir) if r["step"] == 40 and "train/lr" in r
        ]
        rows[every] = {k: v for k, v in row.items() if k in ("train/loss", "train/lr")}
    assert rows[20] == rows[1_000], rows


@cpu_bitwise
def test_same_config_and_seed_give_bit_identical_vectors(reruns):
    root, _, _ = reruns  # bit equality: XLA:CPU (see RERUN_TOLERANCE)
    assert (root / "a/vectors.bin").read_bytes() == (root / "b/vectors.bin").read_bytes()


def test_same_config_and_seed_give_the_same_vectors_within_tolerance(reruns):
    root, _, _ = reruns
    a, b = _vectors(root / "a"), _vectors(root / "b")
    assert a.words == b.words
    np.testing.assert_allclose(a.vectors, b.vectors, **RERUN_TOLERANCE)


@cpu_bitwise
def test_stopped_run_resumes_to_identical_parameters(reruns):
    root, _, _ = reruns  # bit equality: XLA:CPU (see RERUN_TOLERANCE)
    assert (root / "a/vectors.bin").read_bytes() == (root / "part/vectors.bin").read_bytes()


def test_stopped_run_resumes_to_the_same_parameters_within_tolerance(reruns):
    root, first, second = reruns
    assert first == 37 and second > 37
    np.testing.assert_allclose(
        _vectors(root / "part").vectors, _vectors(root / "a").vectors, **RERUN_TOLERANCE
    )
    steps = [r["step"] for r in run_folder.read_metrics(root / "part") if "train/loss" in r]
    assert steps == sorted(steps)


@pytest.mark.slow
def test_sigkilled_run_resumes_to_identical_parameters(tmp_path):
    """A run killed with SIGKILL mid-training, restarted, ends exactly as an unkilled run.

    Bit equality holds on any host here: both runs are JAX_PLATFORMS=cpu subprocesses
    (bit-identical resume is an XLA:CPU property; the in-process twins above cover others).
    """
    flags = [
        "--config=w2v_jax/configs/tiny.py",
        "--config.synthetic.num_tokens=60000",
        "--config.checkpoint_every=50",
        "--config.log_every=50",
    ]

    def cmd(workdir):
        return [sys.executable, "-m", "w2v_jax.main", *flags, f"--workdir={workdir}"]

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd(killed), cwd=ROOT, env=env, stderr=subprocess.PIPE)
    ckpt = store.folder_in(killed)
    deadline = time.time() + 300
    while store.latest(ckpt) is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "vectors.bin").exists()
    subprocess.run(cmd(killed), cwd=ROOT, env=env, check=True, capture_output=True)
    clean = tmp_path / "clean"
    subprocess.run(cmd(clean), cwd=ROOT, env=env, check=True, capture_output=True)
    assert (clean / "vectors.bin").read_bytes() == (killed / "vectors.bin").read_bytes()


def test_non_finite_loss_stops_with_step_and_keeps_checkpoint(tmp_path):
    trainer.train_and_evaluate(tiny_config(max_steps=20), str(tmp_path))
    ckpt = store.folder_in(tmp_path)
    before = _files(ckpt)
    with pytest.raises(record.NonFiniteLossError, match=r"non-finite at step \d+.*step 20"):
        trainer.train_and_evaluate(
            tiny_config(**{"optimizer.alpha": 1e30, "max_loss": 0.0, "resume_override": True}),
            str(tmp_path),
        )
    assert _files(ckpt) == before


def _files(folder) -> dict:
    """Every file under ``folder`` and its bytes."""
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_finite_but_diverged_loss_stops_the_run(tmp_path):
    """A loss config.max_loss above the first step's is an error too (a diverged HS run
    stayed finite); with alpha 5 the tiny run's loss climbs within a few steps."""
    with pytest.raises(
        record.NonFiniteLossError,
        match=r"loss became [\d.e+]+, more than config.max_loss=1 above the first step's "
        r"[\d.]+ \(diverged\) at step \d+;",
    ):
        trainer.train_and_evaluate(
            tiny_config(max_loss=1.0, **{"optimizer.alpha": 5.0}), str(tmp_path)
        )


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("loss.name", "bogus", r"config.loss.name='bogus' .*'hs'"),
        ("model", "glove", r"config.model='glove'.*'skipgram', 'cbow'"),
        ("loss.k", -1, r"config.loss.k=-1 must be a number >= 1"),
        ("window", 0, r"config.window=0 must be a number >= 1"),
        ("optimizer.name", "lbfgs", r"config.optimizer.name='lbfgs'"),
        ("parallel.mode", "tpu", r"config.parallel.mode='tpu'"),
        ("layout", "pairs", r"layout='pairs' needs --config.model='skipgram'"),
        ("corpus.heldout", "valid", r"config.corpus.heldout='valid' .*\['', 'heldout'\]"),
    ],
)
def test_invalid_config_fails_before_any_work(tmp_path, field, value, message):
    overrides = {field: value}
    if field == "corpus.heldout":
        overrides["corpus.name"] = "text8-head"
    if field == "layout":
        overrides["model"] = "cbow"
    with pytest.raises(ValueError, match=message):
        trainer.train_and_evaluate(tiny_config(**overrides), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_batch_larger_than_an_epoch_is_refused(tmp_path):
    with pytest.raises(
        ValueError, match=r"config.batch_size=100000 x steps_per_call=1 .* is larger than"
    ):
        trainer.train_and_evaluate(tiny_config(batch_size=100_000), str(tmp_path))


def test_cli_reports_one_line_errors(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "w2v_jax.main",
            "--config=w2v_jax/configs/tiny.py",
            "--config.loss.name=bogus",
            f"--workdir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --config.loss.name='bogus'")


@pytest.fixture(scope="module")
def steps_per_call_runs(tmp_path_factory):
    """Four sub-steps per call: one run whole, one stopped after 37 steps (the call ends at
    40) and resumed; trained once for the bitwise test and its tolerance twin."""
    root = tmp_path_factory.mktemp("steps_per_call")
    result = trainer.train_and_evaluate(tiny_config(steps_per_call=4), str(root / "full"))
    first = trainer.train_and_evaluate(
        tiny_config(steps_per_call=4, max_steps=37), str(root / "cut")
    )
    resumed = trainer.train_and_evaluate(tiny_config(steps_per_call=4), str(root / "cut"))
    return root, result["step"], first["step"], resumed["step"]


@cpu_bitwise
@pytest.mark.slow
def test_steps_per_call_run_resumes_mid_run_bit_exactly(steps_per_call_runs):
    """Resumed mid-run, the same vectors bit for bit as an uninterrupted run."""
    root, _, _, _ = steps_per_call_runs  # bit equality: XLA:CPU (see RERUN_TOLERANCE)
    assert (root / "cut/vectors.bin").read_bytes() == (root / "full/vectors.bin").read_bytes()


@pytest.mark.slow
def test_steps_per_call_run_resumes_mid_run_within_tolerance(steps_per_call_runs):
    """Resumed mid-run, the same steps and vectors (to RERUN_TOLERANCE) as a whole run."""
    root, full_step, first_step, resumed_step = steps_per_call_runs
    assert first_step == 40
    assert resumed_step == full_step
    cut, full = _vectors(root / "cut"), _vectors(root / "full")
    assert cut.words == full.words
    np.testing.assert_allclose(cut.vectors, full.vectors, **RERUN_TOLERANCE)
    logged = [r["step"] for r in run_folder.read_metrics(root / "cut") if "train/loss" in r]
    assert logged == sorted(set(logged)) and logged[-1] == full_step
    losses = [r["train/loss"] for r in run_folder.read_metrics(root / "full") if "train/loss" in r]
    assert losses[-1] < losses[0]


def test_steps_per_call_needs_a_single_device(tmp_path):
    with pytest.raises(ValueError, match=r"steps_per_call=4 needs parallel.mode 'single' or"):
        trainer.train_and_evaluate(
            tiny_config(steps_per_call=4, **{"parallel.mode": "pmap"}), str(tmp_path)
        )


@pytest.mark.parametrize("loss", ["softmax", "sampled_softmax", "nce", "neg", "hs"])
def test_every_output_layer_trains_under_the_default_optimiser(tmp_path, loss):
    """The default's recipe (sparse AdaGrad, row-shared negatives, on-device input) trains
    all five layers on the tiny corpus: a k-sweep compares losses, not optimisers."""
    from w2v_jax.configs import default

    base = default.get_config()
    config = tiny_config(**{"loss.name": loss, "batch_size": 32, "epochs": 3})
    config.optimizer = base.optimizer
    config.loss.share, config.loss.skipgram_input = base.loss.share, base.loss.skipgram_input
    config.input.mode = base.input.mode
    assert config.optimizer.name == "adagrad" and config.input.mode == "device"
    final = trainer.train_and_evaluate(config, str(tmp_path))
    vocab_size = len((tmp_path / "vocab.tsv").read_text().splitlines())
    # Held-out NLL under the full softmax (hs: its tree) well below the uniform log V.
    assert final["eval/heldout_nll"] < np.log(vocab_size) - 0.5, final["eval/heldout_nll"]
