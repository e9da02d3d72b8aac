"""Several real JAX processes on localhost (experiments/launch_local.py): each process reads
only its share of the corpus (counted from its log line), the run trains to the
one-process run's quality on text8-head, a SIGKILLed run resumes bit-exactly, a run
sharded only along V equals one device, and bad input stops in one line. Bit equality of
trained vectors is an XLA:CPU property: those tests are `cpu_bitwise`, each with a twin
that asserts the same runs to MP_TOLERANCE on any backend.

Every process runs under a hard time limit, in its own process group, and is killed with
its group when a test fails (the launcher's job; `_Launch` kills the launcher's group as
a last resort), so no process outlives a test.

Sharded checkpoints themselves (commit marker, crash mid-write, another layout) are tested
in one process at the end, on a one-device mesh.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from conftest import cpu_bitwise, tiny_config

from w2v_jax import resume, run_folder, trainer
from w2v_jax.checkpoint import store
from w2v_jax.configs import tiny
from w2v_jax.evaluation import keyed_vectors
from w2v_jax.parallel import placement
from w2v_jax.step import update

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "experiments" / "launch_local.py"
# 12,000 tokens: 376 steps of 64 rows in 2 epochs, a few seconds of training.
TRAIN = [
    sys.executable, "-m", "w2v_jax.main", "--config=w2v_jax/configs/tiny.py",
    "--config.parallel.mode=mesh", "--config.synthetic.num_tokens=12000",
    "--config.checkpoint_every=25", "--config.log_every=25",
]  # fmt: skip
LIMIT = 240  # seconds any one launch may take


def _env(devices: int = 1) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


class _Launch:
    """experiments/launch_local.py in the background; its output collected line by line."""

    def __init__(
        self, processes: int, *flags: str, local_devices: int = 1, command=TRAIN, grace: float = 5
    ):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(LAUNCHER), f"--num_processes={processes}",
             f"--local_devices={local_devices}", f"--timeout_secs={LIMIT}", f"--grace_secs={grace}",
             "--", *command, *flags],
            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def pids(self) -> dict[int, int]:
        found = (re.match(r"launch_local: process (\d+) is pid (\d+)", x) for x in self.lines)
        return {int(m.group(1)): int(m.group(2)) for m in found if m}

    def wait(self, timeout: float = LIMIT + 30) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.kill()
        self.reader.join(timeout=5)
        return code

    def kill(self) -> None:
        """SIGTERM to the launcher (it stops its processes), then SIGKILL to its group."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, sig)
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    pass

    def output(self) -> str:
        return "".join(self.lines)


def _launch(processes: int, workdir, *flags: str, local_devices: int = 1, command=TRAIN) -> str:
    run = _Launch(
        processes, f"--workdir={workdir}", *flags, local_devices=local_devices, command=command
    )
    code = run.wait()
    assert code == 0, run.output()[-4000:]
    return run.output()


def _vectors(workdir) -> np.ndarray:
    return keyed_vectors.load_word2vec(pathlib.Path(workdir) / "vectors.bin").vectors


def _one_process(workdir, devices: int, *flags: str) -> None:
    subprocess.run(
        [*TRAIN, f"--workdir={workdir}", *flags],
        cwd=ROOT, env=_env(devices), check=True, capture_output=True, timeout=LIMIT,
    )  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> pathlib.Path:
    """An uninterrupted 2-process run (1 CPU device each, data parallel); its output is
    kept in ``output.log`` beside the run folder."""
    workdir = tmp_path_factory.mktemp("mp") / "two"
    (workdir.parent / "output.log").write_text(_launch(2, workdir))
    return workdir


# Bit equality is an XLA:CPU property: where a result is bit for bit on XLA:CPU it is
# asserted under `cpu_bitwise`, and a twin asserts it to MP_TOLERANCE on any backend:
# elsewhere the order of float32 additions (scatter-adds of duplicate rows, reductions)
# may differ, ~1 ulp per step, far below it.
MP_TOLERANCE = dict(rtol=0, atol=1e-4)
SHARE_LINE = re.compile(
    r"\[(\d+)\] .*input: share (\d+) of (\d+) reads tokens \[(\d+), (\d+)\) of (\d+)"
)


def _shares(output: str) -> dict[int, tuple[int, int, int, int]]:
    """{process: (share, shares, first token, end token)} from the processes' log lines."""
    found = {}
    for m in SHARE_LINE.finditer(output):
        process, share, count, lo, hi, n = map(int, m.groups())
        found[process] = (share, count, lo, hi, n)
    return found


def _assert_each_reads_its_share(output: str, processes: int, shares: int) -> None:
    """Every process logged its share; the shares are disjoint, cover the corpus and are
    ~1/shares of it each (within one 10,000-token sentence piece)."""
    found = _shares(output)
    assert sorted(found) == list(range(processes)), output[-3000:]
    ranges = sorted({(lo, hi) for _, _, lo, hi, _ in found.values()})
    n = next(iter(found.values()))[4]
    assert len(ranges) == shares and ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert all(abs((hi - lo) - n / shares) <= 10_000 for lo, hi in ranges)


@pytest.mark.slow
def test_two_processes_each_read_half_of_the_corpus(two_processes):
    """Each process reads its half of the tokens and batches only its device's rows; only
    process 0 writes the run folder's files."""
    _assert_each_reads_its_share((two_processes.parent / "output.log").read_text(), 2, 2)
    got = _vectors(two_processes)
    assert np.all(np.isfinite(got)) and not np.array_equal(got, np.zeros_like(got))
    names = {p.name for p in two_processes.iterdir()}
    assert {"config.json", "metrics.jsonl", "vectors.bin", "vectors.txt", "vocab.tsv"} <= names


# text8-head, one epoch of the default skip-gram: 2 processes against 1 (same global
# batch of 1,024 rows). The tolerances are the seed spread of one-process runs, measured
# (python experiments/multiprocess_quality.py: docs/training.md "Several processes").
TEXT8_HEAD = [
    sys.executable, "-m", "w2v_jax.main", "--config=w2v_jax/configs/default.py",
    "--config.epochs=1", "--config.parallel.mode=mesh", "--config.input.mode=host",
]  # fmt: skip
# Measured spread of 3 seeds with the summed vectors (config.vectors, the default):
# analogy 0.80 points, WS353 0.055 (input vectors alone: 0.83, 0.019).
QUALITY_TOLERANCE = {"eval/analogy/total": 0.01, "eval/similarity/wordsim353/spearman": 0.06}


@pytest.mark.slow
def test_two_processes_match_one_process_quality_on_text8_head(tmp_path):
    """Per-process input changes the batch sequence, not the quality: analogy accuracy
    and WS353 of a 2-process run are the one-process run's within the seed spread."""
    one = subprocess.run(
        [*TEXT8_HEAD, f"--workdir={tmp_path / 'one'}"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=2 * LIMIT,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    output = _launch(2, tmp_path / "two", command=TEXT8_HEAD)
    _assert_each_reads_its_share(output, 2, 2)
    final = {}
    for name in ("one", "two"):
        final[name] = run_folder.read_metrics(tmp_path / name)[-1]
    for metric, tolerance in QUALITY_TOLERANCE.items():
        a, b = final["one"][metric], final["two"][metric]
        assert abs(a - b) <= tolerance, (metric, a, b)


_tiny_config = functools.partial(
    tiny_config, **{"synthetic.num_tokens": 12000, "checkpoint_every": 25, "log_every": 25}
)


@pytest.mark.slow
@pytest.mark.parametrize("model_axis", [1, 2], ids=["data4", "data2-model2"])
def test_four_processes_read_a_quarter_or_a_half(tmp_path, model_axis):
    """4 processes, data parallel (4 x 1): four shares; with the tables split along V over
    pairs of processes (data 2 x model 2) the two processes of a pair hold the same rows
    and read the same share. The shares are logged before the first step: 20 steps
    (of the 376) are enough to check that the run trains."""
    flags = [f"--config.parallel.model_axis={model_axis}", "--config.max_steps=20"]
    if model_axis > 1:
        flags.append("--config.parallel.shard_vocab=True")
    output = _launch(4, tmp_path / "four", *flags)
    _assert_each_reads_its_share(output, 4, 4 // model_axis)
    if model_axis > 1:
        found = _shares(output)
        assert found[0][2:4] == found[1][2:4] and found[2][2:4] == found[3][2:4]
    assert np.all(np.isfinite(_vectors(tmp_path / "four")))


@pytest.fixture(scope="module")
def two_shard_the_vocabulary(tmp_path_factory) -> pathlib.Path:
    """model_axis 2 over 2 processes, and one device (root / "single")."""
    root = tmp_path_factory.mktemp("vocab")
    flags = ["--config.parallel.model_axis=2", "--config.parallel.shard_vocab=True"]
    _launch(2, root / "two", *flags)
    trainer.train_and_evaluate(_tiny_config(), str(root / "single"))
    return root


@cpu_bitwise
@pytest.mark.slow
def test_two_processes_shard_the_vocabulary(two_shard_the_vocabulary):
    """The run equals one device exactly on XLA:CPU (the data axis is 1: no reordered sums)."""
    root = two_shard_the_vocabulary
    assert np.array_equal(_vectors(root / "two"), _vectors(root / "single"))


@pytest.mark.slow
def test_two_processes_shard_the_vocabulary_within_tolerance(two_shard_the_vocabulary):
    """Each process holds (and saves) half of each table; the vectors are one device's to
    MP_TOLERANCE (bit for bit on XLA:CPU, the test above)."""
    root = two_shard_the_vocabulary
    np.testing.assert_allclose(_vectors(root / "two"), _vectors(root / "single"), **MP_TOLERANCE)
    step = store.latest(root / "two" / "checkpoint")
    shapes = {}  # each piece written once: process 1 holds no replica 0 of step and key
    for p in (0, 1):
        part = json.loads((step / f"process_0000{p}.json").read_text())
        shapes[p] = sorted(tuple(piece["shape"]) for piece in part["pieces"])
    assert shapes == {0: [(), (2,), (30, 8), (30, 8)], 1: [(30, 8), (30, 8)]}


# ---- faults ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sigkilled(tmp_path_factory) -> dict:
    """SIGKILL one process of a 2-process run after a checkpoint, then the same command on
    the same folder: what happened at each stage."""
    workdir = tmp_path_factory.mktemp("killed") / "run"
    run = _Launch(2, f"--workdir={workdir}")
    try:
        deadline = time.monotonic() + LIMIT
        while store.latest(workdir / "checkpoint") is None:
            assert run.proc.poll() is None and time.monotonic() < deadline, run.output()
            time.sleep(0.05)
        pids = run.pids()
        os.kill(pids[1], signal.SIGKILL)
        code = run.wait(timeout=60)
    finally:
        run.kill()
    killed = {
        "code": code,
        "output": run.output()[-3000:],
        "orphans": [pid for pid in pids.values() if _alive(pid)],
        "finished": (workdir / "vectors.bin").exists(),
    }
    return {"workdir": workdir, "killed": killed, "resumed": _launch(2, workdir)}


@cpu_bitwise
@pytest.mark.slow
def test_sigkilled_process_resumes_bit_exactly(two_processes, sigkilled):
    """The resumed run ends with the uninterrupted run's vectors, byte for byte (XLA:CPU)."""
    got = (sigkilled["workdir"] / "vectors.bin").read_bytes()
    assert got == (two_processes / "vectors.bin").read_bytes()


@pytest.mark.slow
def test_sigkilled_process_resumes_within_tolerance(two_processes, sigkilled):
    """SIGKILL one process after a checkpoint: the launcher stops the other, and the same
    command on the same folder resumes and ends near the uninterrupted run's vectors."""
    killed, out = sigkilled["killed"], sigkilled["resumed"]
    assert killed["code"] == 128 + signal.SIGKILL, killed["output"]
    # the survivor: one line, no Gloo traceback
    assert "Traceback" not in killed["output"], killed["output"]
    assert re.search(
        r"\[0\] error: process 0: another process of the run stopped", killed["output"]
    )
    assert not killed["orphans"]  # no orphan
    assert not killed["finished"]  # it did not finish
    assert re.search(r"resumed from .*step_0000000\d\d at step \d+", out), out[-3000:]
    got, want = _vectors(sigkilled["workdir"]), _vectors(two_processes)
    np.testing.assert_allclose(got, want, **MP_TOLERANCE)


@pytest.mark.slow
def test_a_damaged_piece_one_process_reads_falls_back_on_both(two_shard_the_vocabulary, tmp_path):
    """A byte flipped in a piece only process 1 reads (its half of a table; only its
    CRC-32 tells): both processes fall back to the step before, each in one line, the
    damaged folder is kept aside and the run finishes."""
    workdir = tmp_path / "run"
    shutil.copytree(two_shard_the_vocabulary / "two", workdir)
    flags = ["--config.parallel.model_axis=2", "--config.parallel.shard_vocab=True"]
    newest = store.latest(workdir / "checkpoint")
    before = store.committed(workdir / "checkpoint")[-2]
    part = json.loads((newest / "process_00001.json").read_text())
    piece = newest / part["pieces"][0]["file"]
    data = bytearray(piece.read_bytes())
    data[-1] ^= 0xFF
    piece.write_bytes(bytes(data))
    out = _launch(2, workdir, *flags)
    _assert_fell_back(out, newest, before, "process 1: " + str(piece))
    assert np.all(np.isfinite(_vectors(workdir)))


def _assert_fell_back(out: str, damaged: pathlib.Path, to: pathlib.Path | None, why: str):
    """Each process said in one line that ``damaged`` cannot be resumed (``why`` in it)
    and kept it aside, then resumed from ``to`` (None: from step 0 after one line)."""
    for i in range(2):
        said = [x for x in out.splitlines() if x.startswith(f"[{i}] ") and "cannot be" in x]
        assert len(said) == 1 and why in said[0], out[-3000:]
        assert f"kept aside as {damaged.name}.damaged" in said[0], said
        if to is None:
            assert re.search(rf"\[{i}\] .*training starts from step 0", out), out[-3000:]
        else:
            assert re.search(rf"\[{i}\] .*resumed from {to} at step", out), out[-3000:]
    assert (damaged.parent / f"{damaged.name}.damaged").is_dir()  # kept (the run saved anew)
    assert "Traceback" not in out, out[-3000:]


# A piece of the newest step, damaged as a crash or a full disk leaves it.
DAMAGES = {
    "truncated": lambda p: os.truncate(p, p.stat().st_size // 2),
    "empty": lambda p: os.truncate(p, 0),
    "deleted": lambda p: p.unlink(),
}


@pytest.mark.parametrize(
    "damage", [pytest.param(d, marks=[] if d == "truncated" else pytest.mark.slow) for d in DAMAGES]
)
def test_a_damaged_piece_of_the_newest_step_falls_back_on_every_process(
    two_processes, tmp_path, damage
):
    """A piece of the newest step cut short, emptied or deleted: every process says so in
    one line and resumes from the step before (kept), the damaged folder is kept aside
    (renamed) and the run finishes at the uninterrupted run's vectors."""
    workdir = tmp_path / "run"
    shutil.copytree(two_processes, workdir)
    newest = store.latest(workdir / "checkpoint")
    before = store.committed(workdir / "checkpoint")[-2]
    piece = sorted(newest.glob("leaf_*.npy"))[0]
    DAMAGES[damage](piece)
    (workdir / "vectors.bin").unlink()
    out = _launch(2, workdir)
    _assert_fell_back(out, newest, before, str(piece))
    np.testing.assert_allclose(_vectors(workdir), _vectors(two_processes), **MP_TOLERANCE)


def test_a_damaged_only_step_starts_from_step_0_after_one_line(two_processes, tmp_path):
    """The only committed step damaged: every process names why in one line and the run
    starts from step 0, keeping the damaged folder aside, and finishes."""
    workdir = tmp_path / "run"
    shutil.copytree(two_processes, workdir)
    *older, newest = store.committed(workdir / "checkpoint")
    for path in older:
        shutil.rmtree(path)
    piece = sorted(newest.glob("leaf_*.npy"))[0]
    os.truncate(piece, 100)
    out = _launch(2, workdir)
    _assert_fell_back(out, newest, None, str(piece))
    np.testing.assert_allclose(_vectors(workdir), _vectors(two_processes), **MP_TOLERANCE)


def test_sigterm_to_the_launcher_saves_one_step_on_both_and_the_rerun_resumes(tmp_path):
    """SIGTERM to the launcher mid-run (JAX's preemption notifier installed, as in every
    multi-process run): both processes stop at the same step, each with its part of one
    committed checkpoint of that step, the launcher exits 143, and the same command
    resumes from that step."""
    workdir = tmp_path / "run"
    longer = ["--config.synthetic.num_tokens=400000", "--config.checkpoint_every=100000"]
    run = _Launch(2, f"--workdir={workdir}", *longer)
    try:
        deadline = time.monotonic() + LIMIT
        while not re.search(r"\[1\] .* step 50 ", run.output()):
            assert run.proc.poll() is None and time.monotonic() < deadline, run.output()
            time.sleep(0.05)
        os.killpg(run.proc.pid, signal.SIGTERM)  # the launcher's group: a terminal's Ctrl-C
        code = run.wait(timeout=60)
    finally:
        run.kill()
    out = run.output()
    assert code == 128 + signal.SIGTERM, out[-3000:]
    stops = re.findall(r"\[(\d)\] stopped at step (\d+): checkpoint saved", out)
    assert sorted(i for i, _ in stops) == ["0", "1"], out[-3000:]
    step = int(stops[0][1])
    assert stops[1][1] == stops[0][1] and step >= 50, stops
    assert store.latest(workdir / "checkpoint") == store.step_folder(workdir / "checkpoint", step)
    assert "Traceback" not in out, out[-3000:]
    out = _launch(2, workdir, *longer, f"--config.max_steps={step + 10}")
    assert re.search(rf"\[0\] .*resumed from .*step_{step:09d} at step {step}", out), out[-3000:]
    assert json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])["step"] == step + 10


# Process 1 fails as it resumes (before the processes' first collective): a stand-in for a
# corpus, disk or memory error on one host only.
FAIL_ON_1 = """
import runpy, sys, jax
from w2v_jax import errors, resume
real = resume.Checkpoints.resume
def resume_on_0(self, *args, **kwargs):
    if jax.process_index() == 1:
        raise errors.CorpusError("injected: process 1 cannot read its corpus")
    return real(self, *args, **kwargs)
resume.Checkpoints.resume = resume_on_0
sys.argv[0] = "w2v_jax.main"
runpy.run_module("w2v_jax.main", run_name="__main__")
"""


@pytest.mark.parametrize(
    "launcher", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["launcher", "alone"]
)
def test_a_process_failing_before_the_first_collective_ends_its_peer_in_one_line(
    tmp_path, launcher
):
    """Process 1 fails before the first collective, while process 0 waits in it: process 1
    leaves without JAX's shutdown barrier (which held both for 300 s, then aborted), so
    process 0's collective fails at once and it ends in one line, without a traceback, with
    or without the launcher to stop it."""
    command = [sys.executable, "-c", FAIL_ON_1, *TRAIN[3:], f"--workdir={tmp_path / 'run'}"]
    if launcher:
        # A long grace: on a loaded machine the launcher's SIGTERM can reach process 0 before
        # its first collective, where JAX's preemption notifier swallows it; process 0 must
        # still end on its own, in one line, before the SIGKILL.
        run = _Launch(2, command=command, grace=60)
        assert run.wait(timeout=120) == 1
        out = run.output()
    else:
        done = _alone(command, timeout=120)
        assert [p.returncode for p in done] == [1, 1], [p.stderr[-2000:] for p in done]
        out = "".join(f"[{i}] {x}\n" for i, p in enumerate(done) for x in p.stderr.splitlines())
    assert "[1] error: injected: process 1 cannot read its corpus" in out, out[-3000:]
    assert re.search(r"\[0\] error: process 0: another process of the run stopped", out), out
    assert "Traceback" not in out and "Fatal Python error" not in out, out[-3000:]


def _alone(command: list[str], timeout: float) -> list[subprocess.CompletedProcess]:
    """``command`` as processes 0 and 1 of a 2-process run without the launcher: each
    left to end on its own."""
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                *command,
                f"--config.parallel.coordinator=localhost:{port}",
                "--config.parallel.num_processes=2",
                f"--config.parallel.process_id={i}",
                "--config.parallel.local_devices=1",
            ],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    try:
        done = []
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
        return done
    finally:
        for p in procs:
            p.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_launcher_stops_every_process_when_one_fails(tmp_path):
    """Process 1 exits with 3 while process 0 would sleep for minutes: the launcher returns
    3 at once and process 0 is gone."""
    script = (
        "import sys, time; me = int(sys.argv[-1].split('=')[1]); "
        "time.sleep(0.5); sys.exit(3) if me == 1 else time.sleep(300)"
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(LAUNCHER), "--num_processes=2", "--grace_secs=2", "--",
         sys.executable, "-c", script],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert time.monotonic() - start < 30
    pids = [int(p) for p in re.findall(r"is pid (\d+)", proc.stderr)]
    assert len(pids) == 2 and not any(_alive(pid) for pid in pids)


# ---- bad input: one line, nothing left running -----------------------------------------


def test_coordinator_that_never_answers_is_one_line(tmp_path):
    """Process 1 of 2 with no process 0: it gives up after init_timeout_secs, one line."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    proc = subprocess.run(
        [*TRAIN, f"--workdir={tmp_path}", f"--config.parallel.coordinator=localhost:{port}",
         "--config.parallel.num_processes=2", "--config.parallel.process_id=1",
         "--config.parallel.init_timeout_secs=3"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr[-3000:]
    expected = (
        r"error: --config.parallel.coordinator='localhost:\d+': process 1 of 2 could not join "
        r"within parallel.init_timeout_secs=3"
    )
    assert re.match(expected, err[-1]), err[-1]
    assert time.monotonic() - start < 60
    assert not (tmp_path / "config.json").exists()


def test_process_0_without_its_peers_says_it_waits_then_stops_in_one_line(tmp_path):
    """Process 0 of 2 with no process 1: JAX would abort natively (rc 134) at its timeout;
    the watcher logs the wait and ends the process with one line at init_timeout_secs."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [*TRAIN, f"--workdir={tmp_path}", f"--config.parallel.coordinator=localhost:{port}",
         "--config.parallel.num_processes=2", "--config.parallel.process_id=0",
         "--config.parallel.mode=mesh", "--config.parallel.init_timeout_secs=6"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert any(re.match(r"process 0 of 2: waiting for the others at localhost:\d+", x) for x in err)
    assert re.match(
        r"error: --config.parallel.coordinator='localhost:\d+': process 0 of 2 could not join "
        r"within parallel.init_timeout_secs=6", err[-1]
    ), err[-1]  # fmt: skip
    assert "Traceback" not in proc.stderr and "Check failed" not in proc.stderr
    assert not (tmp_path / "config.json").exists()


BAD_PARALLEL = [
    ({"parallel.num_processes": 2}, r"num_processes=2 needs parallel.coordinator='host:port'"),
    ({"parallel.coordinator": "localhost", "parallel.num_processes": 2},
     r"coordinator='localhost' is not host:port"),
    ({"parallel.coordinator": "localhost:1", "parallel.num_processes": 2,
      "parallel.process_id": 2}, r"process_id=2 must be below parallel.num_processes=2"),
    ({"parallel.coordinator": "localhost:1", "parallel.num_processes": 2},
     r"parallel.mode='single': 2 processes run parallel.mode='mesh'"),
    ({"parallel.coordinator": "localhost:1", "parallel.num_processes": 2,
      "parallel.mode": "mesh", "input.mode": "device"}, r"config.input.mode='device'"),
    ({"parallel.shard_vocab": True}, r"shard_vocab=True needs parallel.mode='mesh'"),
    ({"parallel.mode": "mesh", "parallel.model_axis": 2},
     r"model_axis=2 must divide the 1 devices \(1 processes x 1\)"),
    ({"parallel.init_timeout_secs": 0}, r"init_timeout_secs=0 must be an integer >= 1"),
    ({"parallel.coordinator": "localhost:99999", "parallel.num_processes": 2,
      "parallel.mode": "mesh"}, r"coordinator='localhost:99999': port 99999 is not in 1..65535"),
    ({"parallel.coordinator": "localhost:0", "parallel.num_processes": 2,
      "parallel.mode": "mesh"}, r"port 0 is not in 1..65535"),
    ({"parallel.coordinator": ":1234", "parallel.num_processes": 2,
      "parallel.mode": "mesh"}, r"coordinator=':1234' is not host:port"),
]  # fmt: skip


@pytest.mark.parametrize("overrides,match", BAD_PARALLEL, ids=lambda x: str(x)[:50])
def test_bad_parallel_settings_are_one_line_before_joining(tmp_path, overrides, match):
    config = tiny.get_config()
    config.update_from_flattened_dict(overrides)
    with pytest.raises(ValueError, match=match) as info:
        trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run" / "config.json").exists()


def test_mesh_that_does_not_divide_the_batch_or_vocabulary_is_one_line(tmp_path):
    """With 2 simulated devices: a batch the data axis does not divide, and a vocabulary of
    59 words that 2 model shards cannot split."""
    code = (
        "import sys\nfrom w2v_jax import trainer\nfrom w2v_jax.configs import tiny\n"
        "for o in ({'batch_size': 63}, {'parallel.model_axis': 2, 'parallel.shard_vocab':"
        " True, 'synthetic.vocab_size': 59}):\n"
        "    c = tiny.get_config(); c.parallel.mode = 'mesh'; c.update_from_flattened_dict(o)\n"
        "    try:\n        trainer.train_and_evaluate(c, sys.argv[1])\n"
        "    except ValueError as e:\n        print('ERR', e)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "run")],
        cwd=ROOT, env=_env(2), capture_output=True, text=True, timeout=LIMIT,
    )  # fmt: skip
    errors = [x for x in proc.stdout.splitlines() if x.startswith("ERR")]
    assert len(errors) == 2, proc.stdout + proc.stderr[-3000:]
    assert re.search(r"batch_size=63 must be a multiple of the mesh's data axis \(2", errors[0])
    assert re.search(r"shard_vocab=True: .*in_embed.* has 59 rows, which "
                     r"parallel.model_axis=2 does not divide", errors[1])  # fmt: skip
    assert not (tmp_path / "run" / "config.json").exists()


# ---- sharded checkpoints, in one process ---------------------------------------------------


def _sharded_state(shard_vocab: bool = False):
    cfg = update.StepConfig(model="skipgram", loss="neg", k=2, optimizer="adagrad", sparse=True)
    state = update.init_state(jax.random.PRNGKey(0), 6, 4, cfg)
    mesh = placement.make_mesh(1, 1)
    shardings = placement.state_sharding(state, mesh, shard_vocab)
    return jax.device_put(state, shardings), shardings


def _checkpoints(workdir, shardings, manifest=None):
    return resume.Checkpoints(workdir, manifest or {"a": 1}, 100, 10, 0.0, shardings=shardings)


def _equal(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


def test_sharded_checkpoint_round_trip_keeps_the_newest_two(tmp_path):
    state, shardings = _sharded_state()
    ckpt = _checkpoints(tmp_path, shardings)
    ckpt.save(state, (0, 3), 30, 1.5)
    ckpt.save(state._replace(step=state.step + 5), (0, 8), 80, 1.5)
    later = state._replace(step=state.step + 7)
    ckpt.save(later, (0, 10, 2, 1), 100, 1.5, extra={"positions": [[0, 10, 2, 1]]})
    ckpt.wait()
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == [
        "step_000000005", "step_000000007"]  # fmt: skip
    resumed = _checkpoints(tmp_path, shardings).resume(state, override=False)
    assert resumed.position == (0, 10, 2, 1) and resumed.tokens == 100
    assert resumed.initial_loss == 1.5 and resumed.processes == 1
    assert resumed.meta["positions"] == [[0, 10, 2, 1]]
    # Bit equality of saved arrays read back: a property of the file format, not of the
    # backend's arithmetic, so not `cpu_bitwise`.
    for a, b in zip(jax.tree_util.tree_leaves(resumed.state), jax.tree_util.tree_leaves(later),
                    strict=True):  # fmt: skip
        assert a.sharding == b.sharding and np.array_equal(np.asarray(a), np.asarray(b))


def test_crash_during_a_sharded_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    """A writer that dies mid-piece (here: raises after half the bytes), and the folder a
    killed process leaves (no marker, a truncated piece): the previous step loads."""
    state, shardings = _sharded_state()
    ckpt = _checkpoints(tmp_path, shardings)
    ckpt.save(state, (0, 3), 30, None)
    ckpt.wait()

    def dies_half_way(f, data):
        f.write(b"\x93NUMPY half a piece")
        raise OSError("killed")

    monkeypatch.setattr(store, "_write_npy", dies_half_way)
    ckpt.save(state._replace(step=state.step + 5), (0, 8), 80, None)
    with pytest.raises(OSError, match="killed"):
        ckpt.wait()  # the writer's error, raised on the loop's thread
    monkeypatch.undo()
    partial = tmp_path / "checkpoint" / "step_000000009"  # another process's leftovers
    partial.mkdir()
    (partial / "leaf_001.0-6.0-4.npy").write_bytes(b"\x93NUMPY truncated")
    resumed = _checkpoints(tmp_path, shardings).resume(state, override=False)
    assert resumed.position == (0, 3) and int(resumed.state.step) == 0


def test_checkpoint_of_another_layout_resumes_resharded(tmp_path, caplog):
    """Replicated on a mesh -> split along V -> host arrays (one device) -> a mesh again:
    each restore equals the saved arrays exactly and logs one line naming both layouts."""
    state, replicated = _sharded_state(shard_vocab=False)
    _checkpoints(tmp_path, replicated).save(state, (0, 3), 30, None)
    _, by_vocab = _sharded_state(shard_vocab=True)
    with caplog.at_level("INFO"):
        got = _checkpoints(tmp_path, by_vocab).resume(state, override=False)
    assert _equal(got.state, state)
    assert got.state.params["in_embed"].sharding == by_vocab.params["in_embed"]
    assert any(
        re.search(r"resharding step 0: written by 1 process on a data=1 x model=1 mesh with "
                  r"the tables replicated, read by .*sharded along V", r.getMessage())
        for r in caplog.records
    )  # fmt: skip
    host = _checkpoints(tmp_path, None).resume(state, override=False)
    assert isinstance(host.state.params["in_embed"], np.ndarray) and _equal(host.state, state)
    shutil.rmtree(tmp_path / "checkpoint")
    _checkpoints(tmp_path, None).save(jax.device_get(state), (0, 3), 30, None)
    back = _checkpoints(tmp_path, replicated).resume(state, override=False)
    assert _equal(back.state, state) and back.state.step.sharding == replicated.step


def test_checkpoint_of_another_config_or_version_is_one_line(tmp_path):
    state, shardings = _sharded_state()
    _checkpoints(tmp_path, shardings).save(state, (0, 3), 30, None)
    with pytest.raises(resume.ResumeMismatch, match=r"other settings \(a 1 -> 2\)"):
        _checkpoints(tmp_path, shardings, {"a": 2}).resume(state, override=False)
    (tmp_path / "checkpoint.npz").write_bytes(b"")  # what an older w2v_jax wrote
    with pytest.raises(resume.ResumeMismatch, match=r"checkpoint.npz was written by an older"):
        _checkpoints(tmp_path, shardings).resume(state, override=False)


def test_non_finite_shards_never_replace_the_last_good_checkpoint(tmp_path):
    state, shardings = _sharded_state()
    ckpt = _checkpoints(tmp_path, shardings)
    ckpt.save(state, (0, 3), 30, None)
    table = state.params["in_embed"]
    bad = state._replace(
        step=state.step + 1,
        params={**state.params, "in_embed": jax.device_put(table.at[0, 0].set(np.nan),
                                                           table.sharding)},
    )  # fmt: skip
    with pytest.raises(FloatingPointError, match="hold NaN or inf"):
        ckpt.save(bad, (0, 4), 40, None)
    ckpt.wait()
    assert store.latest(tmp_path / "checkpoint").name == "step_000000000"
