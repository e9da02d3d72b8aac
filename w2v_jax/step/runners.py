"""Runs `update.train_step` one of three ways (jit, pmap, mesh), behind one small interface.

* ``single`` — ``jit`` on the default device (CPU, one GPU, one TPU core).
* ``pmap``   — one replica per local device, batch split along a leading device axis,
  summed row gradients all-gathered (`exchange.share`) so replicas stay bit-identical;
  the constants (noise table, Huffman arrays) placed on every device once.
* ``mesh``   — `jax.shard_map` over a ``(data, model)`` mesh: batch split along ``data``,
  tables replicated or split along V over ``model``, the communication written out
  (`exchange`). With several processes the mesh holds every process's devices and each
  process builds only its devices' rows (`local_rows`; `placement.input_share`).

The state is created where it lives (`Runner.create_state`: each device computes its own
shard, `parallel.placement`). On the CPU backend with several (simulated) devices every
step is synchronised: asynchronously dispatched collectives can deadlock there (see
shared/notes).
"""

from __future__ import annotations

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


def _first_step(metrics):
    """One step's metrics (pmap: replica 0's) with a leading step axis of 1."""
    return jax.tree_util.tree_map(lambda x: jnp.reshape(x, (-1,))[:1], metrics)


def _split_steps(batch, n: int):
    """A call's host batch [S·B, ...] as S steps' batches [S, B, ...]."""
    return jax.tree_util.tree_map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), batch)


def call_steps(cfg: update.StepConfig, steps_per_call: int, device_spec=None):
    """One call on one device, unjitted: ``(state, batch, aux, lrs [S]) -> (state,
    metrics [S])``, S = ``steps_per_call``. `JitRunner` jits it; point groups vmap it.

    ``batch`` holds S·B host rows (step i takes rows [i·B, (i+1)·B)). With
    ``device_spec`` (input.mode='device') the call is ``(state, feed, aux, lrs [S], num)``:
    ``feed`` is the call's `on_device.Feed`, sub-step i trains on `on_device.batch_at` of
    its own step (``state.step``), drawn on the device, and only the first ``num`` (int32,
    1..S) steps run — a run's shorter last call is the same program, not a second
    compilation (1 s of a 1.5-epoch text8-head run on this CPU); metrics past ``num``
    are zeros.
    """
    if device_spec is not None:

        def call(state, feed, aux, lrs, num):
            def step(s, lr):
                return update.train_step(
                    s, on_device.batch_at(feed, s.step, device_spec), aux, lr, cfg=cfg
                )

            shapes = jax.eval_shape(step, state, lrs[0])[1]
            zeros = jax.tree_util.tree_map(
                lambda x: jnp.zeros((len(lrs), *x.shape), x.dtype), shapes
            )

            def body(i, carry):
                s, metrics = carry
                s, new = step(s, lrs[i])
                return s, jax.tree_util.tree_map(lambda m, x: m.at[i].set(x), metrics, new)

            return jax.lax.fori_loop(0, num, body, (state, zeros))

        return call
    if steps_per_call == 1:

        def one(state, batch, aux, lrs):
            state, metrics = update.train_step(state, batch, aux, lrs[0], cfg=cfg)
            return state, jax.tree_util.tree_map(lambda x: jnp.reshape(x, (1,)), metrics)

        return one

    def scan(state, batch, aux, lrs):
        return _scan_call(cfg)(state, _split_steps(batch, steps_per_call), aux, lrs)

    return scan


def padded_rates(lrs, steps_per_call: int) -> tuple[np.ndarray, np.int32]:
    """(lrs [..., n] padded with zeros to [..., S], n): the arguments of a device-input
    call (`call_steps`) of n <= S steps."""
    lrs = np.asarray(lrs, np.float32)
    n = lrs.shape[-1]
    pad = [(0, 0)] * (lrs.ndim - 1) + [(0, steps_per_call - n)]
    return np.pad(lrs, pad), np.int32(n)


class Runner:
    """Runs steps on devices; one subclass per ``parallel.mode`` (`make_runner`), so the
    type says it: `JitRunner` ('single'), `PmapRunner`, `MeshRunner`. This base places
    everything on the default device.

    ``step_call(state, batch, aux, lrs) -> (state, metrics [S])`` runs ``len(lrs)`` =
    ``steps_per_call`` steps on ``batch`` (``steps_per_call × batch_size`` rows: step i
    takes rows [i·B, (i+1)·B)); the other methods move states between the host and the
    runner's layout.
    """

    steps_per_call: int = 1
    shardings: Any = None  # mesh: the state's NamedShardings (a sharded restore needs them)

    def step_call(self, state, batch, aux, lrs):
        raise NotImplementedError

    def put_state(self, state: update.TrainState):  # a host (restored) state, placed
        return jax.device_put(state)

    def host_state(self, state) -> update.TrainState:  # host NumPy arrays
        return jax.device_get(state)

    def put_aux(self, aux):  # the constants (noise table, Huffman arrays), placed once
        return jax.device_put(aux)

    def create_state(self, init: Callable[[], Any]):
        """``init()``'s state born in the runner's layout: each device computes its own
        shard or replica, nothing whole on one device first."""
        return jax.jit(init)()

    def state_to_save(self, state):
        """What a checkpoint saves: device arrays (its writer copies blocks to the host)."""
        return state

    def bytes_per_device(self, abstract_state) -> int:
        """What one device holds of a state like ``abstract_state`` (`jax.eval_shape`)."""
        return placement.bytes_per_device(abstract_state, self.shardings)


class JitRunner(Runner):
    """``parallel.mode='single'``: `call_steps` jitted on the default device (host batches,
    or with a ``device_spec`` batches drawn on the device, input.mode='device')."""

    def __init__(self, cfg: update.StepConfig, steps_per_call: int, device_spec=None):
        self.steps_per_call = steps_per_call
        self._device = device_spec is not None
        self._call = jax.jit(call_steps(cfg, steps_per_call, device_spec), donate_argnums=0)

    def step_call(self, state, batch, aux, lrs):
        if self._device:
            return self._call(state, batch, aux, *padded_rates(lrs, self.steps_per_call))
        return self._call(state, batch, aux, np.asarray(lrs, np.float32))


class PmapRunner(Runner):
    """``parallel.mode='pmap'``: a replica per device, one step per call; the state and
    constants stacked along a leading device axis, a checkpoint saves replica 0."""

    def __init__(self, cfg: update.StepConfig, devices: list, sync: bool):
        self._devices, self._sync = devices, sync
        self._step = pmap_step(cfg, devices)

    def step_call(self, state, batch, aux, lrs):
        (lr,) = lrs
        batch = input_pipeline.shard_batch(batch, len(self._devices))
        out = self._step(state, batch, aux, np.float32(lr))
        state, metrics = jax.block_until_ready(out) if self._sync else out
        return state, _first_step(metrics)

    def put_state(self, state):
        return replicate(state, self._devices)

    def host_state(self, state):
        return jax.device_get(unreplicate(state))

    def put_aux(self, aux):
        return replicate(aux, self._devices)  # on every device once, not every step

    def create_state(self, init):
        n, devices = len(self._devices), self._devices
        stack = lambda x: jnp.broadcast_to(x, (n, *x.shape))  # noqa: E731
        out = jax.tree_util.tree_map(lambda _: _stacked(devices), jax.eval_shape(init))
        return jax.jit(lambda: jax.tree_util.tree_map(stack, init()), out_shardings=out)()

    def state_to_save(self, state):
        return unreplicate(state)


class MeshRunner(Runner):
    """``parallel.mode='mesh'``: `jax.shard_map` over a ``(data, model)`` mesh of every
    process's devices; each process passes its share's rows (`local_rows`)."""

    def __init__(self, cfg, options: ParallelOptions, mesh, state, sync: bool):
        self.steps_per_call, self._sync = options.steps_per_call, sync
        self._step, self.shardings = mesh_step(cfg, mesh, state, options.shard_vocab)
        self._rows = NamedSharding(mesh, P("data"))
        self._replicated = NamedSharding(mesh, P())
        self._scan = None
        if options.steps_per_call > 1:
            self._scan, _ = mesh_scan_steps(cfg, mesh, state, options.shard_vocab)
            self._step_rows = NamedSharding(mesh, P(None, "data"))
        self._many = jax.process_count() > 1

    def step_call(self, state, batch, aux, lrs):
        if self._scan is None:
            (lr,) = lrs
            # Each process holds its share's rows: [B / shares, ...].
            batch = jax.tree_util.tree_map(lambda x: local_rows(self._rows, x), batch)
            out = self._step(state, batch, aux, np.float32(lr))
            state, metrics = jax.block_until_ready(out) if self._sync else out
            return state, _first_step(metrics)
        # Each process holds its share's rows of every step: [S, B / shares].
        batches = _split_steps(batch, self.steps_per_call)
        batches = jax.tree_util.tree_map(lambda x: local_rows(self._step_rows, x), batches)
        out = self._scan(state, batches, aux, np.asarray(lrs, np.float32))
        return jax.block_until_ready(out) if self._sync else out

    def put_state(self, state):
        if self._many:
            return jax.tree_util.tree_map(global_rows, self.shardings, state)
        return jax.device_put(state, self.shardings)

    def host_state(self, state):
        return gather(state)

    def put_aux(self, aux):
        if self._many:
            return jax.tree_util.tree_map(lambda x: global_rows(self._replicated, x), aux)
        return jax.device_put(aux, self._replicated)

    def create_state(self, init):
        return placement.create(init, self.shardings)


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
        return JitRunner(cfg, options.steps_per_call, device_spec)
    if mode == "single":
        return JitRunner(cfg, options.steps_per_call)
    devices = _num_devices(options)
    if mode == "pmap":
        return PmapRunner(cfg, devices, sync)
    if mode == "mesh":
        mesh = placement.make_mesh(len(devices) * jax.process_count(), options.model_axis)
        return MeshRunner(cfg, options, mesh, state, sync)
    raise errors.ConfigError(f"parallel.mode must be one of {PARALLEL}; got {mode!r}")
