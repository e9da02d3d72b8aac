r"""Where one training epoch's time goes, per part of the step (issue 23, item 2).

  W2V_DATA_DIR=../shared/data python experiments/profile_epoch.py                  # skip-gram
  W2V_DATA_DIR=../shared/data python experiments/profile_epoch.py --model=cbow
  W2V_DATA_DIR=../shared/data python experiments/profile_epoch.py --overrides=steps_per_call=4

Trains the project's default config (`configs/text8_head.py`; ``--overrides`` as
benchmark.py's ``--ours_overrides``) for ``--epochs`` (or ``--max_steps``) under
`jax.profiler.trace`, with XLA's optimised HLO dumped beside it. XLA:CPU's thunk executor
records one trace event per executed HLO instruction (``hlo_module``, ``hlo_op``); each is
attributed to a part of the step through its instruction in the dump: what it computes (a
dot, a scatter, a gather, a sort, elementwise work; for a fusion, what its fused
computation holds) and the Python function that emitted it (the ``source_file`` /
``source_line`` of its metadata). Container instructions (``while``, ``call``,
``conditional``) are not counted, their bodies are.

Parts: *input* (`on_device`: subsampling, windows, the batch's ids), *sampler* (the
negatives and the step's key), *gather* (the step's table rows), *dots* (every dot of the
loss and its gradient), *loss maths* (the rest of the loss and its gradient),
*dedup* (`optimizers.unique_rows` and `sum_duplicates`), *optimizer* (the accumulator and
row gathers of the unique rows and the AdaGrad maths), *write-back* (the scatters into
tables and accumulators), *other*. Shares are of the summed instruction time of the
training call's module; ``busy`` is the fraction of the training loop's wall time in which
at least one of its instructions ran (the rest: the host — dispatch, logging, the Python
loop — and waits); ``by_function`` lists the top source functions. Prints a table; the
last stdout line is one JSON object (also ``--output_json``).
"""

from __future__ import annotations

import collections
import functools
import glob
import gzip
import json
import os
import pathlib
import re
import tempfile

from absl import app, flags

_MODEL = flags.DEFINE_enum("model", "skipgram", ["skipgram", "cbow"], "Model.")
_CORPUS = flags.DEFINE_string("corpus", "text8-head", "Corpus (corpus.load_corpus).")
_EPOCHS = flags.DEFINE_integer("epochs", 1, "Epochs profiled.", lower_bound=1)
_OVERRIDES = flags.DEFINE_list("overrides", [], "Config key=value,... (benchmark.py's form).")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write the JSON object here.")
_KEEP = flags.DEFINE_string("keep_dir", None, "Keep the trace and HLO dump here.")
_MAX_STEPS = flags.DEFINE_integer(
    "max_steps", 0, "Stop after this many steps (config.max_steps; 0: the whole epochs)."
)

_INSTR = re.compile(
    r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*(?:\([^=]*?\)|[^\s(]+)\s+"
    r"(?P<op>[a-z][\w\-]*)\((?P<rest>.*)$"
)
_COMP = re.compile(r"^\s*(?:ENTRY\s+)?%?(?P<name>[\w.\-]+)\s.*\{\s*$")
_CALLS = re.compile(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)")
CONTAINERS = {"while", "call", "conditional"}
PARTS = (
    "input", "sampler", "gather", "dots", "loss maths", "dedup", "optimizer", "write-back",
    "other",
)  # fmt: skip


def _frames(text: str) -> dict:
    """The optimised module's stack-frame tables: {frame id: (file name, function)}."""
    sections, current = collections.defaultdict(dict), None
    for line in text.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            current = line
            continue
        m = re.match(r"^(\d+) (.*)$", line)
        if current and m:
            sections[current][int(m[1])] = m[2]
        elif line.strip():
            current = None
    files = {i: pathlib.Path(v.strip('"')).name for i, v in sections["FileNames"].items()}
    funcs = {i: v.strip('"').split(".<locals>.")[-1] for i, v in sections["FunctionNames"].items()}
    locations = {}
    for i, v in sections["FileLocations"].items():
        f, fn = re.search(r"file_name_id=(\d+)", v), re.search(r"function_name_id=(\d+)", v)
        locations[i] = (files.get(int(f[1]), "?"), funcs.get(int(fn[1]), "?"))
    return {
        i: locations.get(int(re.search(r"file_location_id=(\d+)", v)[1]), ("?", "?"))
        for i, v in sections["StackFrames"].items()
    }


def parse_hlo(text: str) -> tuple[dict, dict]:
    """(instructions {name: (opcode, calls, (file, function) | None)}, computations {name:
    [instruction names]}) of one optimised HLO module's text; (file, function): the
    innermost Python frame that emitted the instruction (its ``stack_frame_id``)."""
    frames = _frames(text)
    instrs, comps, current = {}, collections.defaultdict(list), None
    for line in text.splitlines():
        m = _INSTR.match(line)
        if m:
            rest = m["rest"]
            frame = re.search(r"stack_frame_id=(\d+)", rest)
            instrs[m["name"]] = (
                m["op"],
                _CALLS.findall(rest),
                frames.get(int(frame[1])) if frame else None,
            )
            if current:
                comps[current].append(m["name"])
            continue
        c = _COMP.match(line)
        if c and "=" not in line.split("{")[0]:
            current = c["name"]
    return instrs, comps


def ops_inside(name: str, instrs: dict, comps: dict, depth=0) -> set:
    """Opcodes of an instruction and of the computations it calls (fusions: its body)."""
    op, calls, _ = instrs[name]
    out = {op}
    if depth < 3:
        for comp in calls:
            for inner in comps.get(comp, ()):
                out |= ops_inside(inner, instrs, comps, depth + 1)
    return out


def part_of(name: str, instrs: dict, comps: dict) -> tuple[str, str]:
    """(part, "file.py:function") of one executed instruction: the Python frame of the
    instruction itself (a fusion's is its root's), else the commonest of its fused body."""
    op, calls, frame = instrs[name]
    ops = ops_inside(name, instrs, comps)
    if frame is None:
        inner = [instrs[i][2] for c in calls for i in comps.get(c, ()) if instrs[i][2]]
        frame = collections.Counter(inner).most_common(1)[0][0] if inner else None
    file, func = frame or ("?", f"({op})")
    label = f"{file}:{func}"
    if file == "on_device.py":
        return "input", label
    if file == "sampling.py" or func == "batch_samples":
        return "sampler", label
    if ops & {"dot", "convolution"}:
        return "dots", label
    if func in ("unique_rows", "sum_duplicates", "duplicate_factor"):
        return "dedup", label
    if func == "_write" or (file == "optimizers.py" and "scatter" in ops):
        return "write-back", label
    if file == "optimizers.py":
        return "optimizer", label
    if func in ("take", "output_rows", "gather") or "gather" in ops:
        return "gather", label
    if file in ("fused.py", "terms.py", "word2vec.py", "rows.py", "__init__.py"):
        return "loss maths", label
    return "other", label


def analyse(trace_path: str, dump_dir: str) -> dict:
    """Parts, functions and busy fraction of the trace's longest-running module."""
    data = json.load(gzip.open(trace_path))
    events = data["traceEvents"] if isinstance(data, dict) else data
    per_module = collections.Counter()
    thunks = []
    for e in events:
        args = e.get("args") or {}
        if e.get("ph") == "X" and "hlo_op" in args and not e["name"].startswith("end: "):
            thunks.append((args["hlo_module"], args["hlo_op"], e["ts"], e["dur"]))
    texts = {}
    for path in glob.glob(os.path.join(dump_dir, "*after_optimizations.txt")):
        module = re.sub(r"^module_\d+\.", "", os.path.basename(path))
        module = module.split(".cpu_after_optimizations")[0].split(".after_optimizations")[0]
        texts.setdefault(module, []).append(path)
    parsed = {}
    for module, _, _, dur in thunks:
        per_module[module] += dur
    train_module = max(per_module, key=per_module.__getitem__)  # the training call
    for path in texts.get(train_module, []):
        instrs, comps = parse_hlo(pathlib.Path(path).read_text())
        parsed = {"instrs": {**parsed.get("instrs", {}), **instrs}, "comps": comps}
    instrs, comps = parsed["instrs"], parsed["comps"]
    parts, funcs = collections.Counter(), collections.Counter()
    intervals, unknown, runs = [], 0.0, collections.Counter()
    for module, op, ts, dur in thunks:
        if module != train_module:
            continue
        runs[op] += 1
        intervals.append((ts, ts + dur))
        if op not in instrs:
            unknown += dur
            parts["other"] += dur
            continue
        if instrs[op][0] in CONTAINERS:
            continue
        part, label = part_of(op, instrs, comps)
        parts[part] += dur
        funcs[f"{part}: {label}"] += dur
    intervals.sort()
    busy, end = 0.0, None
    for a, b in intervals:
        if end is None or a > end:
            busy += b - a
            end = b
        elif b > end:
            busy += b - end
            end = b
    span = intervals[-1][1] - intervals[0][0] if intervals else 0.0
    total = sum(parts.values())
    # steps in the trace (the profiler may keep fewer events than ran): the commonest
    # number of times an instruction ran, as most run once per step
    steps = collections.Counter(runs.values()).most_common(1)[0][0] if runs else 0
    return {
        "steps_traced": steps,
        "instruction_ms_per_step": 1e-3 * total / steps if steps else None,
        "module": train_module,
        "instruction_s": total / 1e6,
        "span_s": span / 1e6,
        "busy_fraction": busy / span if span else None,
        "shares": {p: parts[p] / total for p in PARTS if total},
        "seconds": {p: parts[p] / 1e6 for p in PARTS},
        "unknown_ops_s": unknown / 1e6,
        "by_function": {k: v / 1e6 for k, v in funcs.most_common(25)},
        "modules_s": {m: v / 1e6 for m, v in per_module.most_common(6)},
    }


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    keep = _KEEP.value or tempfile.mkdtemp(prefix="w2v_profile_")
    dump = os.path.join(keep, "hlo")
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={dump} --xla_dump_hlo_as_text"
    )
    import jax  # after XLA_FLAGS

    from w2v_jax import trainer
    from w2v_jax.configs import text8_head

    config = text8_head.get_config()
    config.corpus.name = _CORPUS.value
    config.corpus.heldout = ""
    config.model = _MODEL.value
    config.epochs = _EPOCHS.value
    config.eval_every = 0
    config.max_steps = _MAX_STEPS.value
    config.checkpoint_every = 10**9
    config.export = False
    # the data folder named, not found through W2V_DATA_DIR: no evaluation at the end
    config.corpus.data_dir = os.environ.pop("W2V_DATA_DIR", "")
    for item in _OVERRIDES.value:
        key, _, text = item.partition("=")
        *path, field = key.split(".")
        node = functools.reduce(getattr, path, config)
        old = getattr(node, field)
        value = text.lower() in ("1", "true") if isinstance(old, bool) else type(old)(text)
        setattr(node, field, value)
    trace_dir = os.path.join(keep, "trace")
    # No Python tracer: its events (millions in a run) can crowd the thunk executor's out
    # of the trace buffer, which then holds no training call at all.
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level = 0
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True, profiler_options=options):
        final = trainer.train_and_evaluate(config, os.path.join(keep, "run"))
    trace = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)[0]
    result = analyse(trace, dump)
    result.update(
        model=_MODEL.value,
        corpus=_CORPUS.value,
        epochs=_EPOCHS.value,
        max_steps=_MAX_STEPS.value,
        overrides=list(_OVERRIDES.value),
        loop_wall_s=final["train/loop_wall_s"],
        words_per_s=final["train/tokens"] / final["train/loop_wall_s"],
        steps=int(final["step"]),
        note="under jax.profiler: slower than unprofiled",
    )
    print(f"\n{_MODEL.value}, {_CORPUS.value}, {_EPOCHS.value} epoch(s), {result['overrides']}")
    print(
        f"loop wall {result['loop_wall_s']:.1f} s, {result['words_per_s']:,.0f} words/s "
        f"(profiled), {result['steps']} steps; {result['steps_traced']} traced, "
        f"{result['instruction_ms_per_step']:.1f} ms of instructions per step, "
        f"device busy {100 * (result['busy_fraction'] or 0):.0f}% of their span"
    )
    for part, share in result["shares"].items():
        print(f"  {part:12s} {100 * share:5.1f}%  {result['seconds'][part]:7.2f} s")
    for label, s in list(result["by_function"].items())[:15]:
        print(f"    {s:7.2f} s  {label}")
    line = json.dumps(result)
    if _OUTPUT_JSON.value:
        pathlib.Path(_OUTPUT_JSON.value).write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    app.run(main)
