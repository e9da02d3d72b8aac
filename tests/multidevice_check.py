"""Run as a script with N simulated CPU devices: single vs pmap vs mesh steps.

``python tests/multidevice_check.py N [LOSSES [OPTIMIZERS [MODELS]]]`` prints one JSON
object per (model, loss, optimizer) with the max abs difference to the single-device step,
whether pmap replicas are bit-identical (`pmap_replicas_identical`) and the max abs
difference between them (`pmap_replica_diff`). tests/test_multidevice.py runs it in a
subprocess (XLA_FLAGS must be set before JAX starts).
"""

import json
import os
import sys

N = int(sys.argv[1])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={N}"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from w2v_jax.data import input_pipeline  # noqa: E402
from w2v_jax.model import output_layers  # noqa: E402
from w2v_jax.parallel import placement  # noqa: E402
from w2v_jax.step import runners, update  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
V, D, B, C = 40, 8, 16, 4
LOSSES = sys.argv[2].split(",") if len(sys.argv) > 2 else ["neg", "nce", "softmax", "hs"]
OPTIMIZERS = sys.argv[3].split(",") if len(sys.argv) > 3 else ["sgd", "adam"]
MODELS = sys.argv[4].split(",") if len(sys.argv) > 4 else ["skipgram", "cbow"]


def setup(loss):
    rng = np.random.default_rng(0)
    counts = np.sort(rng.integers(1, 500, V))[::-1].astype(np.int64)
    batch = input_pipeline.Batch(
        rng.integers(0, V, B).astype(np.int32),
        rng.integers(0, V, (B, C)).astype(np.int32),
        (rng.random((B, C)) < 0.8).astype(np.float32),
    )
    return batch, output_layers.constants_for(loss, counts)


def fresh(cfg):
    st = update.init_state(jax.random.PRNGKey(0), V, D, cfg)
    key = jax.random.PRNGKey(1)
    params = {k: v + 0.1 * jax.random.normal(key, v.shape) for k, v in st.params.items()}
    opt = st.opt_state if not (cfg.optimizer == "sgd" and cfg.sparse) else ()
    return jax.device_get(st._replace(params=params, opt_state=opt))


def run_steps(fn, state, batch, aux, steps=3):
    for _ in range(steps):
        state, _ = fn(state, batch, aux, np.float32(0.1))
        jax.block_until_ready(state)
    return state


def max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in a)


def main():
    devices = jax.devices()[:N]
    for model_name in MODELS:
        for loss in LOSSES:
            for optimizer in OPTIMIZERS:
                sparse = optimizer != "adam"  # adam has no sparse form
                cfg = update.StepConfig(
                    model=model_name, loss=loss, k=3, optimizer=optimizer, sparse=sparse
                )
                batch, aux = setup(loss)
                ref = run_steps(runners.jit_step(cfg), fresh(cfg), batch, aux)
                ref_p = jax.device_get(ref.params)

                pm = runners.pmap_step(cfg, devices)
                st = runners.replicate(fresh(cfg), devices)
                sharded = input_pipeline.shard_batch(batch, N)
                aux_replicated = runners.replicate(aux, devices)
                for _ in range(3):
                    st, _ = pm(st, sharded, aux_replicated, np.float32(0.1))
                    jax.block_until_ready(st)
                host = jax.device_get(st.params)
                identical = all(bool(np.all(v == v[:1])) for v in host.values())
                replica_diff = max(float(np.max(np.abs(v - v[:1]))) for v in host.values())
                pm_p = {k: v[0] for k, v in host.items()}

                out = {"model": model_name, "loss": loss, "optimizer": optimizer}
                out["pmap_diff"] = max_diff(ref_p, pm_p)
                out["pmap_replicas_identical"] = identical
                out["pmap_replica_diff"] = replica_diff
                meshes = {"mesh_diff": (False, 1), "mesh_vocab_diff": (True, N)}
                if N >= 4:  # batch split over 2 and tables over N / 2: both exchanges
                    meshes["mesh_2d_diff"] = (True, N // 2)
                for key, (shard_vocab, model_axis) in meshes.items():
                    mesh = placement.make_mesh(N, model_axis=model_axis)
                    state0 = fresh(cfg)
                    fn, st_sh = runners.mesh_step(cfg, mesh, state0, shard_vocab)
                    st = jax.device_put(state0, st_sh)
                    data_sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
                    b = jax.device_put(batch, data_sh)
                    st = run_steps(fn, st, b, aux)
                    out[key] = max_diff(ref_p, jax.device_get(st.params))
                print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
