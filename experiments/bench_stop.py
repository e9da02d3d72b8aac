r"""Stopping several processes on a signal, and what agreeing on the step costs (issue 26).

  python experiments/bench_stop.py            # 3 repeats, 4,000 steps per speed run
  python experiments/bench_stop.py --quick    # 1 repeat, 400 steps (the test's size)

Two JAX processes on this machine (experiments/launch_local.py, 1 CPU device each, the
tiny config on a mesh), with JAX's preemption notifier installed as in every
multi-process run:

* **stop**: SIGTERM to the launcher once both processes log step 50; seconds until the
  launcher has exited (both processes saved one checkpoint of the same step and ended),
  the steps trained after the signal, and whether both stopped at one step with 143;
* **speed**: the same training with the stop flag shared every `resume.AGREE_EVERY` = 10
  steps against never (10**9), runs interleaved; ``train/loop_wall_s`` and words/s of the
  last metrics row, medians.

Prints a markdown table and writes ``experiments/results/bench_stop/results.json``. The
machine must be quiet for the speed figures.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from absl import flags

from w2v_jax import cli

_QUICK = flags.DEFINE_bool("quick", False, "1 repeat, 400 steps per speed run.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Runs per measurement; medians.")
ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "results" / "bench_stop"
# python -m w2v_jax.main with resume.AGREE_EVERY set from the first argument.
MAIN = (
    "import runpy, sys; from w2v_jax import resume; resume.AGREE_EVERY = int(sys.argv.pop(1)); "
    "sys.argv[0] = 'w2v_jax.main'; runpy.run_module('w2v_jax.main', run_name='__main__')"
)
TRAIN = [
    "--config=w2v_jax/configs/tiny.py", "--config.parallel.mode=mesh",
    "--config.synthetic.num_tokens=400000", "--config.checkpoint_every=1000000",
    "--config.log_every=25", "--config.export=False",
]  # fmt: skip


def _launch(workdir: pathlib.Path, agree_every: int, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "experiments" / "launch_local.py"), "--num_processes=2",
         "--local_devices=1", "--timeout_secs=600", "--grace_secs=30", "--",
         sys.executable, "-c", MAIN, str(agree_every), *TRAIN, f"--workdir={workdir}", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


def stop_once(workdir: pathlib.Path) -> dict:
    """SIGTERM to the launcher at step 50: seconds to exit, steps after, one agreed step."""
    proc, lines = _launch(workdir, 10), []
    for line in proc.stdout:
        lines.append(line)
        if re.search(r"\[1\] .* step 50 ", line):
            break
    sent = time.perf_counter()
    os.killpg(proc.pid, signal.SIGTERM)
    lines += proc.stdout.readlines()
    code = proc.wait()
    took = time.perf_counter() - sent
    out = "".join(lines)
    stops = sorted(re.findall(r"\[(\d)\] stopped at step (\d+): checkpoint saved", out))
    steps = {int(s) for _, s in stops}
    return {
        "exit_s": took,
        "launcher_code": code,
        "both_at_one_step": len(stops) == 2 and len(steps) == 1,
        "steps_after_signal": (max(steps) - 50) if steps else None,
        "traceback": "Traceback" in out,
    }


def speed_once(workdir: pathlib.Path, agree_every: int, steps: int) -> dict:
    proc = _launch(workdir, agree_every, f"--config.max_steps={steps}")
    out, _ = proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "train/loop_wall_s" in r] or rows
    return {k: last[-1].get(k) for k in ("train/loop_wall_s", "train/words_per_s")}


def main(argv: list[str]) -> None:
    del argv
    repeats, steps = (1, 400) if _QUICK.value else (_REPEATS.value, 4000)
    results: dict = {"stop": [], "speed": {"10": [], "never": []}, "steps": steps}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            results["stop"].append(stop_once(pathlib.Path(tmp) / f"stop{r}"))
            for name, every in (("10", 10), ("never", 10**9)):  # interleaved
                results["speed"][name].append(
                    speed_once(pathlib.Path(tmp) / f"speed{r}_{name}", every, steps)
                )

    def median(rows, key):
        values = [row[key] for row in rows if row.get(key) is not None]
        return statistics.median(values) if values else None

    stops = results["stop"]
    clean = all(
        s["both_at_one_step"] and s["launcher_code"] == 143 and not s["traceback"] for s in stops
    )
    table = [
        "| measure | value |",
        "|---|---|",
        f"| stop: seconds from SIGTERM to the launcher's exit (median) | "
        f"{median(stops, 'exit_s'):.2f} |",
        f"| stop: steps past the logged step 50 (log relay lag + up to 10) | "
        f"{median(stops, 'steps_after_signal')} |",
        f"| stop: both at one step, exit 143, no traceback | {clean} |",
    ]
    for name in ("10", "never"):
        rows = results["speed"][name]
        table.append(
            f"| {steps} steps, stop flag shared every {name}: loop wall s / words/s | "
            f"{median(rows, 'train/loop_wall_s')} / {median(rows, 'train/words_per_s')} |"
        )
    print("\n".join(table))
    OUT.mkdir(parents=True, exist_ok=True)
    name = "results_quick.json" if _QUICK.value else "results.json"
    (OUT / name).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    cli.run(main)
