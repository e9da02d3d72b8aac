r"""One prepared GPU check (issue 21, item 7): at most 8 minutes on a fresh machine with one
NVIDIA GPU, everything written as one JSON file plus a short text summary.

  W2V_DATA_DIR=../shared/data python experiments/gpu_check.py --out=gpu_check.json
  bash experiments/gpu_check.sh OUT_DIR            # the same, with a log beside it
  python experiments/gpu_check.py --cpu_smoke --out=/tmp/gpu_check.json   # CPU, < 1 min

Parts, in order, each in its own Python process with its own time limit (XLA flags must be
set before JAX starts, and a hung compile must not take the rest down); a part that fails
or runs out of time records its error and the next one runs:

1. ``install``: the CUDA jaxlib matching the pinned jax (requirements.txt):
   ``pip install "jax[cuda13]==PIN"`` when the NVIDIA driver is >= 580 (CUDA 13), else
   ``"jax[cuda12]==PIN"``, with the requirements; offline, the wheels in ``--wheel_dir``.
2. ``env``: jax, jaxlib and CUDA plugin versions, whether jax is the pinned one, devices.
3. ``tests``: the backend-sensitive tests (bit equality and its tolerance twins, precision,
   on-device input, resume, multi-device).
4. ``train/*``: words/s and peak device memory (``memory_stats()["peak_bytes_in_use"]``)
   of `configs/gpu.py` on text8-head at 16,384 and 65,536 rows per step; at 16,384 rows
   also with ``--config.deterministic=True``, with the scatter-atomics flag
   (``--xla_backend_extra_options=-nvptx-allow-ftz-atomics``: with jaxlib 0.10.2
   contended f32 scatter-adds are a compare-and-swap loop, openxla#46225) and with
   ``matmul_precision="tensorfloat32"``. Words/s are the trainer's own (from the end of
   the first call: compilation excluded).
5. ``analogy``: `configs/gpu.py` trained for its 5 epochs on text8-head, analogy accuracy
   (30k cap) and WS353 against gensim's figures in docs/performance.md.

``--cpu_smoke`` skips the install and runs every part on the CPU at tiny sizes, on a Zipf
corpus it writes to a temporary folder (tests/test_gpu_check.py runs it).
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
import tempfile
import threading
import time

from absl import app, flags

from w2v_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
# docs/performance.md, "Large-batch training": text8-head, 5 epochs, skip-gram NEG-5, d 100.
GENSIM = {"analogy": 0.082, "ws353": 0.471, "words_per_s_2_cpu_cores": 611e3}
CPU_16K = {"analogy": 0.112, "ws353": 0.616, "words_per_s": 98e3}  # the same recipe, CPU
TARGET_WORDS_PER_S = 20e6  # issue 21, one H100/H200
FTZ_ATOMICS = "--xla_backend_extra_options=-nvptx-allow-ftz-atomics"
TESTS = [  # the backend-sensitive tests: bit equality (cpu_bitwise) and tolerance twins,
    "tests/test_precision.py",  # precision, on-device input, resume, several devices
    "tests/test_trainer.py",
    "tests/test_on_device.py",
    "tests/test_update.py",
    "tests/test_optimizers.py",
    "tests/test_multidevice.py",
]

_OUT = flags.DEFINE_string("out", "gpu_check.json", "The JSON file; the summary goes beside it.")
_SMOKE = flags.DEFINE_bool("cpu_smoke", False, "CPU, tiny sizes, no install: tests the script.")
_BUDGET = flags.DEFINE_float("budget_s", 470.0, "Wall-clock budget for every part together.")
_INSTALL = flags.DEFINE_bool("install", True, "Part 1: pip install the CUDA jaxlib.")
_CUDA = flags.DEFINE_enum("cuda", "auto", ["auto", "12", "13"], "CUDA major of the install.")
_WHEELS = flags.DEFINE_string("wheel_dir", "", "Offline: install the wheels found here.")
_PART = flags.DEFINE_string("part", "", "Internal: run one part and print its JSON.")
_SPEC = flags.DEFINE_string("spec", "{}", "Internal: the part's arguments (JSON).")

# Each part's time limit and the least time worth starting it with (seconds). On the GPU:
# install ~2 min when it downloads, a train part ~15-25 s of start-up and compilation plus
# its timed calls (stopped after TIMED_S), the analogy run ~10M corpus words plus its
# evaluation; the tests get what is left.
LIMITS = {"install": (150, 20), "env": (30, 5), "train": (50, 20), "analogy": (90, 40)}
LIMITS["tests"] = (120, 30)
TIMED_S = 30.0  # a train part is stopped (SIGINT, after its current call) this long after start


def pinned_jax() -> str:
    """The jax version requirements.txt pins (``jax==X``)."""
    text = (ROOT / "requirements.txt").read_text()
    return re.search(r"(?m)^jax==(\S+)", text).group(1)


def cuda_major(driver: str) -> str:
    """CUDA 13 wheels need an NVIDIA driver >= 580; older drivers take the CUDA 12 ones."""
    try:
        return "13" if int(driver.split(".")[0]) >= 580 else "12"
    except ValueError:
        return "12"


def pip_spec(cuda: str, pin: str) -> str:
    return f"jax[cuda{cuda}]=={pin}"


def pytest_counts(output: str) -> dict:
    """``{"passed": n, "failed": n, ...}`` from pytest's closing line."""
    found = re.findall(r"(\d+) (passed|failed|skipped|error|errors|xfailed|deselected)", output)
    return {word.rstrip("s") if word == "errors" else word: int(n) for n, word in found}


# ---- the parts, each run in its own process ------------------------------------------------


def _run_install(spec: dict) -> dict:
    driver = _nvidia_smi("driver_version")
    cuda = spec["cuda"] if spec["cuda"] != "auto" else cuda_major(driver or "")
    target = pip_spec(cuda, pinned_jax())
    out = {"driver": driver, "spec": target}
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--retries", "1", "--timeout", "15"]
    done = subprocess.run(
        [*cmd, target, "-r", "requirements.txt", "-e", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=spec["timeout"] - 30,
    )
    out.update(pip_rc=done.returncode, pip_tail=(done.stdout + done.stderr)[-1500:])
    wheels = sorted(pathlib.Path(spec["wheel_dir"]).glob("*.whl")) if spec["wheel_dir"] else []
    if done.returncode and wheels:  # no registry: the wheels carried beside the repository
        site = pathlib.Path(spec["site"])
        offline = subprocess.run(
            [*cmd[:4], "--no-index", "--no-deps", "--target", str(site), *map(str, wheels)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        out.update(offline_rc=offline.returncode, offline_tail=offline.stderr[-1500:])
        out["site"] = str(site) if offline.returncode == 0 else None
    out["ok"] = done.returncode == 0 or out.get("offline_rc") == 0
    return out


def _run_env(spec: dict) -> dict:
    import importlib.metadata as metadata

    import jax

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    device = jax.devices()[0]
    names = ["jax", "jaxlib", *(f"jax-cuda{c}-{p}" for c in (12, 13) for p in ("plugin", "pjrt"))]
    stats = device.memory_stats() or {}
    return {
        "versions": {n: version(n) for n in names},
        "pinned_jax": pinned_jax(),
        "jax_is_pinned": jax.__version__ == pinned_jax(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": device.device_kind,
        "bytes_limit": stats.get("bytes_limit"),
        "gpu": _nvidia_smi("name,driver_version,memory.total"),
        "python": sys.version.split()[0],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def _run_tests(spec: dict) -> dict:
    """pytest, one line per test (``-v``), so a run cut off by its time limit still says
    which tests passed and failed."""
    cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", *spec["args"]]
    try:
        done = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=spec["timeout"] - 5
        )
        output, rc = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as e:
        output, rc = (e.stdout or b"").decode(errors="replace"), "timeout"
    per_test = re.findall(r"(?m)^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR)", output)
    counts = pytest_counts(output.strip().splitlines()[-1] if output.strip() else "")
    if not counts:  # cut off before pytest's closing line
        for _, outcome in per_test:
            counts[outcome.lower()] = counts.get(outcome.lower(), 0) + 1
    return {
        "cmd": " ".join(cmd[1:]),
        "rc": rc,
        **counts,
        "failed_tests": [name for name, o in per_test if o in ("FAILED", "ERROR")][:30],
        "tail": output[-2000:],
    }


def _run_train(spec: dict) -> dict:
    """`configs/gpu.py` with ``spec["overrides"]`` through the real trainer, in a temporary
    run folder; the device's memory statistics after it. With ``stop_after_s``, a SIGINT
    at that time stops the run after its current call (the trainer's own interrupt), and
    the rates come from its last log row: a slow variant still gives a figure."""
    import jax

    from w2v_jax import interrupt, run_folder, trainer
    from w2v_jax.configs import gpu

    config = gpu.get_config()
    config.update_from_flattened_dict(spec["overrides"])
    stop = spec.get("stop_after_s")
    timer = threading.Timer(stop, os.kill, (os.getpid(), signal.SIGINT)) if stop else None
    with tempfile.TemporaryDirectory(prefix="w2v_gpu_check_") as workdir:
        if timer:
            timer.start()
        try:
            final = trainer.train_and_evaluate(config, workdir)
        except interrupt.Interrupted:
            final = {"stopped_after_s": stop}
        except KeyboardInterrupt:  # before the training loop caught signals: no figure
            final = {"stopped_after_s": stop, "error": "stopped before the first call ended"}
        finally:
            if timer:
                timer.cancel()
        logged = [r for r in run_folder.read_metrics(workdir) if "train/words_per_s" in r]
    final = {**(logged[-1] if logged else {}), **final}  # the final row, else the last row
    losses = [r["train/loss"] for r in logged if "train/loss" in r]
    stats = jax.devices()[0].memory_stats() or {}
    keep = ("step", "train/words_per_s", "train/loop_wall_s", "train/tokens", "stopped_after_s")
    keep = (*keep, "error")
    out = {k.split("/")[-1]: final.get(k) for k in keep if k in final}
    out.update({k[len("eval/") :]: v for k, v in final.items() if k.startswith("eval/")})
    out.update(
        loss=losses[-1] if losses else None,
        peak_bytes_in_use=stats.get("peak_bytes_in_use"),
        bytes_limit=stats.get("bytes_limit"),
        backend=jax.default_backend(),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        overrides=spec["overrides"],
    )
    return out


def _nvidia_smi(fields: str) -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    cmd = ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout else None


PARTS = {"install": _run_install, "env": _run_env, "tests": _run_tests, "train": _run_train}
PARTS["analogy"] = _run_train


# ---- the driver -----------------------------------------------------------------------------


class Check:
    """Runs the parts in child processes within one budget; collects their results."""

    def __init__(self, budget_s: float, smoke: bool):
        self.deadline = time.monotonic() + budget_s
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *_pythonpath()])}
        self.env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # peak memory = what is used
        if smoke:
            self.env["JAX_PLATFORMS"] = "cpu"
        self.results: dict = {}

    def run(self, name: str, kind: str, spec: dict, xla_flags: str = "", env=None) -> dict:
        limit, needed = LIMITS[kind]
        left = self.deadline - time.monotonic()
        if left < needed:
            result = {"status": "skipped", "error": f"budget: {left:.0f} s left, needs {needed}"}
        else:
            timeout = min(limit, left)
            child_env = {**self.env, **(env or {})}
            if xla_flags:
                child_env["XLA_FLAGS"] = f"{child_env.get('XLA_FLAGS', '')} {xla_flags}".strip()
            result = _child(kind, {**spec, "timeout": timeout}, timeout, child_env)
        self.results[name] = result
        print(f"{name}: {result['status']} ({result.get('wall_s', 0):.0f} s)", file=sys.stderr)
        return result


def _pythonpath() -> list[str]:
    return [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]


def _child(kind: str, spec: dict, timeout: float, env: dict) -> dict:
    cmd = [sys.executable, __file__, f"--part={kind}", f"--spec={json.dumps(spec)}"]
    start = time.monotonic()
    try:
        done = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        tail = (e.stderr or b"")[-1500:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        return {
            "status": "timeout",
            "error": f"over {timeout:.0f} s",
            "stderr_tail": tail,
            "wall_s": time.monotonic() - start,
        }
    wall = time.monotonic() - start
    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
    if done.returncode or not lines:
        error = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {
            "status": "failed",
            "error": error,
            "stderr_tail": done.stderr[-1500:],
            "wall_s": wall,
        }
    return {"status": "ok", "wall_s": wall, **json.loads(lines[-1])}


def plan(smoke: bool, data_dir: str) -> dict:
    """What the train parts run: text8-head at the gpu config's sizes, or a tiny Zipf
    corpus at tiny sizes (16,384 -> 64 rows, 65,536 -> 256; 4 steps per call)."""
    if smoke:
        base = {"corpus.name": str(pathlib.Path(data_dir) / "tiny.txt"), "corpus.min_count": 1}
        base.update({"dim": 16, "steps_per_call": 4})
        sizes = {"rows": (64, 256), "steps_per_call": 4, "calls": 3, "stop_s": None}
        return {"base": base, **sizes, "epochs": 1}
    sizes = {"rows": (16_384, 65_536), "steps_per_call": 32, "calls": 40, "stop_s": TIMED_S}
    return {"base": {"corpus.name": "text8-head"}, **sizes, "epochs": 5}


def run_all(out_path: pathlib.Path, smoke: bool, budget_s: float) -> dict:
    """Every part within ``budget_s``; writes ``out_path`` (JSON) and the summary beside it
    (``.txt``); returns the report."""
    check = Check(budget_s, smoke)
    started = time.time()
    tmp = tempfile.TemporaryDirectory(prefix="w2v_gpu_check_")
    data_dir = str(_smoke_data().write(pathlib.Path(tmp.name))) if smoke else _data_dir()
    if smoke or not _INSTALL.value:
        check.results["install"] = {"status": "skipped", "error": "--cpu_smoke or --noinstall"}
    else:
        site = str(pathlib.Path(tmp.name) / "site")
        spec = {"cuda": _CUDA.value, "wheel_dir": _WHEELS.value, "site": site}
        if check.run("install", "install", spec).get("site"):
            check.env["PYTHONPATH"] = os.pathsep.join([str(ROOT), site, *_pythonpath()])
    check.run("env", "env", {})

    sizes = plan(smoke, data_dir)
    small, large = sizes["rows"]
    timed = {
        **sizes["base"],
        "corpus.data_dir": data_dir,
        "corpus.heldout": "",
        "export": False,
        "epochs": 100,  # words/s does not depend on the schedule
        "log_every": 4 * sizes["steps_per_call"],  # a row (and a sync) every 4 calls
        "max_steps": (sizes["calls"] + 1) * sizes["steps_per_call"],
    }
    no_eval = {"W2V_DATA_DIR": ""}  # no analogy or similarity files: training only
    variants = [
        ("train/rows_small", {"batch_size": small}, ""),
        ("train/rows_large", {"batch_size": large}, ""),
        ("train/deterministic", {"batch_size": small, "deterministic": True}, ""),
        ("train/ftz_atomics", {"batch_size": small}, FTZ_ATOMICS),
        ("train/tensorfloat32", {"batch_size": small, "matmul_precision": "tensorfloat32"}, ""),
    ]
    for name, overrides, xla_flags in variants:
        spec = {"overrides": {**timed, **overrides}, "stop_after_s": sizes["stop_s"]}
        check.run(name, "train", spec, xla_flags, no_eval)
    full = {**sizes["base"], "corpus.data_dir": data_dir, "export": False, "batch_size": small}
    full["epochs"] = sizes["epochs"]  # configs/gpu.py's 5 on the GPU
    check.run("analogy", "analogy", {"overrides": full}, "", {"W2V_DATA_DIR": data_dir})
    tests = ["tests/test_accelerator_configs.py", "-k", "learning_rates"] if smoke else TESTS
    check.run("tests", "tests", {"args": tests if smoke else [*tests, "-m", "not slow"]})

    report = {
        "what": "experiments/gpu_check.py (issue 21, item 7)",
        "cpu_smoke": smoke,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "wall_s": time.time() - started,
        "rows_per_step": {"small": small, "large": large},
        "analogy_epochs": sizes["epochs"],
        "references": {
            "gensim": GENSIM,
            "cpu_16384_rows": CPU_16K,
            "target_words_per_s": TARGET_WORDS_PER_S,
        },
        "parts": check.results,
    }
    report["summary"] = summarise(report)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    out_path.with_suffix(".txt").write_text("\n".join(report["summary"]) + "\n")
    tmp.cleanup()
    return report


def _words(wps: float) -> str:
    return f"{wps / 1e6:.2f}M" if wps >= 1e6 else f"{wps / 1e3:.1f}k"


def summarise(report: dict) -> list[str]:
    """The short text summary: a line per part, failures with their error."""
    parts = report["parts"]

    def failed(name):
        part = parts.get(name, {"status": "missing"})
        return f"{part['status']}: {part.get('error', '')}".strip()

    env, lines = parts.get("env", {}), []
    if env.get("status") == "ok":
        limit = env.get("bytes_limit")
        lines.append(
            f"device: {env['device_kind']} ({env['backend']}), jax {env['versions']['jax']} "
            f"(pinned {env['pinned_jax']})" + (f", {limit / 2**30:.1f} GiB usable" if limit else "")
        )
    else:
        lines.append(f"env: {failed('env')}")
    install = parts.get("install", {})
    if install.get("status") == "ok":
        state = "ok" if install.get("ok") else f"pip failed (rc {install.get('pip_rc')})"
    else:
        state = failed("install")
    lines.append(f"install: {install.get('spec', '')} {state}".replace("  ", " "))
    rows = report["rows_per_step"]
    base = parts.get("train/rows_small", {}).get("words_per_s")
    labels = {
        "train/rows_small": f"{rows['small']:,} rows/step",
        "train/rows_large": f"{rows['large']:,} rows/step",
        "train/deterministic": "deterministic=True",
        "train/ftz_atomics": "ftz-atomics XLA flag",
        "train/tensorfloat32": "matmul_precision=tensorfloat32",
    }
    for name, label in labels.items():
        part = parts.get(name, {})
        if part.get("words_per_s") is None:
            lines.append(f"{label}: {failed(name)}")
            continue
        text = f"{label}: {_words(part['words_per_s'])} words/s"
        if base and name not in ("train/rows_small", "train/rows_large"):
            text += f" ({part['words_per_s'] / base:.2f}x the {rows['small']:,}-row run)"
        if part.get("peak_bytes_in_use"):
            text += f", peak {part['peak_bytes_in_use'] / 2**30:.2f} GiB"
        lines.append(text)
    analogy = parts.get("analogy", {})
    if analogy.get("analogy/total") is not None:
        lines.append(
            f"analogy, {rows['small']:,} rows, {report['analogy_epochs']} epochs: "
            f"{100 * analogy['analogy/total']:.2f}% "
            f"(gensim {100 * GENSIM['analogy']:.1f}%, this recipe on CPU "
            f"{100 * CPU_16K['analogy']:.1f}%), {_words(analogy.get('words_per_s') or 0)} "
            "words/s over the run"
        )
    else:
        lines.append(f"analogy: {failed('analogy')}")
    tests = parts.get("tests", {})
    counts = [f"{tests[k]} {k}" for k in ("passed", "failed", "skipped", "error") if k in tests]
    lines.append(f"tests: {', '.join(counts) if counts else failed('tests')}")
    if tests.get("failed_tests"):
        lines.append("  failed: " + " ".join(tests["failed_tests"][:10]))
    return lines


def _data_dir() -> str:
    for candidate in (os.environ.get("W2V_DATA_DIR", ""), str(ROOT.parent / "shared" / "data")):
        if candidate and (pathlib.Path(candidate) / "text8-head.txt.gz").is_file():
            return candidate
    return os.environ.get("W2V_DATA_DIR", "")  # the train parts record what is missing


def _smoke_data():
    """experiments/smoke_data.py (beside this script; also loaded when this file is)."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import smoke_data

    return smoke_data


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if _PART.value:  # a child: one part, its JSON as the last stdout line
        print(json.dumps(PARTS[_PART.value](json.loads(_SPEC.value)), default=str))
        return
    report = run_all(pathlib.Path(_OUT.value), _SMOKE.value, _BUDGET.value)
    print("\n".join(report["summary"]))


if __name__ == "__main__":
    cli.run(main)  # one-line errors, tracebacks with --verbose
