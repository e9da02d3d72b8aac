"""Several runs that share every array shape, trained as one program: `train_group`.

The runs' configs may differ only in `VMAPPED_FIELDS`. Their states are stacked along a
leading points axis P and one jitted ``jax.vmap`` of the trainer's own call
(`runners.call_steps`) updates every point per call, through the trainer's loop
(`trainer.train_points`; this module only says how a group steps, `_Group`); everything
else is `run.host.Run`'s, per point, so each run folder reads as if the point had trained
alone. Each point reads its own batches (shared when the pipelines are identical); one
whose stream ends first steps on filler batches whose results are discarded. A point that
fails is reported in the result list; the others go on. Only ``parallel.mode='single'`` in
one process (`why_alone`). Input, equality with separate runs and limits:
docs/training.md, "Sweeps in one program".

Shape letters: P points, S steps per call, B batch rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from w2v_jax import errors, resume, trainer
from w2v_jax.run import host
from w2v_jax.step import runners, update

# Config fields the points of a group may differ in. ``optimizer.initial_accumulator`` only
# fills the optimiser state at step 0; the others are per-point arrays of the step
# (learning rates, noise tables) or its keys. ``loss.penalty`` does not reach the step yet.
VMAPPED_FIELDS = (
    "seed",
    "optimizer.alpha",
    "optimizer.min_alpha",
    "loss.ns_exponent",
    "optimizer.initial_accumulator",
)


def why_alone(config: ml_collections.ConfigDict) -> str | None:
    """Why ``config`` cannot join a group (None if it can)."""
    if config.parallel.mode != "single":
        return f"parallel.mode={config.parallel.mode!r} (groups run 'single')"
    if jax.process_count() > 1:
        return f"{jax.process_count()} processes (groups run in one)"
    return None


def group_key(config: ml_collections.ConfigDict) -> str | None:
    """Configs with equal keys can train as one group; None: this one trains alone."""
    if why_alone(config) is not None:
        return None
    shared = {k: v for k, v in resume.flatten(config.to_dict()).items() if k not in VMAPPED_FIELDS}
    return json.dumps(shared, sort_keys=True, default=str)


def plan(configs: Sequence[ml_collections.ConfigDict]) -> list[list[int]]:
    """Indices of ``configs`` in groups (first-appearance order); a config that cannot join
    a group, or has no partner, is a group of one."""
    groups: dict = {}
    for i, config in enumerate(configs):
        key = group_key(config)
        groups.setdefault(("alone", i) if key is None else key, []).append(i)
    return list(groups.values())


def check_group(configs: Sequence[ml_collections.ConfigDict]) -> None:
    """One-line ValueError unless ``configs`` can train as one group."""
    if not configs:
        raise errors.ConfigError("a group needs at least one config")
    for i, config in enumerate(configs):
        reason = why_alone(config)
        if reason is not None:
            raise errors.ConfigError(f"point {i} cannot join a group: {reason}; train it alone")
    first = resume.flatten(configs[0].to_dict())
    for i, config in enumerate(configs[1:], 1):
        for field, value in resume.flatten(config.to_dict()).items():
            if field not in VMAPPED_FIELDS and first.get(field) != value:
                raise errors.ConfigError(
                    f"config.{field} differs between points 0 ({first.get(field)!r}) and {i} "
                    f"({value!r}); a group may differ only in {', '.join(VMAPPED_FIELDS)}"
                )


def stack(trees: Sequence):
    """Stacks pytrees of the same structure along a new leading axis P (None leaves stay)."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def point(tree, index: int):
    """Point ``index``'s slice of a stacked pytree."""
    return jax.tree_util.tree_map(lambda x: x[index], tree)


class _FeedStack:
    """Stacks the points' `on_device.Feed`s, once per change: a feed's arrays (the data key,
    the epochs' compacted corpora) stay the same objects from call to call within an epoch,
    so the stacked copy of the last call is reused until one of them changes."""

    def __init__(self):
        self.leaves: list = []
        self.stacked = None

    def __call__(self, feeds: Sequence):
        leaves = jax.tree_util.tree_leaves(list(feeds))
        same = len(leaves) == len(self.leaves)
        if not (same and all(a is b for a, b in zip(leaves, self.leaves, strict=True))):
            self.leaves, self.stacked = leaves, stack(feeds)  # holds the leaves: no id reuse
        return self.stacked


def _all_equal(trees: Sequence) -> bool:
    leaves = [jax.tree_util.tree_leaves(t) for t in trees]
    return all(
        len(other) == len(leaves[0])
        and all(np.array_equal(a, b) for a, b in zip(leaves[0], other, strict=True))
        for other in leaves[1:]
    )


def group_steps(
    cfg: update.StepConfig, steps_per_call: int, batch_axis, aux_axis, device_spec=None
):
    """One jitted call of ``steps_per_call`` steps for every point:
    ``(states [P], batch, aux, lrs [P, S]) -> (states [P], metrics [P, S])`` (device
    input: ``num`` after ``lrs``, the steps to run, shared by every point).

    ``batch`` holds S·B rows per point, stacked [P, S·B, ...] (``batch_axis=0``) or shared
    (None), or with ``device_spec`` (input.mode='device') the call's `on_device.Feed`;
    ``aux`` likewise. The per-point function is `runners.JitRunner`'s, so each point
    takes the same steps it would alone.
    """
    one = runners.call_steps(cfg, steps_per_call, device_spec)
    axes = (0, batch_axis, aux_axis, 0) + ((None,) if device_spec is not None else ())
    return jax.jit(jax.vmap(one, in_axes=axes), donate_argnums=0)


def train_group(
    configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str]
) -> list[dict | Exception]:
    """Trains every ``configs[i]`` in ``workdirs[i]`` together; returns, per point, its final
    metrics (as `trainer.train_and_evaluate` would) or the exception that stopped it.

    Raises ValueError (before any work) when the configs cannot form a group
    (`check_group`), and `interrupt.Interrupted` on Ctrl-C / SIGTERM after saving every
    point still training.
    """
    if len(configs) != len(workdirs):
        raise errors.ConfigError(f"{len(configs)} configs but {len(workdirs)} workdirs")
    check_group(configs)
    results: list = [None] * len(configs)
    runs: dict[int, host.Run] = {}  # point -> its run, for those left to train
    dataset = None  # identical settings: every point reads the same corpus
    for p, (config, workdir) in enumerate(zip(configs, workdirs, strict=True)):
        try:
            run = trainer.open_run(config, workdir, with_runner=False, dataset=dataset)
        except Exception as e:  # noqa: BLE001  (a bad run folder fails its point only)
            logging.error("point %s failed before training: %s", workdir, e)
            results[p] = e
            continue
        dataset = run.dataset
        if run.done is not None:
            results[p] = run.done
            run.owner.release()
        else:
            runs[p] = run
    # On-device input: a call's sub-steps are a function of its first step, so points
    # resumed at different steps train in one group per step.
    by_step: dict = {}
    for p, run in runs.items():
        key = run.at.step if run.device_spec is not None else None
        by_step.setdefault(key, {})[p] = run
    try:
        for part in by_step.values():
            group = list(part.values())
            state = stack([run.state for run in group])
            for p, result in zip(
                part, trainer.train_points(group, _Group(group), state), strict=True
            ):
                results[p] = result
    finally:  # every point's folder is free again, however the group ended
        for run in runs.values():
            run.owner.release()
    return results


class _Group:
    """`trainer.train_points`' calls for several runs as one: their states stacked [P],
    one vmapped call (`group_steps`) for every point, each point's failure its own."""

    group = True  # point s's metrics at s; one point's failure stops only that point

    def __init__(self, runs: Sequence[host.Run]):
        first = runs[0]
        per_call = first.settings.parallel.steps_per_call
        pipelines = [(run.settings.pipeline, run.at.position) for run in runs]
        self.shared_input = all(x == pipelines[0] for x in pipelines)
        aux_list = [run.aux for run in runs]
        shared_aux = _all_equal(aux_list)
        self.aux = jax.device_put(aux_list[0] if shared_aux else stack(aux_list))
        self.call = group_steps(
            first.settings.step, per_call, None if self.shared_input else 0,
            None if shared_aux else 0, first.device_spec,
        )  # fmt: skip
        self.streams = [run.calls(per_call) for run in (runs[:1] if self.shared_input else runs)]
        how = {True: "shared", False: "per-point"}
        logging.info(
            "training %d points as one group: %s input, %s noise tables",
            len(runs), how[self.shared_input], how[shared_aux],
        )  # fmt: skip
        self.points = len(runs)
        self.per_call = per_call
        self.device = first.device_spec is not None
        self.stack_feeds = _FeedStack()

    def next_calls(self, active: set) -> dict:
        if self.shared_input:
            item = next(self.streams[0], (None, 0))
            return {s: item for s in active}
        return {s: next(self.streams[s], (None, 0)) for s in sorted(active)}

    def step(self, state, calls: dict, lrs: dict):
        """One call for every point: ``lrs`` holds the points still training, the others
        step on filler batches whose results are discarded."""
        first = calls[min(lrs)]
        n = first[1]  # device input: the last call may be shorter (for all)
        lr = np.zeros((self.points, n), np.float32)
        for s, point_lrs in lrs.items():
            lr[s] = point_lrs
        filler = first[0].batch
        if self.shared_input:
            batch = filler
        else:
            batches = [calls[s][0].batch if s in lrs else filler for s in range(self.points)]
            if self.device:
                batch = self.stack_feeds(batches)
            else:  # host batches [rows, ...] stacked [P, rows, ...]
                batch = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *batches)
        if self.device:  # the padded rates and n: one program for the last call too
            return self.call(state, batch, self.aux, *runners.padded_rates(lr, self.per_call))
        return self.call(state, batch, self.aux, lr)

    def host_state(self, state, s: int) -> update.TrainState:
        return jax.device_get(point(state, s))

    state_to_save = host_state
