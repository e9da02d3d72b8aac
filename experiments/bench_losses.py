r"""Step time of every loss against the vocabulary size V and the samples k (issue 7, targets 2, 3).

  python experiments/bench_losses.py                                   # the full grid
  python experiments/bench_losses.py --vocab_sizes=10000 --ks=5 --steps=5   # a quick look

For each loss (softmax, sampled_softmax, nce, neg, hs), each V in ``--vocab_sizes``
(synthetic Zipf counts, exponent ``--zipf_exponent``) and each k in ``--ks`` (ignored by
softmax and hs), it builds `update.init_state`, the layer's constants
(`output_layers.constants_for`, ns_exponent 0.75: noise alias table and log q, or the
Huffman arrays) and ``--num_batches`` fixed random batches (`input_pipeline.Batch`:
``--batch_size`` Zipf centre words x C = 2·``--window`` context slots, a fraction
``--valid_fraction`` of them valid), and times `runners.jit_step` (word2vec's sparse
SGD, state donated) over ``--steps`` steps after two warm-up steps, ``--repeats`` times;
the median is reported as ms/step and pairs/s (valid slots per step / step time).
Batches are on the device before timing, so no host work is timed. The trainer's malloc
policy (`host_memory.keep_freed_memory`) is applied first, as in training
(``--nokeep_freed_memory``: glibc's default, under which k = 25 steps page-fault their
temporaries and cost ~3x more).
A configuration whose first step is slow gets fewer
timed steps (at least one), so that it costs about ``--budget_s`` seconds.

The sampled losses run the fused kernels with ``share="row"`` (one set of k samples per
centre word); hs runs its fused kernel. The softmax runs at every D in ``--dims`` (the
others at the first) with a streaming logsumexp over vocabulary blocks: V is split into
equal blocks of at most ``--chunk_size`` rows, so no more than one [E, chunk] logits block
exists (E = examples per step, B·C for skip-gram; padding slots are computed too). Its
FLOP count is 6·E·V·D (forward logits and the two backward matmuls; the rematerialised
forward of the checkpointed block is not counted), and its throughput is reported as a
fraction of this machine's float32 matmul peak, measured in the same run by a plain jitted
``jnp.dot`` of the matching shape [E, D] x [D, chunk]; a square 2048³ product is measured
too, for reference.

Configurations whose estimated memory exceeds ``--memory_fraction`` of the available RAM
are skipped with a note (the softmax at large V needs a dense [V, D] gradient and a
padded copy of the table beside the two tables).

Prints a table; the last stdout line is one JSON object: ``rows`` (one per configuration),
``peak_gflops`` (per matched shape), ``square_peak_gflops``, ``targets`` (the ratios of
issue 7: sampled-loss time V_max / V_min, hs growth against its tree depth, NCE-k vs
softmax time per pair, softmax fraction of peak), settings, date and machine.
``--plot=PATH`` also draws time per pair against V and against k
(`figures.cost_figure`); ``--plot_from=A.json,B.json --plot=PATH`` times nothing and
draws (and prints) the runs merged, each configuration from the run with its lowest median
(timings on a shared machine can differ by 3x between runs).
"""

import datetime
import gc
import json
import math
import os
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from w2v_jax import cli
from w2v_jax.analysis import figures
from w2v_jax.data import input_pipeline
from w2v_jax.model import output_layers, word2vec
from w2v_jax.parallel import host_memory
from w2v_jax.step import runners, update

_LOSSES = flags.DEFINE_list("losses", list(output_layers.NAMES), "Losses to time.")
_VOCAB_SIZES = flags.DEFINE_list("vocab_sizes", ["10000", "71290", "1000000"], "Vocabulary sizes.")
_KS = flags.DEFINE_list("ks", ["5", "25"], "Samples per centre word (sampled losses).")
_DIMS = flags.DEFINE_list(
    "dims", ["100", "300"], "Dims; softmax runs at each, others at the first."
)
_MODEL = flags.DEFINE_enum("model", "skipgram", list(word2vec.MODELS), "skipgram or cbow.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 1024, "Centre words (rows) per step.")
_WINDOW = flags.DEFINE_integer("window", 5, "Window; C = 2 * window context slots per row.")
_VALID = flags.DEFINE_float("valid_fraction", 0.6, "Share of valid context slots.")
_CHUNK = flags.DEFINE_integer("chunk_size", 8192, "Softmax: largest vocabulary block.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per repeat.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats; the median is reported.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 8, "Distinct batches, cycled.")
_BUDGET = flags.DEFINE_float("budget_s", 30.0, "About this many timed seconds per config.")
_ZIPF = flags.DEFINE_float("zipf_exponent", 1.0, "counts[r] ∝ (r + 1)^-s.")
_LR = flags.DEFINE_float("lr", 1e-3, "Learning rate of the timed steps (small: stays finite).")
_MEMORY_FRACTION = flags.DEFINE_float("memory_fraction", 0.7, "Skip above this share of RAM.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the batches and the initialisation.")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write the JSON object here.")
_PLOT = flags.DEFINE_string("plot", None, "Also draw time per pair against V and k (PNG).")
_PLOT_FROM = flags.DEFINE_list(
    "plot_from",
    [],
    "Time nothing: merge these output JSONs (per configuration, the run with the lowest "
    "median) and draw --plot from them.",
)
_KEEP_FREED = flags.DEFINE_bool(
    "keep_freed_memory",
    True,
    "The trainer's malloc policy (host_memory.py), as training runs.",
)

GB = 1 << 30


def zipf_counts(vocab_size: int, exponent: float) -> np.ndarray:
    """int64 [V] Zipf-like counts, most frequent first, at least 1."""
    ranks = np.arange(1, vocab_size + 1, dtype=np.float64)
    return np.maximum(np.floor(1e9 * ranks**-exponent), 1).astype(np.int64)


def make_batches(counts: np.ndarray, rng: np.random.Generator) -> list[input_pipeline.Batch]:
    """Fixed random batches on the device: Zipf centres and contexts, masked slots zeroed."""
    p = counts / counts.sum()
    b, c, n = _BATCH_SIZE.value, 2 * _WINDOW.value, _NUM_BATCHES.value
    centres = rng.choice(len(counts), size=(n, b), p=p).astype(np.int32)
    contexts = rng.choice(len(counts), size=(n, b, c), p=p).astype(np.int32)
    mask = (rng.random((n, b, c)) < _VALID.value).astype(np.float32)
    contexts = np.where(mask > 0, contexts, 0).astype(np.int32)
    return [
        jax.device_put(input_pipeline.Batch(centres[i], contexts[i], mask[i])) for i in range(n)
    ]


def softmax_chunk(vocab_size: int) -> int | None:
    """Equal blocks of at most --chunk_size rows (a multiple of 8); None: one block."""
    if vocab_size <= _CHUNK.value:
        return None
    blocks = math.ceil(vocab_size / _CHUNK.value)
    return 8 * math.ceil(vocab_size / blocks / 8)


def examples_per_step() -> int:
    return _BATCH_SIZE.value * (2 * _WINDOW.value if _MODEL.value == "skipgram" else 1)


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo, else physical memory."""
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def estimate_bytes(loss: str, vocab_size: int, dim: int, depth: int) -> int:
    """Rough peak bytes of one configuration: tables, aux, the step's temporaries."""
    table = 4 * vocab_size * dim
    total = 2 * table
    if loss == "softmax":  # dense [V, D] gradient, padded table copy, new table; logits blocks
        chunk = softmax_chunk(vocab_size) or vocab_size
        total += 3 * table + 4 * 4 * examples_per_step() * chunk
    elif loss == "hs":
        total += 2 * 12 * vocab_size * depth  # host tree + device aux
    else:
        total += 2 * 12 * vocab_size
    return total


def time_calls(fn, args_at, steps: int, repeats: int, budget: float):
    """Seconds per call of ``fn(*args_at(i, carry))``: (median, min, max) over repeats, the
    steps and repeats used, and the last result.

    ``carry`` is the previous call's result (None at first), so a donated state can be
    threaded through. Two warm-up calls come first: the compiling one, and one timed alone
    that sizes the run to about ``budget`` seconds (and is the measurement if slower).
    """
    carry = fn(*args_at(0, None))
    jax.block_until_ready(carry)
    start = time.perf_counter()
    carry = fn(*args_at(1, carry))
    jax.block_until_ready(carry)
    one = max(time.perf_counter() - start, 1e-9)
    if one >= budget:  # a slow configuration: the sizing call is the measurement
        return (one, one, one), 1, 1, carry
    repeats = max(1, min(repeats, int(budget / one)))
    steps = max(1, min(steps, int(budget / (one * repeats))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(steps):
            carry = fn(*args_at(i, carry))
        jax.block_until_ready(carry)
        times.append((time.perf_counter() - start) / steps)
    return (statistics.median(times), min(times), max(times)), steps, repeats, carry


def matmul_gflops(e: int, d: int, n: int, key: jax.Array) -> float:
    """GFLOP/s of a plain jitted ``jnp.dot`` of [e, d] x [d, n] float32."""
    a = jax.random.normal(key, (e, d), jnp.float32)
    b = jax.random.normal(jax.random.fold_in(key, 1), (d, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    (t, _, _), _, _, _ = time_calls(
        lambda x, y: dot(x, y), lambda i, c: (a, b), _STEPS.value, _REPEATS.value, _BUDGET.value
    )
    return 2 * e * d * n / t / 1e9


def time_loss(loss, vocab_size, k, dim, batches, aux, key) -> dict:
    """One configuration: ms/step, pairs/s (and the softmax's GFLOP/s)."""
    chunk = softmax_chunk(vocab_size) if loss == "softmax" else None
    cfg = update.StepConfig(
        model=_MODEL.value,
        loss=loss,
        k=k or 1,
        share="row" if output_layers.get(loss).sampled else "pair",
        chunk_size=chunk,
    )
    state = update.init_state(key, vocab_size, dim, cfg)
    aux = jax.device_put(aux)
    step = runners.jit_step(cfg)
    lr = np.float32(_LR.value)

    def call(state, batch):
        return step(state, batch, aux, lr)

    def args_at(i, carry):
        return (state if carry is None else carry[0]), batches[i % len(batches)]

    (t, t_min, t_max), steps, repeats, (state, metrics) = time_calls(
        call, args_at, _STEPS.value, _REPEATS.value, _BUDGET.value
    )
    pairs = float(np.mean([np.sum(np.asarray(b.mask)) for b in batches]))
    row = {
        "loss": loss,
        "vocab_size": vocab_size,
        "k": k,
        "dim": dim,
        "chunk": chunk,
        "batch_size": _BATCH_SIZE.value,
        "examples_per_step": examples_per_step(),
        "pairs_per_step": pairs,
        "ms_per_step": 1e3 * t,
        "ms_min": 1e3 * t_min,
        "ms_max": 1e3 * t_max,
        "pairs_per_s": pairs / t,
        "steps": steps,
        "repeats": repeats,
        "finite": bool(metrics["finite"]),
    }
    if loss == "softmax":
        row["gflops"] = 6 * examples_per_step() * vocab_size * dim / t / 1e9
    return row


def targets(rows: list[dict]) -> dict:
    """Issue 7's ratios from whatever the grid covered (sampled losses, hs: first dim)."""
    done = [r for r in rows if "ms_per_step" in r]
    dim0 = int(_DIMS.value[0])

    def find(loss, v, k=None):
        wanted = (loss, v, k, dim0)
        return next(
            (r for r in done if (r["loss"], r["vocab_size"], r["k"], r["dim"]) == wanted), None
        )

    sizes = sorted({r["vocab_size"] for r in done})
    out = {"time_ratio_vmax_vmin": {}, "softmax_per_pair_vs_nce": {}, "softmax_fraction": {}}
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        for loss in ("sampled_softmax", "nce", "neg", "hs"):
            for k in [None] if loss == "hs" else [int(k) for k in _KS.value]:
                a, b = find(loss, lo, k), find(loss, hi, k)
                if a and b:
                    name = loss if k is None else f"{loss}-{k}"
                    out["time_ratio_vmax_vmin"][name] = b["ms_per_step"] / a["ms_per_step"]
        a, b = find("hs", lo), find("hs", hi)
        if a and b:
            out["hs_depth_ratio_vmax_vmin"] = b["hs_depth"] / a["hs_depth"]
            out["log_vocab_ratio_vmax_vmin"] = math.log(hi) / math.log(lo)
        a, b = find("softmax", lo), find("softmax", hi)
        if a and b:
            out["softmax_time_ratio_vmax_vmin"] = b["ms_per_step"] / a["ms_per_step"]
            out["vocab_ratio_vmax_vmin"] = hi / lo
    for v in sizes:
        soft = find("softmax", v)
        for k in [int(k) for k in _KS.value]:
            nce = find("nce", v, k)
            if soft and nce:
                out["softmax_per_pair_vs_nce"][f"nce-{k}@{v}"] = (
                    soft["ms_per_step"] / soft["pairs_per_step"]
                ) / (nce["ms_per_step"] / nce["pairs_per_step"])
    for r in done:
        if r["loss"] == "softmax":
            out["softmax_fraction"][f"V={r['vocab_size']},D={r['dim']}"] = r["fraction_of_peak"]
    return out


def print_table(rows: list[dict], square_peak: float) -> None:
    print(
        f"\n{'loss':16} {'V':>9} {'k':>3} {'D':>4} {'ms/step [min-max]':>24} "
        f"{'M pairs/s':>10} {'GFLOP/s':>8} {'of peak':>8}  note"
    )
    for r in rows:
        k = "-" if r["k"] is None else r["k"]
        if "skipped" in r:
            print(f"{r['loss']:16} {r['vocab_size']:>9} {k:>3} {r['dim']:>4}  {r['skipped']}")
            continue
        ms = f"{r['ms_per_step']:.2f} [{r['ms_min']:.2f}-{r['ms_max']:.2f}]"
        gf = f"{r['gflops']:.0f}" if "gflops" in r else ""
        frac = f"{100 * r['fraction_of_peak']:.0f}%" if "fraction_of_peak" in r else ""
        note = f"chunk {r['chunk']}" if r.get("chunk") else ""
        note += f"depth {r['hs_depth']}" if "hs_depth" in r else ""
        note += "" if r["finite"] else " non-finite loss"
        note += f" ({r['steps']}x{r['repeats']} steps)" if r["steps"] < _STEPS.value else ""
        print(
            f"{r['loss']:16} {r['vocab_size']:>9} {k:>3} {r['dim']:>4} {ms:>24} "
            f"{r['pairs_per_s'] / 1e6:>10.3f} {gf:>8} {frac:>8}  {note}"
        )
    print(f"square 2048^3 float32 jnp.dot: {square_peak:.0f} GFLOP/s")


def merge_runs(runs: list[dict]) -> list[dict]:
    """Rows of several runs (their JSON objects), one per (loss, V, k, D): the one with the
    lowest median time."""
    best: dict = {}
    for run in runs:
        for row in run["rows"]:
            if "ms_per_step" not in row:
                continue
            key = (row["loss"], row["vocab_size"], row["k"], row["dim"])
            if key not in best or row["ms_per_step"] < best[key]["ms_per_step"]:
                best[key] = row
    return list(best.values())


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if _PLOT_FROM.value:
        if not _PLOT.value:
            raise app.UsageError("--plot_from needs --plot=PATH")
        runs = [json.loads(pathlib.Path(p).read_text()) for p in _PLOT_FROM.value]
        rows = merge_runs(runs)
        figures.cost_figure(rows).savefig(_PLOT.value, dpi=100)
        print_table(rows, max(r["square_peak_gflops"] for r in runs))
        return
    unknown = set(_LOSSES.value) - set(output_layers.NAMES)
    if unknown:
        raise app.UsageError(f"--losses: unknown {sorted(unknown)}; use {output_layers.NAMES}")
    malloc_policy = _KEEP_FREED.value and host_memory.keep_freed_memory()
    rng = np.random.default_rng(_SEED.value)
    key = jax.random.PRNGKey(_SEED.value)
    dims = [int(d) for d in _DIMS.value]
    square_peak = matmul_gflops(2048, 2048, 2048, key)
    peaks: dict[str, float] = {}
    rows = []
    for vocab_size in (int(v) for v in _VOCAB_SIZES.value):
        counts = zipf_counts(vocab_size, _ZIPF.value)
        batches = make_batches(counts, rng)
        for loss in _LOSSES.value:
            aux = output_layers.constants_for(loss, counts, 0.75)
            depth = aux.codes.shape[1] if aux.codes is not None else 0
            ks = [int(k) for k in _KS.value] if output_layers.get(loss).sampled else [None]
            for dim in dims if loss == "softmax" else dims[:1]:
                for k in ks:
                    row = {"loss": loss, "vocab_size": vocab_size, "k": k, "dim": dim}
                    need, have = estimate_bytes(loss, vocab_size, dim, depth), available_bytes()
                    if need > _MEMORY_FRACTION.value * have:
                        row["skipped"] = (
                            f"needs ~{need / GB:.1f} GB, {have / GB:.1f} GB available: skipped"
                        )
                        rows.append(row)
                        continue
                    row = time_loss(loss, vocab_size, k, dim, batches, aux, key)
                    if loss == "hs":
                        row["hs_depth"] = depth
                    if loss == "softmax":
                        e, n = examples_per_step(), row["chunk"] or vocab_size
                        shape = f"{e}x{dim}x{n}"
                        if shape not in peaks:
                            peaks[shape] = matmul_gflops(e, dim, n, key)
                        row["peak_shape"] = shape
                        row["peak_gflops"] = peaks[shape]
                        row["fraction_of_peak"] = row["gflops"] / peaks[shape]
                        row["fraction_of_square_peak"] = row["gflops"] / square_peak
                    rows.append(row)
                    print(f"done: {json.dumps(row)}", file=sys.stderr, flush=True)
                    gc.collect()
                    jax.clear_caches()
    print_table(rows, square_peak)
    result = {
        "rows": rows,
        "peak_gflops": peaks,
        "square_peak_gflops": square_peak,
        "targets": targets(rows),
        "settings": {
            "model": _MODEL.value,
            "batch_size": _BATCH_SIZE.value,
            "context_slots": 2 * _WINDOW.value,
            "valid_fraction": _VALID.value,
            "max_chunk": _CHUNK.value,
            "zipf_exponent": _ZIPF.value,
            "steps": _STEPS.value,
            "repeats": _REPEATS.value,
            "share": "row (sampled losses)",
            "optimizer": "sgd, sparse",
        },
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES"),
            "keep_freed_memory": bool(malloc_policy),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
        },
    }
    line = json.dumps(result)
    if _PLOT.value:
        figures.cost_figure(rows).savefig(_PLOT.value, dpi=100)
    if _OUTPUT_JSON.value:
        pathlib.Path(_OUTPUT_JSON.value).write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    cli.run(main)  # one-line errors, tracebacks with --verbose
