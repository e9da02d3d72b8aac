r"""Claim 2 at scale: Table 1 of Mikolov et al. (2013b) rerun on wiki-60m, beside gensim.

  W2V_DATA_DIR=../shared/data python experiments/claim2_table1.py \
      --workdir=runs/claim2_wiki --out_dir=experiments/results/claim2_wiki60m

Trains the grid ``--grid`` (``SAMPLE/POINT`` items: the subsampling threshold, then a
`sweep_k.py` point) from ``--config`` (experiments/configs/wiki_table1.py: the project's
large-batch default, 100-d skip-gram, 3 epochs of wiki-60m): one `sweep.run_sweep` per
threshold, in ``WORKDIR/sample<SAMPLE>/``; then gensim's skip-gram NEG-5 once per
``--gensim`` threshold (`benchmark.py --run_one=gensim`: the same sentences, vocabulary,
dimension, window, epochs and seed; ``--gensim_workers`` threads), its vectors scored by
our evaluator, in ``WORKDIR/gensim_sample<SAMPLE>/``. A rerun skips what is finished, so
the grid can be split over processes (``taskset -c 0 ... --grid=A --report=false`` beside
``taskset -c 1 ... --grid=B --report=false``, then ``--train=false`` to report).

Writes to ``--out_dir``: ``claim2.json`` (one row per run: analogy total / semantic /
syntactic with the 30k cap, WordSim-353, training-loop seconds, words/s, and the paper's
row), ``table.md`` (ours beside the paper's Table 1) and ``claim2.png`` (accuracy against
training time, ours and the paper's). Grid items not run appear as "not run".

The paper's Table 1 (1B words of Google News, V = 692k, 300-d, window 5; minutes on their
machine): `PAPER`, checked against several independent transcriptions of the table.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
import sys

from absl import flags, logging
from ml_collections import config_flags

from w2v_jax import cli, errors, files, settings
from w2v_jax.analysis import figures, sweep
from w2v_jax.data import corpus
from w2v_jax.evaluation import evaluate

# (method, subsampling threshold): (minutes, syntactic %, semantic %, total %).
PAPER = {
    ("NEG-5", 0.0): (38, 63, 54, 59),
    ("NEG-15", 0.0): (97, 63, 58, 61),
    ("HS-Huffman", 0.0): (41, 53, 40, 47),
    ("NCE-5", 0.0): (38, 60, 45, 53),
    ("NEG-5", 1e-5): (14, 61, 58, 60),
    ("NEG-15", 1e-5): (36, 61, 61, 61),
    ("HS-Huffman", 1e-5): (21, 52, 59, 55),
}
GRID = "0/neg:5,0/neg:15,0/hs,0/nce:5,1e-5/neg:5,1e-5/neg:15,1e-5/hs,1e-4/neg:5"
ANALOGIES, WORDSIM = "questions-words.txt", "wordsim353.tsv"
BENCHMARK = pathlib.Path(__file__).with_name("benchmark.py")

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    str(pathlib.Path(__file__).with_name("configs") / "wiki_table1.py"),
    "Base config of every run.",
    lock_config=False,
)
_WORKDIR = flags.DEFINE_string("workdir", "runs/claim2_wiki", "Run folders.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where claim2.json, table.md, claim2.png go.")
_GRID = flags.DEFINE_list("grid", GRID, "SAMPLE/POINT items, e.g. 1e-5/neg:15 or 0/hs.")
_GENSIM = flags.DEFINE_list("gensim", ["1e-4"], "Thresholds of gensim's NEG-5 rows ('' none).")
_GENSIM_WORKERS = flags.DEFINE_integer("gensim_workers", 2, "gensim worker threads.")
_SEED = flags.DEFINE_integer("seed", 0, "config.seed of every run (and gensim's).")
_TRAIN = flags.DEFINE_boolean("train", True, "Train what is not finished (False: report only).")
_REPORT = flags.DEFINE_boolean("report", True, "Write the table, JSON and plot at the end.")


def method(loss: str, k: int | None) -> str:
    """Table 1's name of a point: NEG-5, NCE-5, HS-Huffman (other losses: loss-k)."""
    if loss == "hs":
        return "HS-Huffman"
    name = {"neg": "NEG", "nce": "NCE"}.get(loss, loss)
    return f"{name}-{k}" if k is not None else name


def threshold(text: str, what: str) -> float:
    """A subsampling threshold (>= 0) from ``text``; one-line ValueError naming ``what``."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise errors.ConfigError(
            f"{what}: {text!r} is not a subsampling threshold >= 0 (e.g. 1e-5, 0)"
        )
    return value


def parse_grid(items) -> dict[str, list[str]]:
    """``["0/neg:5", "1e-5/hs"]`` → ``{"0": ["neg:5"], "1e-5": ["hs"]}`` (order kept); a
    malformed item raises one line."""
    grid: dict[str, list[str]] = {}
    for item in items:
        sample, _, point = item.partition("/")
        if not point:
            raise errors.ConfigError(f"--grid item {item!r} is not SAMPLE/POINT, e.g. 1e-5/neg:15")
        threshold(sample, f"--grid item {item!r}")
        grid.setdefault(sample, []).append(point)
    return grid


def sweep_config(base, sample: str):
    config = base.copy_and_resolve_references()
    config.sample = float(sample)
    config.seed = _SEED.value
    return config


def train_grid(base, workdir: pathlib.Path, grid: dict[str, list[str]]) -> int:
    """Runs every sweep of the grid; returns the number of failed points."""
    failed = 0
    for sample, specs in grid.items():
        points = sweep.parse_points(specs, [_SEED.value])
        result = sweep.run_sweep(
            sweep_config(base, sample), workdir / f"sample{sample}", points, make_plots=False
        )
        failed += result.failed
    return failed


GENSIM_VERSION = "4.4.0"  # the gensim every benchmark here used (pyproject.toml: [peers])


def check_gensim() -> None:
    """One line unless gensim can be imported (it is an extra: ``pip install -e .[peers]``)."""
    if importlib.util.find_spec("gensim") is None:
        raise errors.ConfigError(
            f"--gensim={','.join(_GENSIM.value)} needs gensim, which is not installed; "
            f"pip install -e .[peers] (gensim=={GENSIM_VERSION}), or pass --gensim= to "
            "leave out gensim's rows"
        )


def gensim_flags(config, sample: str, data_dir: pathlib.Path) -> list[str]:
    """benchmark.py's flags for gensim's skip-gram NEG-5 with ``config``'s settings."""
    return [
        f"--corpus={config.corpus.name}",
        f"--data_dir={data_dir}",
        "--model=skipgram",
        f"--dim={config.dim}",
        f"--window={config.window}",
        "--negative=5",
        f"--sample={float(sample)}",
        f"--min_count={config.corpus.min_count}",
        f"--epochs={config.epochs}",
        f"--seed={_SEED.value}",
        f"--gensim_workers={_GENSIM_WORKERS.value}",
        f"--restrict_vocab={config.eval.restrict_vocab}",
    ]


def train_gensim(config, sample: str, run_dir: pathlib.Path, data_dir: pathlib.Path) -> dict:
    """gensim's NEG-5 row, trained once (skipped when ``run_dir/result.json`` exists) and
    scored by our evaluator; the row as a dict."""
    path = run_dir / "result.json"
    if path.exists():
        return json.loads(path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(BENCHMARK), *gensim_flags(config, sample, data_dir)]
    cmd += ["--run_one=gensim", f"--run_dir={run_dir}"]
    logging.info("gensim NEG-5, sample %s: %s", sample, " ".join(cmd))
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"gensim (sample {sample}) failed with exit {done.returncode}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    analogies, wordsim = str(data_dir / ANALOGIES), data_dir / WORDSIM
    similarity = [str(wordsim)] if wordsim.is_file() else []
    restrict = config.eval.restrict_vocab
    row.update(evaluate.score_file(run_dir / "vectors.bin", analogies, similarity, restrict))
    files.write_json(path, row, indent=1)
    return row


KEYS = (
    "status",
    "steps",
    "wall_s",
    "words_per_s",
    "analogy_total",
    "analogy_semantic",
    "analogy_syntactic",
    "analogy_coverage",
    "similarity_wordsim353_spearman",
)


def collect(workdir: pathlib.Path, grid: dict[str, list[str]], gensim_samples) -> list[dict]:
    """One row per grid item (``status`` "not run" when its folder holds no result) and
    per gensim threshold; the paper's figures beside the ones it reports."""
    rows = []
    for sample, specs in grid.items():
        for point in sweep.parse_points(specs, [_SEED.value]):
            point_dir = workdir / f"sample{sample}" / point.name
            summary = sweep.summary_row(point, point_dir)
            row = {"side": "ours", "method": method(point.loss, point.k), "sample": float(sample)}
            row.update({key: summary.get(key) for key in KEYS})
            if not point_dir.exists():
                row["status"] = "not run"
            rows.append(_with_paper(row))
    for sample in gensim_samples:
        path = workdir / f"gensim_sample{sample}" / "result.json"
        row = {"side": "gensim", "method": "NEG-5", "sample": float(sample)}
        found = json.loads(path.read_text()) if path.exists() else {}
        row.update({key: found.get(key) for key in KEYS if key != "status"})
        row["status"] = "ok" if found else "not run"
        rows.append(_with_paper(row))
    return rows


def _with_paper(row: dict) -> dict:
    paper = PAPER.get((row["method"], row["sample"]))
    names = ("paper_minutes", "paper_syntactic", "paper_semantic", "paper_total")
    row.update(dict(zip(names, paper or (None,) * 4, strict=True)))
    return row


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def _sample_name(sample: float) -> str:
    """0 → "none", 1e-05 → "1e-5", 0.00025 → "2.5e-4"."""
    if sample == 0:
        return "none"
    mantissa, exponent = f"{sample:.6e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def table(rows: list[dict]) -> str:
    """Markdown: ours (analogy total, semantic / syntactic, WS353, seconds, words/s) beside
    the paper's total (semantic / syntactic) and minutes."""
    head = (
        "| method | subsampling | side | analogy total (sem / syn), % | WS353 ρ | training s "
        "| words/s | paper: total (sem / syn), % | paper: minutes |\n"
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    lines = []
    for r in rows:
        if r["status"] == "ok":
            ours = (
                f"{_pct(r['analogy_total'])} ({_pct(r['analogy_semantic'])} / "
                f"{_pct(r['analogy_syntactic'])})"
            )
            ws = r["similarity_wordsim353_spearman"]
            cells = [ours, "" if ws is None else f"{ws:.3f}", f"{r['wall_s']:,.0f}",
                     f"{r['words_per_s']:,.0f}"]  # fmt: skip
        else:
            cells = [r["status"], "", "", ""]
        paper = (
            f"{r['paper_total']} ({r['paper_semantic']} / {r['paper_syntactic']})"
            if r["paper_total"] is not None
            else "—"
        )
        minutes = "—" if r["paper_minutes"] is None else str(r["paper_minutes"])
        name = [r["method"], _sample_name(r["sample"]), r["side"]]
        lines.append("| " + " | ".join([*name, *cells, paper, minutes]) + " |")
    return head + "\n".join(lines) + "\n"


def paper_rows() -> list[dict]:
    """`PAPER` as rows for `figures.table1_figure`."""
    return [{"method": m, "sample": s, "minutes": v[0], "total": v[3]}
            for (m, s), v in PAPER.items()]  # fmt: skip


def main(argv) -> None:
    if len(argv) > 1:
        raise errors.ConfigError(f"unexpected arguments: {argv[1:]}")
    grid = parse_grid(_GRID.value)
    gensim_samples = [s for s in _GENSIM.value if s]
    for sample in gensim_samples:
        threshold(sample, "--gensim")
    if _REPORT.value and not _OUT_DIR.value:
        raise errors.ConfigError("--out_dir is required to report; set it or pass --report=false")
    base = _CONFIG.value
    for sample, specs in grid.items():  # every point validated before any training
        sweep.validated_configs(sweep_config(base, sample), sweep.parse_points(specs, [0]))
    if _TRAIN.value:  # the data and gensim are there before anything trains
        settings.check_data(base)
        if gensim_samples:
            check_gensim()
    workdir = pathlib.Path(_WORKDIR.value)
    data_dir = corpus.resolve_data_dir(base.corpus.data_dir or None)
    failed = 0
    if _TRAIN.value:
        failed = train_grid(base, workdir, grid)
        for sample in gensim_samples:
            train_gensim(base, sample, workdir / f"gensim_sample{sample}", data_dir)
    if _REPORT.value:
        rows = collect(workdir, grid, gensim_samples)
        out = pathlib.Path(_OUT_DIR.value)
        out.mkdir(parents=True, exist_ok=True)
        files.write_json(out / "claim2.json", rows, indent=1)
        text = table(rows)
        files.write_atomic(out / "table.md", text)
        figures.table1_figure(rows, paper_rows()).savefig(out / "claim2.png", dpi=110)
        print(text)
    if failed:
        sys.stderr.write(f"{failed} run(s) failed; see error.txt in {workdir}\n")
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main)  # one-line errors, tracebacks with --verbose
