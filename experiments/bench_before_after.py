r"""Training speed of two checkouts side by side: the same command, alternating runs.

  git worktree add /tmp/base b003578
  python experiments/bench_before_after.py --checkouts=/tmp/base,. --repeats=3 \
      --variants="device:--config.epochs=1;host:--config.epochs=1 --config.input.mode=host"

Each variant is ``name:`` plus overrides for ``python -m w2v_jax.main`` (default config).
For every repeat, each (variant, checkout) trains once in a fresh run folder, checkouts
alternating, with ``PYTHONPATH`` set to the checkout so its own package runs. Prints and
(``--output_json``) writes the median ``train/words_per_s`` and ``train/loop_wall_s`` of
each, their ratio to the first checkout, and the final analogy and WordSim numbers (the
same seed, so they show whether the runs train the same thing). The machine must be
quiet: nothing else heavy beside it.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

from absl import flags

from w2v_jax import cli

_CHECKOUTS = flags.DEFINE_list("checkouts", None, "Two or more repository roots; first = base.")
_VARIANTS = flags.DEFINE_string(
    "variants", "device:--config.epochs=1", "name:overrides;name:overrides (main's flags)."
)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Runs per (variant, checkout); medians.")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write the results here.")
KEYS = ("train/words_per_s", "train/loop_wall_s", "eval/analogy/total", "eval/wordsim353")


def _run(checkout: pathlib.Path, overrides: list[str], workdir: pathlib.Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, "-m", "w2v_jax.main", "--config=w2v_jax/configs/default.py"]
    cmd += [f"--workdir={workdir}", *overrides]
    subprocess.run(cmd, cwd=checkout, env=env, check=True, capture_output=True, timeout=3600)
    last = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    similarity = [v for k, v in last.items() if k.startswith("eval/") and "wordsim" in k]
    last["eval/wordsim353"] = similarity[0] if similarity else None
    return {k: last.get(k) for k in KEYS}


def main(argv):
    del argv
    checkouts = [pathlib.Path(c).resolve() for c in _CHECKOUTS.value]
    variants = dict(v.split(":", 1) for v in _VARIANTS.value.split(";"))
    runs = {(v, i): [] for v in variants for i in range(len(checkouts))}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(_REPEATS.value):
            for name, overrides in variants.items():
                for i, checkout in enumerate(checkouts):
                    workdir = pathlib.Path(tmp) / f"{name}_{i}_{r}"
                    runs[name, i].append(_run(checkout, overrides.split(), workdir))
    out = {}
    for name in variants:
        base = None
        for i, checkout in enumerate(checkouts):
            rows = runs[name, i]
            med = {}
            for k in KEYS:  # a metric the run does not report (no analogy file): None
                values = [r[k] for r in rows if r[k] is not None]
                med[k] = statistics.median(values) if values else None
            base = base or med
            med["speed_vs_first"] = med["train/words_per_s"] / base["train/words_per_s"]
            med["all_words_per_s"] = [r["train/words_per_s"] for r in rows]
            label = f"{name} @ {checkout}" + (f" #{i}" if checkouts.count(checkout) > 1 else "")
            out[label] = med
            print(f"{label}: " + json.dumps(med), flush=True)
    if _OUTPUT_JSON.value:
        pathlib.Path(_OUTPUT_JSON.value).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    flags.mark_flag_as_required("checkouts")
    cli.run(main)  # one-line errors, tracebacks with --verbose
