r"""The corpus build at scale: seconds, tokens/s and peak memory against corpus size.

Generates Zipf corpora (``--types`` word types of frequency ∝ rank^-``--exponent``, lines
of 10-30 tokens, ``--files`` text files per corpus; vectorised NumPy, written once under
``--data_dir`` and reused), then builds each one's "train" entry with
`corpus.load_corpus` (which also writes the "heldout" entry from the same read) in a
fresh process and a fresh cache folder. With ``--old_checkout`` (a checkout of the
in-memory build, e.g. ``git worktree add /tmp/old 7c369f2``) the same build runs with
that code too, up to ``--old_max_tokens``, and the two entries are compared byte for byte.

  python experiments/bench_corpus_build.py --data_dir=/work/bench_data \
      --tokens=1e8,3e8,1e9 --old_checkout=/tmp/old

Peak memory: the build process's VmHWM, the largest worker's (RUSAGE_CHILDREN), and the
whole process tree's resident memory, sampled every 0.1 s (``peak_rss_bytes``, what the
target is about: <= 2.5 GB at 1e9 tokens). Time should grow linearly in tokens.
Results: a markdown table and one JSON object (last stdout line), both written under
``--out_dir``. ``--quick`` runs one 200k-token corpus of 20k types in 4 files (the test).
"""

import hashlib
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
from absl import flags

from w2v_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]

_DATA_DIR = flags.DEFINE_string(
    "data_dir",
    os.environ.get("W2V_BENCH_DIR", "~/.cache/w2v_jax/bench_corpus"),
    "Where the generated corpora and the builds' cache folders go ($W2V_BENCH_DIR).",
)
_TOKENS = flags.DEFINE_list("tokens", ["1e8", "3e8", "1e9"], "Corpus sizes, in tokens.")
_TYPES = flags.DEFINE_integer("types", 2_000_000, "Word types of the Zipf distribution.")
_EXPONENT = flags.DEFINE_float("exponent", 1.05, "Zipf exponent s: p(rank r) ∝ r^-s.")
_FILES = flags.DEFINE_integer("files", 16, "Text files per corpus.")
_WORKERS = flags.DEFINE_integer("workers", 0, "corpus.workers of the new build; 0 = default.")
_MIN_COUNT = flags.DEFINE_integer("min_count", 5, "min_count of the vocabulary.")
_OLD = flags.DEFINE_string("old_checkout", "", "A checkout of the old build; '' = skip it.")
_OLD_MAX = flags.DEFINE_float("old_max_tokens", 3e8, "Largest corpus the old build runs on.")
_OUT = flags.DEFINE_string(
    "out_dir", str(ROOT / "experiments/results/bench_corpus_build"), "Where results go."
)
_QUICK = flags.DEFINE_bool("quick", False, "One 200k-token corpus (for the test).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the generated text.")

# Run in a fresh interpreter with the checkout under test on PYTHONPATH: builds the train
# entry (the new code writes the heldout one too) and reports its own time and memory.
_CHILD = r"""
import json, resource, sys, time
args = json.loads(sys.argv[1])
from w2v_jax.data import corpus
extra = {}
if args["workers"] and "workers" in corpus.ReadOptions._fields:
    extra["workers"] = args["workers"]
start = time.perf_counter()
c = corpus.load_corpus(args["corpus"], split="train", min_count=args["min_count"],
                       cache_dir=args["cache_dir"], **extra)
seconds = time.perf_counter() - start
hwm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")]
print(json.dumps({
    "seconds": seconds, "kept_tokens": int(len(c.ids)), "sentences": int(len(c.offsets) - 1),
    "vocab_size": len(c.vocab), "module": corpus.__file__, "peak_rss_main_bytes": hwm[0],
    "peak_rss_worker_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
}))
"""


def _words(types: int) -> tuple[np.ndarray, np.ndarray]:
    """Word ``r`` is rank r in bijective base 26 ("a".."z", "aa", ...), so frequent words
    are short; returns (uint8 bytes of every word followed by a space, [V+1] starts)."""
    text = []
    for r in range(1, types + 1):
        letters = []
        while r:
            r, digit = divmod(r - 1, 26)
            letters.append(chr(97 + digit))
        text.append("".join(reversed(letters)) + " ")
    lengths = np.fromiter(map(len, text), np.int64, types)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    return np.frombuffer("".join(text).encode(), np.uint8), starts


def _write_file(path, tokens, cdf, word_bytes, starts, rng, block=1 << 20) -> None:
    """``tokens`` Zipf tokens in lines of 10-30 tokens, the last line ended too."""
    line_ends = np.cumsum(rng.integers(10, 31, size=tokens // 10 + 1))
    line_ends = line_ends[line_ends < tokens]
    with open(path, "wb") as f:
        for a in range(0, tokens, block):
            m = min(block, tokens - a)
            ranks = np.searchsorted(cdf, rng.random(m), side="right").clip(0, len(cdf) - 1)
            lengths = starts[ranks + 1] - starts[ranks]  # each word and its space
            first = np.cumsum(lengths) - lengths  # where each token starts in the block
            within = np.arange(lengths.sum()) - np.repeat(first, lengths)
            out = word_bytes[np.repeat(starts[ranks], lengths) + within]
            ends = line_ends[(line_ends > a) & (line_ends <= a + m)] - a  # tokens [.., end)
            out[first[ends - 1] + lengths[ends - 1] - 1] = ord("\n")
            if a + m == tokens:
                out[-1] = ord("\n")
            f.write(out)


def corpus_dir(root: pathlib.Path, tokens: int, types: int, exponent: float, files: int):
    """The corpus folder for these settings, generated the first time (then reused)."""
    folder = root / f"zipf-{tokens}-{types}-{exponent}-{files}-seed{_SEED.value}"
    if (folder / ".done").is_file():  # hidden: the reader skips it
        return folder
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    start = time.perf_counter()
    weights = np.arange(1, types + 1, dtype=np.float64) ** -exponent
    cdf = np.cumsum(weights / weights.sum())
    word_bytes, starts = _words(types)
    per_file = [tokens // files + (i < tokens % files) for i in range(files)]
    for i, n in enumerate(per_file):
        rng = np.random.default_rng([_SEED.value, tokens, i])
        _write_file(tmp / f"part-{i:03d}.txt", n, cdf, word_bytes, starts, rng)
    settings = dict(tokens=tokens, types=types, exponent=exponent, files=files)
    (tmp / ".done").write_text(json.dumps(settings))
    shutil.rmtree(folder, ignore_errors=True)  # a folder left by an interrupted run
    tmp.rename(folder)
    print(f"generated {folder} in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    return folder


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants now (0 once it is gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


def build(code: str, checkout: pathlib.Path, corpus: pathlib.Path, cache_dir: pathlib.Path):
    """Builds ``corpus`` with ``checkout``'s code in a child process; its report."""
    shutil.rmtree(cache_dir, ignore_errors=True)
    args = dict(corpus=str(corpus), cache_dir=str(cache_dir), min_count=_MIN_COUNT.value)
    args["workers"] = _WORKERS.value if code == "new" else 0
    env = {**os.environ, "PYTHONPATH": str(checkout), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(args)],
        cwd="/",  # so that only PYTHONPATH decides which w2v_jax is imported
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    sampler.join()
    if proc.returncode:
        raise RuntimeError(f"the {code} build failed:\n{err[-4000:]}")
    report = json.loads(out.strip().splitlines()[-1])
    if not report["module"].startswith(str(checkout)):
        raise RuntimeError(f"the {code} build imported {report['module']}, not {checkout}")
    # The tree's peak is at least the main process's (a short run may end between samples).
    return {**report, "peak_rss_bytes": max(peak[0], report["peak_rss_main_bytes"])}


def _digest(entry: pathlib.Path) -> str:
    h = hashlib.sha256()
    for name in ("ids.npy", "offsets.npy", "vocab.tsv"):
        with open(entry / name, "rb") as f:
            while block := f.read(16 << 20):
                h.update(block)
    return h.hexdigest()


def _train_entry(cache_dir: pathlib.Path) -> pathlib.Path:
    (entry,) = [p for p in cache_dir.iterdir() if "-train-" in p.name and p.name[0] != "."]
    return entry


def main(argv) -> None:
    del argv
    if _QUICK.value:
        sizes, types, files = [200_000], 20_000, 4
    else:
        sizes, types, files = [int(float(t)) for t in _TOKENS.value], _TYPES.value, _FILES.value
    root = pathlib.Path(_DATA_DIR.value).expanduser()
    out_dir = pathlib.Path(_OUT.value)
    rows = []
    for tokens in sizes:
        corpus = corpus_dir(root, tokens, types, _EXPONENT.value, files)
        text_bytes = sum(p.stat().st_size for p in corpus.glob("*.txt"))
        runs = [("new", ROOT)]
        if _OLD.value and tokens <= _OLD_MAX.value:
            runs.append(("old", pathlib.Path(_OLD.value).resolve()))
        digests = {}
        for code, checkout in runs:
            cache_dir = root / f"cache-{code}"
            report = build(code, checkout, corpus, cache_dir)
            digests[code] = _digest(_train_entry(cache_dir))
            shutil.rmtree(cache_dir, ignore_errors=True)
            rows.append(
                dict(
                    code=code,
                    tokens=tokens,
                    text_bytes=text_bytes,
                    tokens_per_s=round(tokens / report["seconds"]),
                    **{k: v for k, v in report.items() if k != "module"},
                )
            )
        for row in rows[-len(runs) :]:
            row["identical_to_old"] = digests["new"] == digests["old"] if "old" in digests else None
    result = dict(
        rows=rows,
        settings=dict(types=types, exponent=_EXPONENT.value, files=files, workers=_WORKERS.value,
                      min_count=_MIN_COUNT.value, old_checkout=_OLD.value, quick=_QUICK.value),
        machine=dict(cpus=os.cpu_count(), platform=platform.platform()),
        date=time.strftime("%Y-%m-%d"),
    )  # fmt: skip
    gib = 1 << 30
    table = [
        "| code | tokens | text GB | seconds | M tokens/s | peak RSS, tree (GiB) | main | "
        "largest worker | identical to old |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        table.append(
            f"| {r['code']} | {r['tokens']:.0e} | {r['text_bytes'] / 1e9:.2f} | "
            f"{r['seconds']:.1f} | {r['tokens_per_s'] / 1e6:.2f} | "
            f"{r['peak_rss_bytes'] / gib:.2f} | {r['peak_rss_main_bytes'] / gib:.2f} | "
            f"{r['peak_rss_worker_bytes'] / gib:.2f} | {r['identical_to_old']} |"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "table.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    print(json.dumps(result))


if __name__ == "__main__":
    cli.run(main)  # one-line errors, tracebacks with --verbose
