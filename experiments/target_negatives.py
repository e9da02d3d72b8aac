"""The table of docs/training.md, "Negatives equal to the target": kept against skipped.

Reads finished runs (any folders below ``--runs``, e.g. the sweeps of
``experiments/sweep_k.py`` with and without ``--config.loss.remove_accidental_hits``)
and prints one markdown row per k: the epochs trained (a run stopped by ``max_steps``
shows its fraction), analogy, WS353 and held-out NLL with the negatives equal to the
target kept and skipped, means over the seeds found.

  for skip in True False; do python experiments/sweep_k.py \\
      --config=w2v_jax/configs/text8_head.py --workdir=runs/negatives_skip_$skip \\
      --points=neg:5,neg:25,neg:100 --seeds=0 --plots=False --config.epochs=1 \\
      --config.loss.remove_accidental_hits=$skip \\
      --config.eval.similarity=$W2V_DATA_DIR/wordsim353.tsv; done
  python experiments/target_negatives.py --runs=runs/negatives_skip_True,runs/negatives_skip_False
"""

from __future__ import annotations

import collections
import json
import pathlib

import numpy as np
from absl import app, flags

from w2v_jax import files

_RUNS = flags.DEFINE_list("runs", None, "Folders holding finished runs (searched below).")
flags.mark_flags_as_required(["runs"])

METRICS = (
    ("analogy", "eval/analogy/total", "{:.2%}"),
    ("WS353", "eval/similarity/wordsim353/spearman", "{:.3f}"),
    ("held-out NLL", "eval/heldout_nll", "{:.3f}"),
)


def finished_runs(folders) -> dict:
    """{(k, skip): [final metrics row of each seed]} of the runs below ``folders``."""
    out = collections.defaultdict(list)
    for folder in folders:
        for log in sorted(pathlib.Path(folder).glob("**/metrics.jsonl")):
            config = json.loads((log.parent / "config.json").read_text())
            rows = [r for r in files.read_jsonl(log) if "eval/analogy/total" in r]
            if rows:
                key = (config["loss"]["k"], config["loss"]["remove_accidental_hits"])
                out[key].append(
                    {**rows[-1], "epochs": rows[-1]["train/progress"] * config["epochs"]}
                )
    return out


def main(argv) -> None:
    del argv
    runs = finished_runs(_RUNS.value)
    head = ["k", "seeds", "epochs"]
    for name, _, _ in METRICS:
        head += [f"{name} kept", f"{name} skipped"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for k in sorted({k for k, _ in runs}):
        kept, skipped = runs.get((k, False), []), runs.get((k, True), [])
        epochs = sorted({round(r["epochs"], 2) for r in kept + skipped})
        cells = [str(k), f"{len(kept)} / {len(skipped)}", " / ".join(map(str, epochs))]
        for _, key, fmt in METRICS:
            for rows in (kept, skipped):
                cells.append(fmt.format(np.mean([r[key] for r in rows])) if rows else "—")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    app.run(main)
