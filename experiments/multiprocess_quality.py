r"""Per-process input and quality: does splitting the corpus over processes change it?

  W2V_DATA_DIR=../shared/data python experiments/multiprocess_quality.py \
      --out_dir=experiments/results/multiprocess_quality

With several processes each reads only its share of the corpus (docs/training.md,
"Several processes"), so the batch sequence is not the one-process run's: step t takes
every share's t-th batch. This trains the default skip-gram on text8-head for
``--epochs`` with one process (``parallel.mode=mesh`` on one CPU device) for each of
``--seeds``, and with 2 and 4 processes (experiments/launch_local.py, one CPU device
each) for the first seed, and reports the final analogy accuracy and WS353 Spearman of
each run beside the one-process seed spread (max − min over the seeds). Writes
``DIR/summary.json`` and ``DIR/table.md``. Not a timing: the processes share 2 cores.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

from absl import flags

from w2v_jax import cli, run_folder

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where runs, summary and table go.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "One-process seeds (the spread).")
_PROCESSES = flags.DEFINE_list("processes", ["2", "4"], "Process counts to compare.")
_EPOCHS = flags.DEFINE_integer("epochs", 1, "Epochs.", lower_bound=1)
_CORPUS = flags.DEFINE_string("corpus", "text8-head", "corpus.name")

ROOT = pathlib.Path(__file__).resolve().parents[1]
METRICS = {"analogy": "eval/analogy/total", "ws353": "eval/similarity/wordsim353/spearman"}


def command(workdir: pathlib.Path, seed: int) -> list[str]:
    return [
        sys.executable, "-m", "w2v_jax.main", "--config=w2v_jax/configs/default.py",
        f"--config.corpus.name={_CORPUS.value}", f"--config.epochs={_EPOCHS.value}",
        "--config.parallel.mode=mesh", "--config.input.mode=host", f"--config.seed={seed}",
        f"--workdir={workdir}",
    ]  # fmt: skip


def train(workdir: pathlib.Path, seed: int, processes: int) -> dict:
    """Final metrics of one run (trained unless its folder already holds them)."""
    if not (workdir / "vectors.bin").exists():
        argv = command(workdir, seed)
        if processes > 1:
            launcher = [sys.executable, "experiments/launch_local.py",
                        f"--num_processes={processes}", "--local_devices=1", "--"]  # fmt: skip
            argv = [*launcher, *argv]
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        subprocess.run(argv, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    final = run_folder.read_metrics(workdir)[-1]
    return {name: final.get(key) for name, key in METRICS.items()}


def main(argv) -> None:
    del argv
    out = pathlib.Path(_OUT_DIR.value or "experiments/results/multiprocess_quality")
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in _SEEDS.value]
    rows = []
    for seed in seeds:
        rows.append({"processes": 1, "seed": seed, **train(out / f"p1_s{seed}", seed, 1)})
    for n in map(int, _PROCESSES.value):
        rows.append(
            {"processes": n, "seed": seeds[0], **train(out / f"p{n}_s{seeds[0]}", seeds[0], n)}
        )
    one = [r for r in rows if r["processes"] == 1]
    spread = {m: max(r[m] for r in one) - min(r[m] for r in one) for m in METRICS}
    summary = {
        "corpus": _CORPUS.value,
        "epochs": _EPOCHS.value,
        "runs": rows,
        "seed_spread": spread,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = ["| processes | seed | analogy (%) | WS353 ρ |", "| --- | --- | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {r['processes']} | {r['seed']} | {100 * r['analogy']:.2f} | {r['ws353']:.3f} |"
        )
    a, w = 100 * spread["analogy"], spread["ws353"]
    lines.append(f"| 1: spread over seeds {seeds} | | {a:.2f} | {w:.3f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    flags.mark_flag_as_required("out_dir")
    cli.run(main)  # one-line errors, tracebacks with --verbose
