"""Where the train state lives: the mesh, each leaf's sharding, the state created in place,
and the check that it fits before anything is allocated.

Shape letters: V vocabulary rows, D dim, m devices along the mesh's ``model`` axis.

A state of V = 3M, D = 300 with per-element AdaGrad is 14.4 GB: built whole on one device
and then resharded, it cannot exist on a 16 GB chip even when its shards would fit. So the
state is never built whole: `create` runs the init function under ``jax.jit`` with the
shardings as ``out_shardings``, and each device computes only its shard (its rows of
every V-sharded table, a full copy of every replicated leaf). `check_fits` compares each
device's share (`bytes_per_device`, from abstract shapes: nothing allocated) with what
the device reports, and names the ways out.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from w2v_jax import errors
from w2v_jax.parallel import budget


def make_mesh(num_devices: int | None = None, model_axis: int = 1):
    """A ``(data, model)`` mesh over the first ``num_devices`` devices (every process's)."""
    devices = jax.devices()[: num_devices or len(jax.devices())]
    n = len(devices)
    if n % model_axis:
        raise errors.ConfigError(f"parallel.model_axis={model_axis} must divide {n} devices")
    return jax.make_mesh(
        (n // model_axis, model_axis),
        ("data", "model"),
        axis_types=(jax.sharding.AxisType.Auto,) * 2,
        devices=devices,
    )


def input_share(mesh, process_index: int | None = None) -> tuple[int, int]:
    """(this process's input share, the number of shares) on ``mesh``.

    Each process reads and batches only the rows its devices hold along the mesh's
    ``data`` axis: processes whose devices hold the same data rows (a model axis that
    spans them) read the same share; otherwise every process reads its own. A one-line
    ValueError when processes hold overlapping but different data rows.
    """
    me = jax.process_index() if process_index is None else process_index
    rows: dict[int, set] = {}
    for (d, _), device in np.ndenumerate(mesh.devices):
        rows.setdefault(device.process_index, set()).add(d)
    groups = sorted({tuple(sorted(r)) for r in rows.values()})
    flat = [d for g in groups for d in g]
    if len(flat) != len(set(flat)) or len({len(g) for g in groups}) != 1:
        raise errors.ConfigError(
            f"the mesh gives processes overlapping data rows ({groups}); make "
            "parallel.model_axis divide each process's devices, or be a multiple of them"
        )
    return groups.index(tuple(sorted(rows[me]))), len(groups)


def state_specs(state, model: int, shard_vocab: bool):
    """A PartitionSpec per leaf of ``state`` (an `update.TrainState` of arrays or
    `jax.ShapeDtypeStruct`s): with ``shard_vocab`` every table of ``state.params`` and its
    optimiser state ([V, D], or a row-wise / bias [V]) split along its rows over ``model``,
    everything else (the step, the key, lbl's matrices, scalars) replicated.

    A one-line ValueError when ``model`` does not divide the V vocabulary rows.
    Hierarchical softmax's table of V - 1 inner nodes splits only when ``model`` divides
    V - 1; else it stays replicated (logged).
    """
    vocab_rows = np.shape(state.params["in_embed"])[0]
    if shard_vocab and vocab_rows % model:
        raise errors.ConfigError(
            f"--config.parallel.shard_vocab=True: params['in_embed'] has {vocab_rows} rows, which "
            f"parallel.model_axis={model} does not divide; pick a model_axis (or "
            "corpus.max_vocab_size) that divides every table, or set shard_vocab=False"
        )
    split = set()
    for path, x in jax.tree_util.tree_leaves_with_path(state.params):
        rows = np.shape(x)[0]
        if len(np.shape(x)) != 2 or rows in split:
            continue
        if rows % model == 0:
            split.add(rows)
        elif shard_vocab:
            logging.info(
                "%s (%d rows) stays replicated: parallel.model_axis=%d does not divide it",
                jax.tree_util.keystr(path), rows, model,
            )  # fmt: skip

    def spec(x):
        shape = np.shape(x)
        return P("model") if shard_vocab and len(shape) in (1, 2) and shape[0] in split else P()

    replicated = lambda tree: jax.tree_util.tree_map(lambda _: P(), tree)  # noqa: E731
    return state._replace(
        step=replicated(state.step),
        params=jax.tree_util.tree_map(spec, state.params),
        opt_state=jax.tree_util.tree_map(spec, state.opt_state),
        key=replicated(state.key),
    )


def sharded_keys(params_specs: dict) -> frozenset:
    """The params keys whose leaf is split along V (their spec names ``model``)."""
    return frozenset(k for k, s in params_specs.items() if s != P())


def shardings(mesh, specs):
    """``specs`` as NamedShardings over ``mesh``."""
    return jax.tree_util.tree_map(
        lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P)
    )


def state_sharding(state, mesh, shard_vocab: bool):
    """The NamedShardings of ``state`` over ``mesh`` (`state_specs`)."""
    return shardings(mesh, state_specs(state, mesh.shape["model"], shard_vocab))


def create(init: Callable[[], object], out_shardings):
    """``init()`` computed directly into ``out_shardings``: each device builds its shard,
    no device or host ever holds a whole sharded table."""
    return jax.jit(init, out_shardings=out_shardings)()


def bytes_per_device(abstract_state, out_shardings=None) -> int:
    """The bytes one device holds of a state laid out as ``out_shardings`` (None: whole on
    one device), from shapes only (`jax.eval_shape`'s structs: nothing allocated)."""
    leaves = jax.tree_util.tree_leaves(abstract_state)
    shards = [None] * len(leaves)
    if out_shardings is not None:
        shards = jax.tree_util.tree_leaves(out_shardings)
    total = 0
    for x, sharding in zip(leaves, shards, strict=True):
        shape = x.shape if sharding is None else sharding.shard_shape(x.shape)
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize
    return total


def check_fits(need: int, what: str, ways_out: list[str], cap_bytes: int = 0):
    """A one-line `errors.ResourceError` before any allocation when ``need`` bytes per device
    (the state's, ``what`` describing it) exceed what the first local device has free,
    naming ``ways_out``."""
    device = jax.local_devices()[0]
    free, source = budget.free_bytes(device, cap_bytes)
    if free is not None and need > free:
        raise errors.ResourceError(
            f"the train state ({what}) needs {need / 2**30:.2f} GiB per device but "
            f"{device.platform} has {free / 2**30:.2f} GiB free ({source}); "
            + "; or ".join(ways_out)
        )
