"""Runs `update.train_step` one of three ways (jit, pmap, mesh), behind one small interface.

* ``single`` — ``jit`` on the default device (CPU, one GPU, one TPU core).
* ``pmap``   — one replica per local device, batch split along a leading device axis,
  summed row gradients all-gathered (`exchange.share`) so replicas stay bit-identical;
  the constants (noise table, Huffman arrays) placed on every device once.
* ``mesh``   — `jax.shard_map` over a ``(data, model)`` mesh: batch split along ``data``,
  tables replicated or split along V over ``model``. The communication is written out,
  not left to XLA's partitioner: each device sums its duplicate rows and the devices
  exchange (unique ids, summed rows), O(rows · D) per step, never O(V · D)
  (`exchange`; tests/test_mesh_collectives.py reads it from the compiled program). With
  several processes (`w2v_jax.distributed`) the mesh holds every process's devices; each
  process reads its own share of the corpus and builds only its devices' rows
  (`local_rows`; `placement.input_share`), so the input work is split like the step.

The state is created where it lives (`Runner.create_state`: each device computes its own
shard, `parallel.placement`). On the CPU backend with several (simulated) devices every
step is synchronised: asynchronously dispatched collectives can deadlock there (see
shared/notes).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from w2v_jax import errors
from w2v_jax.data import input_pipeline, on_device
from w2v_jax.parallel import placement
from w2v_jax.step import update

PARALLEL = ("single", "pmap", "mesh")


class ParallelOptions(NamedTuple):
    """How steps run on devices (`settings.resolve` builds it)."""

    mode: str  # "single" (jit), "pmap", "mesh" (jit + NamedSharding)
    num_devices: int  # 0 = all local devices
    model_axis: int  # mesh: devices along the vocabulary axis
    shard_vocab: bool  # mesh: shard the tables along V over "model"
    steps_per_call: int  # sequential steps per jitted call (lax.scan)


def jit_step(cfg: update.StepConfig):
    """Single device: ``jit`` with the state donated."""
    return jax.jit(functools.partial(update.train_step, cfg=cfg), donate_argnums=0)


def _scan_call(cfg: update.StepConfig, axes: update.Axes | None = None):
    def call(state, batches, aux, lrs):
        def body(s, x):
            batch, lr = x
            return update.train_step(s, batch, aux, lr, cfg=cfg, axes=axes)

        return jax.lax.scan(body, state, (batches, lrs))

    return call


def scan_steps(cfg: update.StepConfig):
    """Single device, several steps per call: ``lax.scan`` over a batch split in S parts.

    ``(state, batches [S, B, ...], aux, lrs [S]) -> (state, metrics [S])``. Every sub-step
    sees the parameters its predecessor wrote (sequential SGD, as word2vec) without a
    Python dispatch or a host batch per step.
    """
    return jax.jit(_scan_call(cfg), donate_argnums=0)


def pmap_step(cfg: update.StepConfig, devices=None):
    """``jax.pmap`` over a leading device axis of state, batch and aux; lr replicated.

    The state and aux must be replicated (`replicate`) and the batch laid out
    ``[n, B/n, ...]`` (`input_pipeline.shard_batch`).
    """
    fn = functools.partial(update.train_step, cfg=cfg, axis_name="devices")
    return jax.pmap(
        fn, axis_name="devices", in_axes=(0, 0, 0, None), donate_argnums=0, devices=devices
    )


def _stacked(devices):
    return NamedSharding(jax.sharding.Mesh(np.asarray(devices), ("devices",)), P("devices"))


def replicate(tree, devices):
    """Stacks ``tree`` onto every device of ``devices`` (leading device axis), as pmap wants.

    (``jax.device_put_replicated`` is deprecated in this JAX; this is its replacement.)
    """
    n = len(devices)
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(np.stack([np.asarray(x)] * n), _stacked(devices)), tree
    )


def unreplicate(tree):
    return jax.tree_util.tree_map(lambda x: x[0], tree)


def _mesh_jit(call, mesh, state, shard_vocab: bool, batch_spec: P, lr_spec: P):
    """``call(state, batch, aux, lr, axes=...)`` as `jax.shard_map` over ``mesh``, jitted:
    the batch split as ``batch_spec``, tables replicated or V-sharded
    (`placement.state_specs`), aux and metrics replicated. ``state`` may be abstract."""
    specs = placement.state_specs(state, mesh.shape["model"], shard_vocab)
    axes = update.Axes("data", "model", placement.sharded_keys(specs.params))
    fn = jax.shard_map(
        functools.partial(call, axes=axes),
        mesh=mesh,
        in_specs=(specs, batch_spec, P(), lr_spec),
        out_specs=(specs, P()),
        check_vma=False,  # metrics and replicated tables are equal on every device by design
    )
    st_sh = placement.shardings(mesh, specs)
    rep = NamedSharding(mesh, P())
    batch_sh = NamedSharding(mesh, batch_spec)
    jitted = jax.jit(
        fn,
        in_shardings=(st_sh, batch_sh, rep, NamedSharding(mesh, lr_spec)),
        out_shardings=(st_sh, rep),
        donate_argnums=0,
    )
    return jitted, st_sh


def mesh_step(cfg: update.StepConfig, mesh, state, shard_vocab: bool = False):
    """One step over a device mesh (module doc): ``(jitted fn, the state's shardings)``.

    Random draws use the global shape (each device takes its slice), so the result equals
    the single-device step on the global batch up to the order of float32 sums.
    """
    call = lambda s, b, a, lr, axes: update.train_step(s, b, a, lr, cfg=cfg, axes=axes)  # noqa: E731
    return _mesh_jit(call, mesh, state, shard_vocab, P("data"), P())


def mesh_scan_steps(cfg: update.StepConfig, mesh, state, shard_vocab: bool = False):
    """`scan_steps` over a device mesh: each sub-step's rows split along ``data``."""
    call = lambda s, b, a, lrs, axes: _scan_call(cfg, axes)(s, b, a, lrs)  # noqa: E731
    return _mesh_jit(call, mesh, state, shard_vocab, P(None, "data"), P())


def device_scan_steps(cfg: update.StepConfig, spec: on_device.Spec):
    """Single device, batches drawn on the device: ``(state, feed, aux, lrs [S]) ->
    (state, metrics [S])``.

    Sub-step i trains on `on_device.batch_at` of its own step (``state.step``), drawn inside
    the ``lax.scan`` body from the call's `on_device.Feed`; the host sends only the learning
    rates. A call of fewer steps (a run's last) compiles once more.
    """

    def call(state, feed, aux, lrs):
        def body(s, lr):
            batch = on_device.batch_at(feed, s.step, spec)
            return update.train_step(s, batch, aux, lr, cfg=cfg)

        return jax.lax.scan(body, state, lrs)

    return jax.jit(call, donate_argnums=0)


def _create_single(init):
    return jax.jit(init)()


@dataclasses.dataclass
class Runner:
    step: Callable[..., tuple[Any, dict]]  # (state, host batch, aux, lr) -> (state, metrics)
    put_state: Callable[[update.TrainState], Any]  # host (restored) state -> runner layout
    host_state: Callable[[Any], update.TrainState]  # runner layout -> host numpy state
    put_aux: Callable[[Any], Any] = jax.device_put  # constants, transferred once
    steps_per_call: int = 1
    scan: Callable[..., tuple[Any, dict]] | None = None  # scan_steps, when S > 1
    sync: bool = False  # block after every call (multi-device CPU, see the module doc)
    on_device: bool = False  # step_call's batch is an `on_device.Feed` (device_scan_steps)
    # What a checkpoint saves: the state's device arrays themselves (the checkpoint writer
    # copies the blocks it writes to the host); pmap: one replica. None: the state as is.
    saved_state: Callable[[Any], Any] | None = None
    shardings: Any = None  # mesh: the state's NamedShardings (a sharded restore needs them)
    # init () -> state, run so that the state is born in the runner layout: each device
    # computes its own shard or replica, nothing whole on one device first.
    create_state: Callable[[Callable[[], Any]], Any] = _create_single

    def bytes_per_device(self, abstract_state) -> int:
        """What one device holds of a state like ``abstract_state`` (`jax.eval_shape`)."""
        return placement.bytes_per_device(abstract_state, self.shardings)

    def state_to_save(self, state):
        """The arrays a checkpoint saves of ``state`` (device arrays, not fetched here)."""
        return state if self.saved_state is None else self.saved_state(state)

    def host_params(self, state) -> dict:
        return self.host_state(state).params

    def step_call(self, state, batch, aux, lrs):
        """Runs ``len(lrs)`` = ``steps_per_call`` SGD steps on ``batch`` in one call.

        ``batch`` holds ``steps_per_call × batch_size`` rows; step i takes rows
        [i·B, (i+1)·B). Returns the state and metrics with a leading step axis.
        With ``on_device``, ``batch`` is the call's `on_device.Feed` and ``lrs`` may be shorter.
        """
        if self.on_device:
            return self.scan(state, batch, aux, np.asarray(lrs, np.float32))
        if self.scan is None:
            (lr,) = lrs
            state, metrics = self.step(state, batch, aux, lr)
            return state, jax.tree_util.tree_map(lambda x: jnp.reshape(x, (-1,))[:1], metrics)
        n = self.steps_per_call
        split = jax.tree_util.tree_map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), batch)
        out = self.scan(state, split, aux, np.asarray(lrs, np.float32))
        return jax.block_until_ready(out) if self.sync else out


def global_rows(sharding, x):
    """The global array ``x`` (the same host array in every process) laid out as
    ``sharding``: each process transfers only the slices its own devices hold."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.device_put(x, sharding)  # already global (a sharded restore)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def local_rows(sharding, x):
    """The global batch of which ``x`` is this process's share (the rows its devices
    hold along the data axis; `placement.input_share`): every process passes as many
    rows, and the global shape is inferred from the sharding. One process: ``x`` whole."""
    return jax.make_array_from_process_local_data(sharding, np.asarray(x))


def gather(tree):
    """Host (NumPy) copies of ``tree``'s arrays, gathered from every process if need be.

    With several processes this is a collective: every process must call it."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def mesh_shape(options: ParallelOptions, batch_size: int) -> tuple[int, int]:
    """The ``(data, model)`` mesh ``options`` asks for over every process's devices; a
    one-line ValueError when it does not divide the devices or the batch."""
    local = jax.local_device_count()
    n = options.num_devices or local
    if jax.process_count() > 1 and n != local:
        raise errors.ConfigError(
            f"--config.parallel.num_devices={n}: with {jax.process_count()} processes each "
            f"uses all its {local} local devices; set it to 0"
        )
    total = n * jax.process_count()
    if total % options.model_axis:
        raise errors.ConfigError(
            f"--config.parallel.model_axis={options.model_axis} must divide the {total} devices "
            f"({jax.process_count()} processes x {n}); choose a divisor of {total}"
        )
    data = total // options.model_axis
    if batch_size % data:
        raise errors.ConfigError(
            f"--config.batch_size={batch_size} must be a multiple of the mesh's data axis "
            f"({data} = {total} devices / parallel.model_axis={options.model_axis})"
        )
    return data, options.model_axis


def _num_devices(options: ParallelOptions) -> list:
    devices = jax.local_devices()
    n = options.num_devices or len(devices)
    if n > len(devices):
        raise errors.ConfigError(
            f"parallel.num_devices={n} but only {len(devices)} local devices exist; "
            "lower it (on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N simulates N)"
        )
    return devices[:n]


def make_runner(
    options: ParallelOptions,
    cfg: update.StepConfig,
    state: update.TrainState,
    device_spec: on_device.Spec | None = None,
) -> Runner:
    """The runner ``options.mode`` asks for, running ``cfg`` steps on states like ``state``;
    with ``device_spec`` (single mode only) each call draws its batches on the device."""
    mode = options.mode
    sync = jax.default_backend() == "cpu" and mode != "single"
    if device_spec is not None:
        if mode != "single":
            raise errors.ConfigError(
                f"input.mode='device' needs parallel.mode='single', not {mode!r}"
            )
        return Runner(
            step=None,
            put_state=jax.device_put,
            host_state=jax.device_get,
            steps_per_call=options.steps_per_call,
            scan=device_scan_steps(cfg, device_spec),
            on_device=True,
        )
    if mode == "single":
        fn = jit_step(cfg)
        many = options.steps_per_call
        return Runner(
            step=lambda s, b, a, lr: fn(s, b, a, np.float32(lr)),
            put_state=jax.device_put,
            host_state=jax.device_get,
            steps_per_call=many,
            scan=scan_steps(cfg) if many > 1 else None,
        )
    devices = _num_devices(options)
    if mode == "pmap":
        fn = pmap_step(cfg, devices)
        n = len(devices)

        def step(s, b, a, lr):
            out = fn(s, input_pipeline.shard_batch(b, n), a, np.float32(lr))
            return jax.block_until_ready(out) if sync else out

        def create(init):
            stack = lambda x: jnp.broadcast_to(x, (n, *x.shape))  # noqa: E731
            out = jax.tree_util.tree_map(lambda _: _stacked(devices), jax.eval_shape(init))
            return jax.jit(lambda: jax.tree_util.tree_map(stack, init()), out_shardings=out)()

        return Runner(
            step=step,
            put_state=lambda s: replicate(s, devices),
            host_state=lambda s: jax.device_get(unreplicate(s)),
            put_aux=lambda a: replicate(a, devices),  # on every device once, not every step
            saved_state=unreplicate,
            create_state=create,
        )
    if mode == "mesh":
        mesh = placement.make_mesh(len(devices) * jax.process_count(), options.model_axis)
        fn, st_sh = mesh_step(cfg, mesh, state, options.shard_vocab)
        data_sh = NamedSharding(mesh, P("data"))
        scan = None
        if options.steps_per_call > 1:
            scan_fn, _ = mesh_scan_steps(cfg, mesh, state, options.shard_vocab)
            scan_sh = NamedSharding(mesh, P(None, "data"))

            def scan(s, batches, a, lrs):
                # Each process holds its share's rows of every step: [S, B / shares].
                batches = jax.tree_util.tree_map(lambda x: local_rows(scan_sh, x), batches)
                return scan_fn(s, batches, a, lrs)

        def step(s, b, a, lr):
            # Each process holds its share's rows: [B / shares, ...].
            b = jax.tree_util.tree_map(lambda x: local_rows(data_sh, x), b)
            out = fn(s, b, a, np.float32(lr))
            return jax.block_until_ready(out) if sync else out

        many = jax.process_count() > 1
        rep = NamedSharding(mesh, P())
        return Runner(
            step=step,
            put_state=lambda s: (
                jax.tree_util.tree_map(global_rows, st_sh, s) if many else jax.device_put(s, st_sh)
            ),  # fmt: skip
            host_state=gather,
            put_aux=lambda a: (
                jax.tree_util.tree_map(lambda x: global_rows(rep, x), a)
                if many
                else jax.device_put(a, rep)
            ),  # fmt: skip
            steps_per_call=options.steps_per_call,
            scan=scan,
            sync=sync,
            shardings=st_sh,
            create_state=lambda init: placement.create(init, st_sh),
        )
    raise errors.ConfigError(f"parallel.mode must be one of {PARALLEL}; got {mode!r}")
