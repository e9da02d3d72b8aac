r"""One process's host input: our chunked pipeline against Grain, measured side by side.

Issue 22 asks whether Grain (PyPI ``grain``: per-process sharding, checkpointable
iterators, worker processes) should be the source of each process's chunks. Both sides
build fixed-shape batches for process p of N from the same chunks of whole sentences
(`windows.make_plan`: subsampling, dynamic windows, rows and the bounded shuffle per
chunk, each chunk seeded by (seed, epoch, first token)):

- ``ours``: `input_pipeline.iterate_batches(..., process_index=p, process_count=N)`;
  ``ours_thread`` adds its `prefetch` thread (the trainer's ``prefetch=2``);
- ``grain``: ``grain.MapDataset.range(K)`` over the chunk indices of the whole corpus's
  plan, cut to this process's contiguous share (`grain.sharding.ShardOptions`, the
  (index, count) that ``ShardByJaxProcess`` reads from JAX), ``.repeat(epochs)``,
  ``.map_with_index`` to the chunk's rows, ``.to_iter_dataset(ReadOptions)``,
  ``RebatchIterDataset`` to fixed rows and a map that pads the last batch; ``grain_thread``
  reads chunks on one Grain thread, ``grain_mp1`` / ``grain_mp2`` add ``mp_prefetch``
  with 1 / 2 worker processes.

Measured, every variant alternated with the others in one run (A/B interleaved, the
order rotated each repeat), median and range over ``--repeats``:

- rows/s of one process's epoch for each N (process p simulated by its index, one at a
  time; the iterator's creation, plan included, and its first batch are in the time);
- the time to the first batch of a fresh iterator, and when resuming at ``--resume_at``
  of an epoch: ours from the `input_pipeline.Position` the previous `Item` carried (what
  a checkpoint saves), Grain from a fresh pipeline given the iterator state saved there
  (``get_state`` / ``set_state``), and ``one_chunk``, the O(1) resume by (chunk, row):
  the plan and the chunks the batch needs, nothing else;
- peak RSS of each variant's process tree (workers included), one epoch at N = 1, each in
  its own process; lines of code; whether the rows are identical.

  W2V_DATA_DIR=/work/shared/data python experiments/bench_input.py

Prints markdown tables and, as its last line, one JSON object; writes both under
``--output_dir``. Without grain installed it measures our side only (Grain's figures
None, ``grain_note`` says why). ``--quick`` is a seconds-long smoke size for tests.

Shape letters: B rows per batch, C context slots, K chunks, R rows of one chunk.
"""

from __future__ import annotations

import ast
import datetime
import functools
import hashlib
import inspect
import io
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import threading
import time
import tokenize
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
from absl import flags
from ml_collections import config_flags

from w2v_jax import cli, errors
from w2v_jax.configs import default
from w2v_jax.data import corpus, input_pipeline, prefetch, windows

try:
    import grain
    import grain.experimental
except ImportError as error:  # optional: our side is measured alone
    grain, GRAIN_NOTE = None, f"grain is not installed ({error}); measured our side only"
else:
    GRAIN_NOTE = ""

_CONFIG = config_flags.DEFINE_config_dict("config", default.get_config())  # --config.x=y
_CORPUS = flags.DEFINE_string("corpus", "text8-head", "Corpus name or path (load_corpus).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", os.environ.get("W2V_DATA_DIR"), "Directory of the corpora (W2V_DATA_DIR)."
)
_PROCESS_COUNTS = flags.DEFINE_list("process_counts", ["1", "2", "4"], "N to simulate.")
_WORKERS = flags.DEFINE_list("workers", ["1", "2"], "Grain mp_prefetch worker counts.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Interleaved repeats.", lower_bound=1)
_RESUME_AT = flags.DEFINE_float("resume_at", 0.9, "Resume point, fraction of an epoch.")
_CHUNK_TOKENS = flags.DEFINE_integer("chunk_tokens", 1 << 16, "Tokens per chunk.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", "experiments/results/bench_input", "Where results.json and table.md go."
)
_QUICK = flags.DEFINE_bool(
    "quick", False, "Smoke size: 1 repeat, N = 1, 2, no Grain worker processes (~2 s each)."
)
_MEMORY_OF = flags.DEFINE_string("memory_of", "", "Internal: one variant's peak RSS run.")


class Setup(NamedTuple):
    """What every variant shares: the corpus arrays and the pipeline settings."""

    ids: np.ndarray  # int32 [N] the corpus (OOV removed)
    offsets: np.ndarray  # int64 [S + 1] sentence bounds
    counts: np.ndarray  # int64 [V]
    options: input_pipeline.PipelineOptions  # the default config's, resolved
    chunk_tokens: int


# --- Our side ------------------------------------------------------------------------


def ours_items(setup: Setup, p: int, n: int, start=None) -> Iterator[input_pipeline.Item]:
    """Process p of n's `Item`s of one epoch from `input_pipeline.iterate_batches`."""
    o = setup.options
    return input_pipeline.iterate_batches(
        setup.ids,
        setup.offsets,
        setup.counts,
        layout=o.layout,
        batch_size=o.rows_per_call,
        window=o.window,
        sample=o.sample,
        seed=o.seed,
        epochs=1,
        start=start,
        dynamic_window=o.dynamic_window,
        left_only=o.left_only,
        shuffle_buffer=o.shuffle_buffer,
        process_index=p,
        process_count=n,
        chunk_tokens=setup.chunk_tokens,
    )


def ours(setup: Setup, p: int, n: int) -> Iterator[input_pipeline.Batch]:
    """Process p of n's batches of one epoch (`ours_items`' batches)."""
    return (item.batch for item in ours_items(setup, p, n))


def plan_for(setup: Setup, p: int, n: int) -> windows.Plan:
    """Process p of n's chunk plan, as `iterate_batches` makes it."""
    o = setup.options
    return windows.make_plan(
        setup.ids,
        setup.offsets,
        setup.counts,
        window=o.window,
        sample=o.sample,
        seed=o.seed,
        dynamic_window=o.dynamic_window,
        process_index=p,
        process_count=n,
        chunk_tokens=setup.chunk_tokens,
    )


def chunk_rows(plan: windows.Plan, epoch: int, k: int, options) -> tuple:
    """Chunk k's rows as `input_pipeline` makes them: centres [R], contexts [R, C],
    mask [R, C]."""
    draws, rng, _, _ = plan.chunk(epoch, k)
    rows = windows.make_rows(
        draws,
        layout=options.layout,
        window=plan.window,
        left_only=options.left_only,
        pad_id=plan.vocab_size,
    )
    return windows.shuffle_rows(rng, rows, options.shuffle_buffer)


def one_chunk_resume(setup: Setup, p: int, n: int, chunk: int, row: int):
    """The first batch of an O(1) resume from position (chunk, row) of epoch 0: the plan,
    then chunk ``chunk`` from row ``row`` on and as many later chunks as the batch needs
    (usually none); the padding of an epoch's last batch as in `iterate_batches`."""
    plan, options = plan_for(setup, p, n), setup.options
    size, parts, have = options.rows_per_call, [], 0
    for k in range(chunk, plan.bounds.shape[0] - 1):
        rows = chunk_rows(plan, 0, k, options)
        parts.append(tuple(a[row : row + size - have] for a in rows))
        have, row = have + parts[-1][0].shape[0], 0
        if have == size:
            break
    if have < size:
        slots = parts[0][1].shape[1]
        parts.append(tuple(_padding(size - have, slots, plan.vocab_size)))
    return input_pipeline.Batch(*(np.concatenate(a) for a in zip(*parts, strict=True)))


def _padding(rows: int, slots: int, pad_id: int) -> input_pipeline.Batch:
    """``rows`` padding rows: ids V, masks 0 (`input_pipeline.Batch`)."""
    return input_pipeline.Batch(
        np.full(rows, pad_id, np.int32),
        np.full((rows, slots), pad_id, np.int32),
        np.zeros((rows, slots), np.float32),
    )


# --- Grain's side: our chunks as Grain records -----------------------------------------


def contiguous_share(num_chunks: int, shard) -> slice:
    """Shard ``shard.shard_index`` of ``shard.shard_count`` as one contiguous run of
    chunk indices, the remainder on the first shards (Grain's ``even_split``, which
    0.2.18 does not export)."""
    per, extra = divmod(num_chunks, shard.shard_count)
    i = shard.shard_index
    return slice(per * i + min(i, extra), per * (i + 1) + min(i + 1, extra))


class ChunkRows:
    """Grain ``map_with_index``: record i of the repeated share -> that chunk's rows."""

    def __init__(self, plan: windows.Plan, share: slice, options):
        self.plan, self.share, self.options = plan, share, options

    def __call__(self, index: int, k: int) -> tuple:
        epoch = index // (self.share.stop - self.share.start)
        return chunk_rows(self.plan, epoch, k, self.options)


class PadRows:
    """Grain ``map``: a short (last) batch padded to B rows; a tuple becomes a `Batch`."""

    def __init__(self, size: int, pad_id: int):
        self.size, self.pad_id = size, pad_id

    def __call__(self, rows: tuple) -> input_pipeline.Batch:
        have = rows[0].shape[0]
        if have == self.size:
            return input_pipeline.Batch(*rows)
        pad = _padding(self.size - have, rows[1].shape[1], self.pad_id)
        return input_pipeline.Batch(*(np.concatenate(a) for a in zip(rows, pad, strict=True)))


def _has_rows(rows: tuple) -> bool:
    return rows[0].shape[0] > 0  # Grain's rebatch refuses empty records


def grain_dataset(
    plan: windows.Plan, share: slice, options, *, epochs: int, threads: int, workers: int
):
    """Grain's batches of chunks ``share`` of ``plan``: an ``IterDataset`` of `Batch`.

    ``threads``: Grain threads reading chunks ahead (``ReadOptions``; 0 reads in line);
    ``workers``: ``mp_prefetch`` processes (0: none). An epoch's chunks follow the
    previous epoch's without padding in between (rebatch runs across the boundary).
    """
    ds = grain.MapDataset.range(plan.bounds.shape[0] - 1)[share].repeat(epochs)
    ds = ds.map_with_index(ChunkRows(plan, share, options)).filter(_has_rows)
    read = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)
    it = ds.to_iter_dataset(read)
    if workers:
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    it = grain.experimental.RebatchIterDataset(it, options.rows_per_call)
    return it.map(PadRows(options.rows_per_call, plan.vocab_size))


def grain_share(setup: Setup, p: int, n: int, **kwargs):
    """Process p of n's Grain pipeline: Grain's sharding over the whole corpus's chunks."""
    plan = plan_for(setup, 0, 1)
    shard = grain.sharding.ShardOptions(shard_index=p, shard_count=n)
    share = contiguous_share(plan.bounds.shape[0] - 1, shard)
    return grain_dataset(plan, share, setup.options, epochs=1, **kwargs)


def grain_on_our_plan(setup: Setup, p: int, n: int, **kwargs):
    """Grain over the chunks of process p's own plan (our sharding, no Grain sharding)."""
    plan = plan_for(setup, p, n)
    share = slice(0, plan.bounds.shape[0] - 1)
    return grain_dataset(plan, share, setup.options, epochs=1, **kwargs)


# --- The variants ----------------------------------------------------------------------


def variants(workers: list[int]) -> dict[str, dict]:
    """Name -> how it is built: ours (thread or not), grain (threads, workers)."""
    out = {"ours": {"thread": False}, "ours_thread": {"thread": True}}
    if grain is None:
        return out
    out["grain"] = {"threads": 0, "workers": 0}
    out["grain_thread"] = {"threads": 1, "workers": 0}
    for w in workers:
        out[f"grain_mp{w}"] = {"threads": 0, "workers": w}
    return out


class Open:
    """A variant's iterator of `Batch`es for process p of n, closed after use."""

    def __init__(self, setup: Setup, name: str, spec: dict, p: int, n: int, state=None):
        self.close = lambda: None
        if name.startswith("ours"):
            batches = ours(setup, p, n)
            if spec["thread"]:
                batches = prefetch.prefetch(batches, size=2)
                self.close = batches.close
            self.iterator = batches
            return
        it = iter(grain_share(setup, p, n, **spec))
        if state is not None:
            it.set_state(state)
        self.iterator, self.close = it, it.close

    def __enter__(self) -> Iterator[input_pipeline.Batch]:
        return self.iterator

    def __exit__(self, *exc_info) -> None:
        self.close()


def digest(batch: input_pipeline.Batch) -> str:
    """A batch's fingerprint: every field's bytes, dtype and shape."""
    h = hashlib.sha1()
    for a in batch:
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def real_rows(batch: input_pipeline.Batch) -> int:
    """Rows that are not padding (a mask with at least one 1)."""
    return int(np.count_nonzero(batch.mask.any(axis=1)))


def timed_pass(make: Callable[[], Open]) -> tuple[float, float, int]:
    """(seconds to the first batch, seconds for the whole pass, batches), creation timed."""
    start = time.perf_counter()
    first, batches = None, 0
    with make() as iterator:
        for _ in iterator:
            if first is None:
                first = time.perf_counter() - start
            batches += 1
    return first or 0.0, time.perf_counter() - start, batches


def reference(setup: Setup, p: int, n: int) -> dict:
    """Untimed pass of ours: the batches' digests, real rows, the (chunk, row) of every
    batch start (for the O(1) resume) and the `Position` after each batch (what a
    checkpoint saves)."""
    plan, options = plan_for(setup, p, n), setup.options
    sizes = [chunk_rows(plan, 0, k, options)[0].shape[0] for k in range(plan.bounds.shape[0] - 1)]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    items = list(ours_items(setup, p, n))
    size = options.rows_per_call
    where = []
    for b in range(len(items)):
        k = int(np.searchsorted(starts, b * size, side="right")) - 1
        where.append((k, b * size - int(starts[k])))
    return {
        "digests": [digest(item.batch) for item in items],
        "rows": sum(real_rows(item.batch) for item in items),
        "where": where,
        "positions": [item.position for item in items],  # after each batch
    }


def same_rows(setup: Setup, specs: dict, counts: list[int]) -> dict:
    """For each N: are every variant's batches ours, bit for bit, for every process? And
    Grain over our per-process plans (our sharding)? Saves what the timing needs."""
    out = {}
    for n in counts:
        refs = [reference(setup, p, n) for p in range(n)]
        result = {"rows_per_process": [r["rows"] for r in refs], "refs": refs}
        for name, spec in specs.items():
            got = []
            for p in range(n):
                with Open(setup, name, spec, p, n) as it:
                    got.append([digest(b) for b in it])
            result[name] = all(g == r["digests"] for g, r in zip(got, refs, strict=True))
            if name == "grain":
                result["grain_rows_per_process"] = [len(g) for g in got]
        if grain is not None:
            result["grain_on_our_plan"] = all(
                [digest(b) for b in grain_on_our_plan(setup, p, n, threads=0, workers=0)]
                == refs[p]["digests"]
                for p in range(n)
            )
        out[n] = result
    return out


def _rotate(names: list[str], r: int) -> list[str]:
    return names[r % len(names) :] + names[: r % len(names)]


def throughput(setup: Setup, specs: dict, counts: list[int], checks: dict, repeats: int):
    """Interleaved: per repeat, per N and p, every variant once. Returns
    {name: {n: [(first_s, seconds, rows/s), ...]}}."""
    out = {name: {n: [] for n in counts} for name in specs}
    for r in range(repeats):
        for n in counts:
            for p in range(n):
                rows = checks[n]["refs"][p]["rows"]
                for name in _rotate(list(specs), r + p):
                    spec = specs[name]
                    make = functools.partial(Open, setup, name, spec, p, n)
                    first, seconds, _ = timed_pass(make)
                    out[name][n].append((first, seconds, rows / seconds))
    return out


def resume_costs(
    setup: Setup, specs: dict, counts: list[int], checks: dict, repeats: int, at: float
):
    """Seconds to the first batch when resuming process 0 at ``at`` of an epoch,
    interleaved; and whether that batch is the one the same pipeline makes without the
    interruption (ours and one_chunk: our batch b; Grain: its own batch b, which at N > 1
    may differ from ours where its shard's edge differs, see `same_rows`)."""
    out, same = {}, {}
    for n in counts:
        ref = checks[n]["refs"][0]
        b = max(int(at * len(ref["digests"])), 1)
        chunk, row = ref["where"][b]
        makers = {
            "ours": functools.partial(_ours_resume, setup, n, ref["positions"][b - 1]),
            "one_chunk": functools.partial(one_chunk_resume, setup, 0, n, chunk, row),
        }
        wanted = dict.fromkeys(makers, ref["digests"][b])
        for name, spec in specs.items():
            if name.startswith("grain"):
                with Open(setup, name, spec, 0, n) as it:
                    for _ in range(b):
                        next(it)
                    state = it.get_state()
                    wanted[name] = digest(next(it))
                makers[name] = functools.partial(_grain_resume, setup, name, spec, n, state)
        times = {name: [] for name in makers}
        same[n] = {"batch": b, "of": len(ref["digests"]), "chunk": chunk, "row": row}
        for r in range(repeats):
            for name in _rotate(list(makers), r):
                start = time.perf_counter()
                batch = makers[name]()
                times[name].append(time.perf_counter() - start)
                same[n][name] = digest(batch) == wanted[name]
        out[n] = times
    return out, same


def _ours_resume(setup: Setup, n: int, position) -> input_pipeline.Batch:
    """Ours: `iterate_batches` from the `Position` saved after the previous batch, to its
    first batch."""
    return next(ours_items(setup, 0, n, start=position)).batch


def _grain_resume(setup: Setup, name: str, spec: dict, n: int, state) -> input_pipeline.Batch:
    """Grain: a fresh pipeline, the saved iterator state, its first batch."""
    with Open(setup, name, spec, 0, n, state=state) as it:
        return next(it)


# --- Memory and code size --------------------------------------------------------------


def _tree_rss(root: int) -> int:
    """Resident bytes of process ``root`` and all its descendants (Linux /proc)."""
    parent, rss = {}, {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/statm") as f:
                resident = int(f.read().split()[1])
        except OSError:  # it ended meanwhile
            continue
        parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        rss[int(entry)] = resident * page
    tree, frontier = {root}, [root]
    while frontier:
        kids = [pid for pid, ppid in parent.items() if ppid in frontier and pid not in tree]
        tree.update(kids)
        frontier = kids
    return sum(rss.get(pid, 0) for pid in tree)


def measure_memory(setup: Setup, name: str, spec: dict) -> dict:
    """One epoch of process 0 of 1 while a thread samples the process tree's RSS."""
    baseline = _tree_rss(os.getpid())
    peak, stop = [baseline], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss(os.getpid()))
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    timed_pass(functools.partial(Open, setup, name, spec, 0, 1))
    stop.set()
    sampler.join()
    return {"peak_rss_bytes": peak[0], "baseline_rss_bytes": baseline}


def memory(specs: dict, argv: list[str]) -> dict:
    """Each variant's peak RSS, each in a fresh process of this script (``--memory_of``)."""
    out = {}
    for name in specs:
        done = subprocess.run(
            [sys.executable, __file__, *argv[1:], f"--memory_of={name}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"memory run of {name} failed:\n{done.stderr[-3000:]}")
        out[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def code_lines(objects) -> int:
    """Lines holding code in the sources of ``objects`` (functions, classes, modules):
    no blank, comment-only or docstring lines."""
    total = 0
    for obj in objects:
        source = inspect.getsource(obj)
        docs = set()
        for node in ast.walk(ast.parse(source)):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
                if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                    docs.update(range(body[0].lineno, body[0].end_lineno + 1))
        skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT}
        skip |= {tokenize.DEDENT, tokenize.ENCODING, tokenize.ENDMARKER}
        lines = set()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type not in skip:
                lines.update(range(tok.start[0], tok.end[0] + 1))
        total += len(lines - docs)
    return total


def code_sizes() -> dict:
    """Lines of code of what each side needs beyond the shared chunk maths (windows.py)."""
    names = ("_epoch", "_exactly", "iterate_batches")
    ours_objects = [getattr(input_pipeline, x) for x in names if hasattr(input_pipeline, x)]
    out = {
        "ours": code_lines([*ours_objects, prefetch]),
        "ours_counts": [*(f"input_pipeline.{o.__name__}" for o in ours_objects), "prefetch"],
        "shared_windows_py": code_lines([windows]),
        "grain_adapter": None,
        "grain_package": None,
    }
    if grain is not None:
        adapter = [contiguous_share, ChunkRows, PadRows, _has_rows, grain_dataset, grain_share]
        out["grain_adapter"] = code_lines(adapter)
        out["grain_adapter_counts"] = [o.__name__ for o in adapter]
        root = pathlib.Path(grain.__file__).parent
        files = [f for f in root.rglob("*.py") if not f.name.endswith("_test.py")]
        out["grain_package"] = sum(len(f.read_text().splitlines()) for f in files)
    return out


# --- Report ----------------------------------------------------------------------------


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _cell(s: dict | None, scale: float, digits: int) -> str:
    if s is None:
        return "—"
    return (
        f"{s['median'] * scale:.{digits}f} "
        f"({s['min'] * scale:.{digits}f}–{s['max'] * scale:.{digits}f})"
    )


def tables(result: dict) -> str:
    """The markdown tables of a result."""
    names, counts = result["variants"], result["process_counts"]
    lines = [f"Command: `{result['command']}`", ""]
    lines += [
        "Rows/s per process, millions, median (min–max) over repeats and processes:",
        "",
        "| variant | " + " | ".join(f"N = {n}" for n in counts) + " | first batch (ms), N = 1 |",
        "| --- |" + " --- |" * (len(counts) + 1),
    ]
    for name in names:
        t = result["throughput"][name]
        cells = [_cell(t[str(n)]["rows_per_s"], 1e-6, 2) for n in counts]
        first = _cell(t[str(counts[0])]["first_batch_s"], 1e3, 0)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {first} |")
    lines += ["", f"First batch when resuming at {result['resume_at']:.0%} of an epoch, ms:", ""]
    resume_names = list(result["resume"][str(counts[0])])
    lines += [
        "| N | batch | " + " | ".join(resume_names) + " |",
        "| --- | --- |" + " --- |" * len(resume_names),
    ]
    for n in counts:
        r, at = result["resume"][str(n)], result["resume_point"][str(n)]
        cells = [_cell(r[x], 1e3, 1) for x in resume_names]
        lines.append(f"| {n} | {at['batch']} of {at['of']} | " + " | ".join(cells) + " |")
    lines += ["", "Peak RSS, one epoch at N = 1 (process tree, MB; corpus loaded before):", ""]
    lines += ["| variant | peak | above baseline |", "| --- | --- | --- |"]
    for name in names:
        m = result["memory"][name]
        lines.append(
            f"| {name} | {m['peak_rss_bytes'] / 2**20:.0f} | "
            f"{(m['peak_rss_bytes'] - m['baseline_rss_bytes']) / 2**20:.0f} |"
        )
    code = result["lines_of_code"]
    lines += [
        "",
        f"Lines of code: ours {code['ours']} (batching, resume skip, prefetch thread); "
        f"Grain adapter {code['grain_adapter']} plus the grain package "
        f"({code['grain_package']} lines of Python); "
        f"shared windows.py {code['shared_windows_py']}.",
        "",
        "Same rows as ours: "
        + "; ".join(
            f"N = {n}: " + ", ".join(f"{k} {v}" for k, v in result["identical"][str(n)].items())
            for n in counts
        ),
    ]
    return "\n".join(lines) + "\n"


def load(corpus_name: str, data_dir: str | None, chunk_tokens: int) -> Setup:
    """The corpus and the default config's pipeline settings."""
    from w2v_jax import settings  # only here: grain's worker processes import this script

    config = cli.load_config(_CONFIG)
    options = settings.resolve(config).pipeline
    # Sentences are cut where the corpus is loaded, as the trainer loads it.
    length = config.corpus.max_sentence_length
    data = corpus.load_corpus(corpus_name, data_dir=data_dir, max_sentence_length=length)
    ids = np.asarray(data.ids, np.int32)
    return Setup(ids, np.asarray(data.offsets, np.int64), data.vocab.counts, options, chunk_tokens)


def main(argv) -> None:
    if len(argv) > 1:
        raise errors.ConfigError(f"unexpected arguments {argv[1:]}")
    if not 0 < _RESUME_AT.value < 1:
        raise errors.ConfigError(f"--resume_at must lie in (0, 1), got {_RESUME_AT.value}")
    quick = _QUICK.value
    counts = [1, 2] if quick else [int(x) for x in _PROCESS_COUNTS.value]
    workers = [] if quick else [int(x) for x in _WORKERS.value if x]
    repeats = 1 if quick else _REPEATS.value
    setup = load(_CORPUS.value, _DATA_DIR.value, _CHUNK_TOKENS.value)
    specs = variants(workers)
    if _MEMORY_OF.value:
        print(json.dumps(measure_memory(setup, _MEMORY_OF.value, specs[_MEMORY_OF.value])))
        return
    load_before = os.getloadavg()
    checks = same_rows(setup, specs, counts)
    timing = throughput(setup, specs, counts, checks, repeats)
    resume, resume_point = resume_costs(setup, specs, counts, checks, repeats, _RESUME_AT.value)
    o = setup.options
    result = {
        "command": " ".join(["python", "experiments/bench_input.py", *sys.argv[1:]]),
        "corpus": _CORPUS.value,
        "tokens": int(setup.ids.shape[0]),
        "settings": {
            "layout": o.layout,
            "rows_per_call": o.rows_per_call,
            "window": o.window,
            "sample": o.sample,
            "dynamic_window": o.dynamic_window,
            "shuffle_buffer": o.shuffle_buffer,
            "seed": o.seed,
            "chunk_tokens": setup.chunk_tokens,
        },
        "process_counts": counts,
        "repeats": repeats,
        "variants": list(specs),
        "throughput": {
            name: {
                str(n): {
                    "rows_per_s": _stats([t[2] for t in runs]),
                    "first_batch_s": _stats([t[0] for t in runs]),
                    "seconds": _stats([t[1] for t in runs]),
                }
                for n, runs in by_n.items()
            }
            for name, by_n in timing.items()
        },
        "resume_at": _RESUME_AT.value,
        "resume": {str(n): {k: _stats(v) for k, v in r.items()} for n, r in resume.items()},
        "resume_point": {str(n): v for n, v in resume_point.items()},
        "identical": {
            str(n): {k: v for k, v in c.items() if isinstance(v, bool)} for n, c in checks.items()
        },
        "rows_per_process": {str(n): c["rows_per_process"] for n, c in checks.items()},
        "grain_batches_per_process": {
            str(n): c.get("grain_rows_per_process") for n, c in checks.items()
        },
        "memory": memory(specs, sys.argv),
        "lines_of_code": code_sizes(),
        "grain_version": None if grain is None else grain.__version__,
        "grain_note": GRAIN_NOTE,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    table = tables(result)
    out = pathlib.Path(_OUTPUT_DIR.value)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "table.md").write_text(table)
    print(table)
    print(json.dumps(result))


if __name__ == "__main__":
    cli.run(main)
