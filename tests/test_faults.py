"""The catalogue of bad inputs and faults: each must end in one line naming the problem and
the fix, and none may lose work already done.

Add the next one found as one row of a table below:

* `BAD_RUNS`: a config override or a damaged run folder that `train_and_evaluate` must
  refuse before training (one-line error, nothing written or changed);
* `RESUME_MISMATCHES`: a second run in the same workdir with other settings;
* `CLI_ERRORS`: a command line that must print one line and exit 1.

Bad config values (unknown loss, window 0, k < 1, ...) are in tests/test_trainer.py,
corrupt corpora and vocabularies in tests/test_corpus.py and tests/test_vocab.py, bad
vector and evaluation files in tests/test_keyed_vectors.py and tests/test_evaluate_cli.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from typing import NamedTuple

import numpy as np
import pytest
from absl import logging
from conftest import cpu_bitwise, tiny_config

from w2v_jax import files, interrupt, resume, run_folder, trainer
from w2v_jax.checkpoint import schedule, store, writer
from w2v_jax.evaluation import keyed_vectors
from w2v_jax.run import record

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _snapshot(folder: pathlib.Path) -> dict:
    """Every file's bytes and mode (in subfolders too), to check that nothing changed."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mode)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> pathlib.Path:
    """A finished tiny run (60 steps) that tests copy before damaging."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    trainer.train_and_evaluate(tiny_config(max_steps=60), str(workdir))
    return workdir


def _copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    shutil.copytree(src, dst)
    return dst


# ---- files and checkpoints -------------------------------------------------------------


def test_partial_last_jsonl_line_is_dropped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "train/lo')
    with caplog.at_level(logging.WARNING):
        assert files.read_jsonl(path) == [{"step": 1}, {"step": 2}]
    assert "cut short by a crash" in caplog.text


def test_damaged_middle_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2 is not a JSON object .*delete that line"):
        files.read_jsonl(path)


def test_atomic_file_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), files.atomic_file(path) as f:
        f.write(b"new, half written")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_atomic_files_get_the_permissions_of_plain_files(tmp_path):
    (tmp_path / "plain").write_bytes(b"")
    files.write_atomic(tmp_path / "atomic", b"")
    writer.save(tmp_path / "c", {"a": np.zeros(2)}, 1, {})
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.rglob("*") if p.is_file()}
    assert modes["leaf_000.0-2.npy"] == modes["COMMITTED"] == modes["atomic"] == modes["plain"]


def _flip_a_byte(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


# A damaged piece (file) of the newest committed step, and what each does to it.
DAMAGES = {
    "empty": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:-8]),
    "missing": lambda p: p.unlink(),
    "flipped byte": _flip_a_byte,  # same size: only the CRC-32 tells
    "garbage marker": lambda p: (p.parent / "COMMITTED").write_text('{"format": 2, "st'),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_piece_is_one_line_and_the_step_set_aside_falls_back(tmp_path, damage):
    """Each kind of damage to the newest step is one line naming the file; set aside
    (renamed, kept), the previous step (kept) loads; with none left there is no
    checkpoint (a run starts from step 0)."""
    folder, template = tmp_path / "checkpoint", {"a": np.zeros(1000)}
    for step in (1, 2):
        writer.save(folder, {"a": np.arange(1000.0) * step}, step, {})
    DAMAGES[damage](folder / "step_000000002" / "leaf_000.0-1000.npy")
    for older in (1, None):
        with pytest.raises(store.CorruptCheckpointError, match="is damaged") as info:
            store.load(folder, template)
        message = str(info.value)
        assert "\n" not in message and "step_00000000" in message, message
        aside = store.set_aside(store.latest(folder))
        assert aside.name.endswith(".damaged") and aside.is_dir()
        if older is not None:
            state, meta = store.load(folder, template)
            assert meta["step"] == 1 and np.array_equal(state["a"], np.arange(1000.0))
            DAMAGES[damage](folder / "step_000000001" / "leaf_000.0-1000.npy")
    assert store.latest(folder) is None  # both set aside: a run starts from step 0
    assert sorted(p.name for p in folder.iterdir()) == [
        "step_000000001.damaged", "step_000000002.damaged"
    ]  # fmt: skip


def test_non_finite_parameters_never_replace_the_last_good_checkpoint(tmp_path):
    folder = tmp_path / "checkpoint"
    writer.save(folder, {"a": np.ones(3)}, 1, {})
    good = _snapshot(folder)
    with pytest.raises(FloatingPointError, match="hold NaN or inf"):
        writer.save(folder, {"a": np.array([1.0, np.nan, 0.0])}, 2, {})
    assert _snapshot(folder) == good


def test_checkpoint_schedule_by_steps_and_by_wall_time():
    now = [0.0]
    when = schedule.Schedule(every_steps=100, every_secs=60.0, clock=lambda: now[0])
    assert not when.due(0, 50) and when.due(90, 100)
    now[0] = 59.0
    assert not when.due(100, 150)
    now[0] = 61.0
    assert when.due(150, 151)  # a minute since the last save, whatever the steps
    when.saved()
    assert not when.due(151, 152)
    assert not schedule.Schedule(0, 0.0).due(0, 10**9)


def test_loss_guard_is_relative_to_the_first_step():
    k = 2000  # negative sampling starts near (k + 1) ln 2 = 1387 nats per example
    guard = record.LossGuard(max_loss=1000.0)
    assert guard.problem(True, (k + 1) * np.log(2)) is None
    assert guard.problem(True, 2300.0) is None
    assert "diverged" in guard.problem(True, 2400.0)
    assert guard.problem(False, 1.0) == "non-finite"
    assert record.LossGuard(0.0).problem(True, 1e30) is None  # 0: only non-finite stops


# ---- bad runs: refused before training, one line, nothing written ---------------------


class BadRun(NamedTuple):
    name: str
    overrides: dict  # config overrides ({} = the tiny config); "{tmp}" is the tmp_path
    match: str  # regex of the one-line error
    setup: object = None  # f(tmp_path, workdir): makes the bad input
    error: type = ValueError


def _text(name: str, content: str):
    return lambda tmp, workdir: (tmp / name).write_text(content)


def _garbage_analogies(tmp, workdir):
    (tmp / "q.txt").write_bytes(b"\xff\xfe\x00 not utf-8")


def _read_only_folder(tmp, workdir):
    if os.geteuid() != 0:
        workdir.mkdir()
        workdir.chmod(0o555)
    elif not pathlib.Path("/sys/kernel").is_dir():
        pytest.skip("root without a read-only folder to try")


BAD_RUNS = [
    BadRun("workdir is a file", {}, r"--workdir=.* is a file; pass a folder",
           lambda tmp, w: w.write_text("x")),
    BadRun("workdir under a file", {}, r"cannot be created: .*/f is a file, not a folder",
           lambda tmp, w: (tmp / "f").write_text("x")),
    BadRun("workdir read-only", {}, r"is not writable \(.*\); pass a folder you can write to",
           _read_only_folder),
    BadRun("corpus file missing", {"corpus.name": "{tmp}/nope.txt"}, r"nope.txt: no such file",
           error=OSError),
    BadRun("corpus file empty", {"corpus.name": "{tmp}/empty.txt"}, r"empty",
           _text("empty.txt", "")),
    BadRun("min_count empties the vocabulary",
           {"corpus.name": "{tmp}/few.txt", "corpus.min_count": 50},
           r"empty vocabulary: .*lower min_count", _text("few.txt", "a b c a b a\n" * 3)),
    BadRun("k larger than the vocabulary", {"loss.k": 61},
           r"config.loss.k=61 is larger than the vocabulary \(60 words\).*lower loss.k"),
    BadRun("analogies file missing", {"eval.analogies": "{tmp}/q.txt"},
           r"config.eval.analogies='.*q.txt': no such file"),
    BadRun("analogies path is a folder", {"eval.analogies": "{tmp}"},
           r"config.eval.analogies=.*a folder, not a file"),
    BadRun("similarity file missing", {"eval.similarity": "{tmp}/ws.tsv"},
           r"config.eval.similarity='.*ws.tsv': no such file"),
    BadRun("analogies file not UTF-8", {"eval.analogies": "{tmp}/q.txt"},
           r"q.txt: .*save it as UTF-8", _garbage_analogies),
    BadRun("negative checkpoint_every_secs", {"checkpoint_every_secs": -1.0},
           r"config.checkpoint_every_secs=-1.0 must be a number >= 0"),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_RUNS, ids=lambda c: c.name)
def test_bad_run_is_refused_in_one_line_before_training(tmp_path, case):
    workdir = tmp_path / "run"
    if case.name == "workdir under a file":
        workdir = tmp_path / "f" / "run"
    if case.name == "workdir read-only" and os.geteuid() == 0:
        workdir = pathlib.Path("/sys/kernel")
    if case.setup is not None:
        case.setup(tmp_path, workdir)
    overrides = {k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v
                 for k, v in case.overrides.items()}  # fmt: skip
    before = _snapshot(tmp_path)
    with pytest.raises(case.error, match=case.match) as info:
        trainer.train_and_evaluate(tiny_config(**overrides), str(workdir))
    assert "\n" not in str(info.value)
    assert _snapshot(tmp_path) == before  # nothing written beside the bad input
    assert not (workdir / "config.json").exists()


# ---- resume: the same run continues, another one is refused ---------------------------


RESUME_MISMATCHES = [
    ({"loss.name": "nce"}, r"other settings \(loss.name 'neg' -> 'nce'\).*new --workdir"),
    ({"dim": 16}, r"other settings \(dim 8 -> 16\)"),
    ({"loss.k": 7}, r"loss.k 5 -> 7"),
    ({"synthetic.seed": 1}, r"synthetic.seed 0 -> 1; vocab.sha256 "),  # another corpus
    ({"batch_size": 32}, r"batch_size 64 -> 32"),  # the saved position counts batches
    ({"epochs": 5}, r"another learning-rate schedule \(epochs 2 -> 5\); pass "
     r"--config.resume_override=True .*the learning rate goes from [\d.]+ to [\d.]+"),
    ({"optimizer.alpha": 0.05}, r"optimizer.alpha 0.025 -> 0.05"),
    ({"loss.name": "nce", "resume_override": True}, r"loss.name"),  # not overridable
]  # fmt: skip


@pytest.mark.parametrize("overrides,match", RESUME_MISMATCHES, ids=lambda x: str(x)[:40])
def test_resume_with_other_settings_stops_before_writing(finished, tmp_path, overrides, match):
    workdir = _copy(finished, tmp_path / "run")
    before = _snapshot(workdir)
    with pytest.raises(ValueError, match=match) as info:
        trainer.train_and_evaluate(tiny_config(max_steps=80, **overrides), str(workdir))
    assert "\n" not in str(info.value)
    assert _snapshot(workdir) == before  # config.json included: the record stays


def test_finished_run_rerun_changes_nothing(finished, tmp_path):
    workdir = _copy(finished, tmp_path / "run")
    before = _snapshot(workdir)
    result = trainer.train_and_evaluate(tiny_config(max_steps=60), str(workdir))
    assert _snapshot(workdir) == before
    assert result["step"] == 60 and "eval/heldout_loss" in result


def test_finished_run_rerun_completes_a_lost_export(finished, tmp_path):
    workdir = _copy(finished, tmp_path / "run")
    (workdir / "vectors.bin").unlink()
    rows = run_folder.read_metrics(workdir)
    trainer.train_and_evaluate(tiny_config(max_steps=60), str(workdir))
    assert (workdir / "vectors.bin").read_bytes() == (finished / "vectors.bin").read_bytes()
    assert run_folder.read_metrics(workdir) == rows  # no duplicate final row


def test_schedule_change_with_override_continues(finished, tmp_path):
    workdir = _copy(finished, tmp_path / "run")
    result = trainer.train_and_evaluate(
        tiny_config(max_steps=70, resume_override=True, **{"optimizer.alpha": 0.05}), str(workdir)
    )
    assert result["step"] == 70
    assert json.loads((workdir / "config.json").read_text())["optimizer"]["alpha"] == 0.05


def test_resume_may_move_the_corpus_cache_or_change_its_workers(finished, tmp_path):
    """Where the encoded corpus is cached and how many processes tokenise it do not
    change the data: a run resumes with either changed."""
    workdir = _copy(finished, tmp_path / "run")
    overrides = {"corpus.workers": 3, "corpus.cache_dir": str(tmp_path / "cache")}
    result = trainer.train_and_evaluate(tiny_config(max_steps=70, **overrides), str(workdir))
    assert result["step"] == 70


def test_resume_may_flip_deterministic_but_not_change_matmul_precision(
    finished, tmp_path, monkeypatch
):
    """`deterministic` picks XLA:GPU's kernels, not the maths: a run resumes with it
    flipped. `matmul_precision` changes the maths: refused before anything is written."""
    # The flag already in XLA_FLAGS: `set_deterministic` has nothing to add, on any backend
    # (a GPU backend started without it would refuse in-process).
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=true")
    workdir = _copy(finished, tmp_path / "run")
    result = trainer.train_and_evaluate(tiny_config(max_steps=70, deterministic=True), str(workdir))
    assert result["step"] == 70
    assert json.loads((workdir / "config.json").read_text())["deterministic"] is True
    before = _snapshot(workdir)
    with pytest.raises(
        resume.ResumeMismatch, match=r"other settings \(matmul_precision 'float32' -> 'bfloat16'"
    ) as info:
        trainer.train_and_evaluate(
            tiny_config(max_steps=80, matmul_precision="bfloat16"), str(workdir)
        )
    assert "\n" not in str(info.value)
    assert _snapshot(workdir) == before


@pytest.mark.slow
def test_partial_metrics_line_and_corrupt_checkpoint_on_resume(finished, tmp_path, caplog):
    workdir = _copy(finished, tmp_path / "run")
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 61, "train/lo')  # a crash in the middle of an append
    result = trainer.train_and_evaluate(tiny_config(max_steps=70), str(workdir))
    steps = [r["step"] for r in run_folder.read_metrics(workdir)]
    assert result["step"] == 70 and steps == sorted(steps) and 61 not in steps
    newest = store.latest(workdir / "checkpoint")
    assert newest.name == "step_000000070"
    piece = sorted(newest.glob("leaf_*.npy"))[-1]
    piece.write_bytes(piece.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        assert trainer.train_and_evaluate(tiny_config(max_steps=80), str(workdir))["step"] == 80
    said = [r.getMessage() for r in caplog.records if "cannot be resumed" in r.getMessage()]
    assert len(said) == 1 and f"{piece} is damaged" in said[0], said
    assert "step_000000070.damaged" in said[0], said
    assert (workdir / "checkpoint" / "step_000000070.damaged" / piece.name).exists()  # kept
    steps = [r["step"] for r in run_folder.read_metrics(workdir)]
    assert steps == sorted(steps)  # resumed from step 60: 61-70 logged again, once


@pytest.mark.slow
def test_large_k_does_not_trip_the_divergence_guard(tmp_path):
    """Negative sampling at k = 2,000 starts near 1,387 nats per example, above the
    default max_loss of 1,000: the guard is relative to the first step, so it trains."""
    config = tiny_config(max_steps=3, log_every=1, **{"loss.k": 2000})
    config.synthetic.vocab_size = 2500
    config.synthetic.num_tokens = 60_000
    result = trainer.train_and_evaluate(config, str(tmp_path))
    first = run_folder.read_metrics(tmp_path)[0]
    assert result["step"] == 3 and first["train/loss"] > 1000


# ---- interrupts -------------------------------------------------------------------------


# Resume after SIGINT: bit for bit on XLA:CPU (`cpu_bitwise`); the twin, on any backend,
# to float32 rounding of scatter-add order over the tiny run's steps.
RESUME_TOLERANCE = dict(rtol=1e-4, atol=1e-5)


class SigintRun(NamedTuple):
    clean: pathlib.Path  # the uninterrupted run
    cut: pathlib.Path  # interrupted at step 30, then resumed
    error: BaseException | None  # what the interrupted run raised
    checkpoint_step: int | None  # the step its checkpoint holds
    handler_restored: bool  # SIGINT's handler put back after the interrupted run


@pytest.fixture(scope="module")
def sigint_run(tmp_path_factory) -> SigintRun:
    """A clean run, and one interrupted by SIGINT at step 30 and resumed: trained once
    for the bitwise test and its tolerance twin, which asserts what the interrupt did."""
    # What SIGINT did before (Python's default_int_handler, or SIG_IGN when the suite runs
    # as a background job of a non-interactive shell): the catcher must put it back.
    before = signal.getsignal(signal.SIGINT)
    root = tmp_path_factory.mktemp("sigint")
    clean, cut = root / "clean", root / "cut"
    trainer.train_and_evaluate(tiny_config(), str(clean))
    update = record.Meter.update

    def interrupted_at_step_30(self, tokens, epoch):
        update(self, tokens, epoch)
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 30:
            signal.raise_signal(signal.SIGINT)

    error = None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(record.Meter, "update", interrupted_at_step_30)
        try:
            trainer.train_and_evaluate(tiny_config(), str(cut))
        except interrupt.Interrupted as e:
            error = e
    handler_restored = signal.getsignal(signal.SIGINT) is before
    saved = store.latest(store.folder_in(cut))
    checkpoint_step = None if saved is None else store.read_meta(saved)["step"]
    trainer.train_and_evaluate(tiny_config(), str(cut))
    return SigintRun(clean, cut, error, checkpoint_step, handler_restored)


@cpu_bitwise
@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_resumes_bit_exactly(sigint_run):
    run = sigint_run  # bit equality: XLA:CPU (see RESUME_TOLERANCE)
    assert (run.cut / "vectors.bin").read_bytes() == (run.clean / "vectors.bin").read_bytes()


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_resumes_within_tolerance(sigint_run):
    run = sigint_run
    assert isinstance(run.error, interrupt.Interrupted), run.error
    assert "stopped at step 30: checkpoint saved" in str(run.error)
    assert run.error.exit_code == 130
    assert run.checkpoint_step == 30
    assert run.handler_restored
    cut = keyed_vectors.load_word2vec(run.cut / "vectors.bin")
    clean = keyed_vectors.load_word2vec(run.clean / "vectors.bin")
    assert cut.words == clean.words
    np.testing.assert_allclose(cut.vectors, clean.vectors, **RESUME_TOLERANCE)


def _main(*flags, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "w2v_jax.main", *flags],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigterm_from_the_command_line_is_one_line_and_exit_143(tmp_path):
    workdir = tmp_path / "run"
    proc = _main(
        "--config=w2v_jax/configs/tiny.py",
        "--config.synthetic.num_tokens=600000",
        "--config.log_every=1",
        f"--workdir={workdir}",
    )
    while not run_folder.read_metrics(workdir) and proc.poll() is None:
        pass  # wait until training has begun
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("stopped at step ")
    assert "Traceback" not in err and "Unable to initialize backend" not in err
    assert store.latest(store.folder_in(workdir)) is not None


# ---- the command line: one line, exit 1, traceback only with --verbose -------------------


CLI_ERRORS = [
    (["--config.loss.nme=x"], r'^error: unknown config field --config.loss.nme \(did you mean "n'),
    (["--config.bogus=1"], r"^error: unknown config field --config.bogus"),
    (["--config=w2v_jax/configs/nope.py"], r"^error: --config=.*nope.py: no such file"),
    (["--config.dim=abc"], r"^error: .*--config.dim=abc"),
    (["--workdir=/dev/null/run"], r"^error: --workdir=/dev/null/run cannot be created"),
    # issue 26, family 2: resources and start-up, one line before anything is allocated
    (["--config=README.md"], r"^error: --config=README.md: not a Python config file"),
    (["--config.window=100000"],
     r"^error: this config needs ~[\d.]+ TiB of host memory \(window patterns .*\) but .* "
     r"is available .*; lower --config.window$"),
    (["--config.parallel.coordinator=localhost:99999", "--config.parallel.num_processes=2",
      "--config.parallel.mode=mesh"],
     r"^error: --config.parallel.coordinator='localhost:99999': port 99999 is not in 1..65535"),
]  # fmt: skip


@pytest.mark.parametrize("flags,match", CLI_ERRORS, ids=lambda x: str(x)[:30])
def test_cli_mistakes_are_one_line(tmp_path, flags, match):
    args = {"--config": "w2v_jax/configs/tiny.py", "--workdir": str(tmp_path / "run")}
    extra = [f for f in flags if f.split("=")[0] not in args]
    args.update(f.split("=", 1) for f in flags if f.split("=")[0] in args)
    proc = _main(*[f"{k}={v}" for k, v in args.items()], *extra, "--config.max_steps=1")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and len(err.strip().splitlines()) == 1, err
    assert __import__("re").search(match, err.strip()), err


def test_verbose_shows_the_traceback(tmp_path):
    proc = _main(
        "--config=w2v_jax/configs/tiny.py",
        f"--workdir={tmp_path}",
        "--config.loss.k=500",
        env={"W2V_VERBOSE": "1"},
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" in err and "larger than the vocabulary" in err


def test_text8_download_without_network_is_one_line(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    config = tiny_config(**{"corpus.name": "text8", "corpus.download": True})
    config.corpus.data_dir = str(tmp_path / "data")
    with pytest.raises(OSError, match=r"could not download http.*text8.zip .*check the network"):
        trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "config.json").exists()


# ---- true records (issue 26, family 4) -------------------------------------------------


def test_a_rejected_resume_leaves_config_json_as_it_was(finished, tmp_path):
    """A schedule change (resume_override) that diverges before its first checkpoint: the
    folder's config stays the one its checkpoint was made with, and the original command
    still finds its run finished."""
    workdir = _copy(finished, tmp_path / "run")
    before = (workdir / "config.json").read_bytes()
    rejected = tiny_config(max_steps=80, resume_override=True, **{"optimizer.alpha": 1e30})
    with pytest.raises(record.NonFiniteLossError):
        trainer.train_and_evaluate(rejected, str(workdir))
    assert (workdir / "config.json").read_bytes() == before
    assert store.latest(workdir / "checkpoint").name == "step_000000060"
    assert trainer.train_and_evaluate(tiny_config(max_steps=60), str(workdir))["step"] == 60


def test_an_accepted_resume_writes_its_config_once_it_has_a_checkpoint(finished, tmp_path):
    workdir = _copy(finished, tmp_path / "run")
    trainer.train_and_evaluate(
        tiny_config(max_steps=70, resume_override=True, **{"optimizer.alpha": 0.05}), str(workdir)
    )
    assert json.loads((workdir / "config.json").read_text())["optimizer"]["alpha"] == 0.05


def test_a_rerun_without_a_checkpoint_says_it_starts_from_step_0(finished, tmp_path, caplog):
    workdir = _copy(finished, tmp_path / "run")
    shutil.rmtree(workdir / "checkpoint")  # as a run killed before its first checkpoint
    with caplog.at_level(logging.WARNING):
        result = trainer.train_and_evaluate(tiny_config(max_steps=3), str(workdir))
    assert "holds no checkpoint" in caplog.text and "starts from step 0" in caplog.text
    assert result["step"] == 3


def test_a_short_run_checkpoints_before_it_exports(tmp_path):
    """A run shorter than checkpoint_every (20) still leaves its final step committed."""
    trainer.train_and_evaluate(tiny_config(max_steps=7), str(tmp_path))
    assert store.latest(tmp_path / "checkpoint").name == "step_000000007"
    assert (tmp_path / "vectors.bin").exists()


def _evaluate_cli(vectors_path):
    return subprocess.run(
        [sys.executable, "-m", "w2v_jax.evaluation.evaluate", f"--vectors={vectors_path}",
         "--neighbours=a"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_evaluation_refuses_non_finite_vectors_and_warns_about_zero_ones(tmp_path):
    words = ["a", "b", "c", "d"]
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3) + 1
    vectors[2, 1] = np.nan
    keyed_vectors.save_word2vec_text(tmp_path / "nan.txt", words, vectors)
    proc = _evaluate_cli(tmp_path / "nan.txt")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "1 of 4 vectors hold NaN or inf (e.g. 'c')" in proc.stderr
    vectors[2] = 0.0
    keyed_vectors.save_word2vec_text(tmp_path / "zero.txt", words, vectors)
    proc = _evaluate_cli(tmp_path / "zero.txt")
    assert proc.returncode == 0, proc.stderr
    assert "1 of 4 vectors are all zero (e.g. 'c')" in proc.stderr


# ---- errors never hide bugs; resources; entry points (issue 26, families 2, 5, 6) -------


def test_every_user_error_is_one_value_error_family():
    """One family: the CLI prints these as one line; ValueError still catches them (code and
    tests written before the family), and a divergence is still a FloatingPointError."""
    from w2v_jax import errors

    family = (errors.ConfigError, errors.CorpusError, errors.RunFolderError,
              errors.EvaluationFileError, errors.ResourceError, errors.DivergenceError)  # fmt: skip
    for cls in family:
        assert issubclass(cls, errors.UserError) and issubclass(cls, ValueError)
    assert issubclass(record.NonFiniteLossError, errors.DivergenceError)
    assert issubclass(errors.DivergenceError, FloatingPointError)
    assert issubclass(store.CorruptCheckpointError, errors.RunFolderError)
    assert issubclass(resume.ResumeMismatch, errors.RunFolderError)


_WRAPPED = """
from w2v_jax import cli, errors
def main(argv):
    kind = KIND
    if kind == "user":
        raise errors.ConfigError("--config.seed=-1 must be >= 0")
    if kind == "os":
        open("/nonexistent/file.txt")
    if kind == "jax":  # JAX's own shape errors are ValueErrors: a bug, keep the traceback
        import jax.numpy as jnp
        jnp.split(jnp.ones(3), 2)
    if kind == "memory":
        raise MemoryError("Unable to allocate 910. TiB for an array with shape (10000200001, 3)")
cli.run(main)
"""


@pytest.mark.parametrize(
    "kind,rc,line",
    [
        ("user", 1, "error: --config.seed=-1 must be >= 0"),
        ("os", 1, "error: [Errno 2] No such file or directory: '/nonexistent/file.txt'"),
        ("memory", 1, "error: out of host memory (910. TiB, shape (10000200001, 3)); "),
        ("jax", 1, None),
    ],
)
def test_user_errors_are_one_line_and_bugs_keep_their_traceback(kind, rc, line):
    code = _WRAPPED.replace("KIND", repr(kind))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == rc, proc.stderr[-2000:]
    if line is None:
        assert "Traceback" in proc.stderr, proc.stderr[-2000:]
        assert "ValueError: array split does not result in an equal division" in proc.stderr
    else:
        assert len(err) == 1 and err[0].startswith(line), proc.stderr


def test_out_of_memory_messages_keep_their_sizes():
    from w2v_jax import cli

    xla = RuntimeError(
        "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 24000000000 bytes."
    )
    assert cli.out_of_memory(xla).startswith("out of device memory (24000000000 bytes)")
    assert cli.out_of_memory(MemoryError("Unable to allocate 1.5 GiB")).startswith(
        "out of host memory (1.5 GiB)"
    )
    assert cli.out_of_memory(ValueError("incompatible shapes")) is None


def test_memory_estimate_names_the_fields_that_set_it():
    """The window patterns are [(W+1)^2, 2W] bool + float32 (`windows.make_rows`); a config
    that needs more than is free is refused naming the largest items and their fields."""
    from w2v_jax import errors
    from w2v_jax.parallel import budget

    args = dict(left_only=False, layout="grouped", rows_per_call=64, prefetch=0, dim=8, k=5,
                vocab_size=60, num_tokens=6000, state_bytes=3840)  # fmt: skip
    needs = {n.what: n for n in budget.estimate(window=100_000, **args)}
    assert needs["window patterns"].bytes == 100_001**2 * 200_000 * 5
    assert needs["a step's temporaries"].bytes == 3 * 64 * (200_000 + 5 + 1) * 8 * 4
    small = budget.estimate(window=2, **args)
    budget.check(small, host_free=(2**30, "test"), device_free=(None, "-"), device_is_host=True)
    with pytest.raises(errors.ResourceError, match=r"window patterns .* lower --config.window$"):
        budget.check(
            list(needs.values()), host_free=(2**30, "test"), device_free=(None, "-"),
            device_is_host=True,
        )  # fmt: skip
    free, source = budget.host_available()
    assert free is None or (free > 0 and source in ("host MemAvailable", "ulimit -v"))


def test_a_config_that_cannot_fit_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="lower --config.window"):
        trainer.train_and_evaluate(tiny_config(window=100_000), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def _script(*args, env=None, timeout=120):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env={**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_launcher_with_a_command_that_does_not_exist_is_one_line():
    proc = _script("experiments/launch_local.py", "--num_processes=2", "--", "nosuchcommand")
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        proc.stderr.strip().splitlines()[0]
    ], proc.stderr
    assert proc.stderr.startswith("error: cannot run 'nosuchcommand' (no such command)")
    assert "launch_local: process" not in proc.stderr  # nothing started


def test_evaluation_cli_warnings_have_no_absl_prefix(finished):
    proc = _script(
        "-m", "w2v_jax.evaluation.evaluate", f"--vectors={finished / 'vectors.bin'}",
        "--neighbours=nosuchword",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "warning: neighbours: 'nosuchword' is not in the vocabulary" in proc.stderr.splitlines()
    assert not re.search(r"^[IWE]\d{4} ", proc.stderr, re.M)  # absl's prefix


def test_claim1_without_its_data_is_one_line_before_training(tmp_path):
    proc = _script(
        "experiments/claim1_lbl.py", f"--workdir={tmp_path / 'c1'}",
        env={"W2V_DATA_DIR": str(tmp_path / "none")},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: corpus 'ptb' not found: expected {tmp_path / 'none' / 'ptb.train.txt'}; put it "
        "there, or point data_dir or $W2V_DATA_DIR at the directory that holds it"
    ]
    assert not (tmp_path / "c1").exists()


def test_claim2_without_gensim_is_one_line_before_training(tmp_path):
    if __import__("importlib").util.find_spec("gensim") is not None:
        pytest.skip("gensim is installed")
    data = tmp_path / "data"
    data.mkdir()
    (data / "wiki-60m.txt.gz").write_bytes(b"")  # present: the gensim check comes next
    proc = _script(
        "experiments/claim2_table1.py", f"--workdir={tmp_path / 'c2'}",
        f"--out_dir={tmp_path / 'out'}", env={"W2V_DATA_DIR": str(data)},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: --gensim=1e-4 needs gensim, which is not installed; pip install -e .[peers]"
        )
    )
    assert not (tmp_path / "c2").exists()
