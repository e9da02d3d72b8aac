"""Run as a script with 4 simulated CPU devices: one checkpoint restored across meshes.

``python tests/checkpoint_mesh_check.py`` saves a sparse-AdaGrad train state from one
layout and restores it onto the next, along 1 device (replicated) -> 2 devices split
along V -> 4 devices (data 2 x model 2, split) -> 4 devices replicated (data 4) -> host
arrays -> 1 device, and prints one JSON object per layout: whether the restored arrays
equal the saved ones bit for bit and carry the layout's shardings, and what the step
folder holds (pieces per array, bytes of pieces against the state's bytes).
tests/test_checkpoint.py runs it in a subprocess (XLA_FLAGS must be set before JAX starts).
"""

import json
import os
import sys
import tempfile

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from w2v_jax import resume  # noqa: E402
from w2v_jax.checkpoint import store  # noqa: E402
from w2v_jax.parallel import placement  # noqa: E402
from w2v_jax.step import update  # noqa: E402

V, D = 12, 4
# (name, devices, model axis, split along V); None: host arrays (a one-device run)
LAYOUTS = [
    ("1 device", 1, 1, False),
    ("2 devices, split", 2, 2, True),
    ("data 2 x model 2, split", 4, 2, True),
    ("data 4, replicated", 4, 1, False),
    ("host", None, None, None),
    ("1 device again", 1, 1, False),
]


def main(root: str) -> None:
    cfg = update.StepConfig(model="skipgram", loss="neg", k=2, optimizer="adagrad", sparse=True)
    state = update.init_state(jax.random.PRNGKey(0), V, D, cfg)
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 8))
    state = state._replace(  # distinct values in every row
        params={k: v + jax.random.normal(next(keys), v.shape) for k, v in state.params.items()},
        opt_state={k: v + 1.0 for k, v in state.opt_state.items()},
    )
    want = jax.device_get(state)
    state_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(want))
    previous = None
    for step, (name, devices, model, split) in enumerate(LAYOUTS):
        shardings = None
        if devices is not None:
            mesh = placement.make_mesh(devices, model)
            shardings = placement.state_sharding(state, mesh, split)
        ckpt = resume.Checkpoints(root, {"a": 1}, 100, 10, 0.0, shardings=shardings)
        row = {"layout": name}
        if previous is None:  # the first layout: place the state there
            got = jax.device_put(state, shardings)
        else:
            resumed = ckpt.resume(state, override=False)
            got = resumed.state
            row["from"], row["step"] = previous, int(np.asarray(resumed.meta["step"]))
        leaves, targets = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(shardings)
        row["identical"] = all(
            np.array_equal(np.asarray(a), b)
            for a, b in zip(leaves, jax.tree_util.tree_leaves(want), strict=True)
        )
        row["placed"] = (
            shardings is None
            and all(isinstance(x, np.ndarray) for x in leaves)
            or all(x.sharding == s for x, s in zip(leaves, targets, strict=True))
        )
        ckpt.save(got, (0, step), step, None)
        ckpt.close()
        meta = store.read_meta(store.latest(store.folder_in(root)))
        row["pieces_per_array"] = [
            sum(p["leaf"] == i for p in meta["pieces"]) for i in range(len(meta["arrays"]))
        ]
        row["piece_bytes"] = sum(
            int(np.prod(p["shape"], dtype=np.int64)) * np.dtype(p["dtype"]).itemsize
            for p in meta["pieces"]
        )
        row["state_bytes"] = state_bytes
        print(json.dumps(row), flush=True)
        previous = name


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
