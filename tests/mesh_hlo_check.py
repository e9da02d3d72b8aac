"""Run as a script with N simulated CPU devices: what the compiled mesh step sends.

``python tests/mesh_hlo_check.py N V [V ...]`` compiles the mesh step (one step and a
scan of steps; tables replicated and vocabulary-sharded; sparse SGD and AdaGrad;
skip-gram negative sampling and hierarchical softmax) at each vocabulary size V, D = 64,
256-row steps with 10 context slots, word counts ∝ 1/rank (text's Zipf law, so the
Huffman tree has text's depth), and prints one JSON object per case with every
collective of the optimised HLO (``jax.jit(...).lower(...).compile().as_text()``): its
op, result type and element count. Only shapes are used (`jax.eval_shape`): nothing of
size V is allocated. tests/test_mesh_collectives.py runs it in a subprocess (XLA_FLAGS
must be set before JAX starts) and asserts that no collective grows with V.
"""

import json
import os
import re
import sys

N = int(sys.argv[1])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={N}"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from w2v_jax.data import input_pipeline  # noqa: E402
from w2v_jax.model import output_layers  # noqa: E402
from w2v_jax.parallel import placement  # noqa: E402
from w2v_jax.step import runners, update  # noqa: E402

VOCABS = [int(v) for v in sys.argv[2:]] or [20_480]
D, B, C, S = 64, 256, 10, 4  # S: steps per call of the scan
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
# `%name = f32[2560,64]{1,0} all-reduce(` or a tuple `(f32[..], s32[..]) all-gather-start(`
_OP = re.compile(r"=\s*(?P<type>.+?)\s(?P<op>" + "|".join(COLLECTIVES) + r")(?:-start)?\(")
_SHAPE = re.compile(r"(?:pred|[a-z]+\d+)\[([\d,]*)\]")


def collectives(hlo: str) -> list[dict]:
    """Every collective instruction of an HLO module's text: op, result type, elements."""
    out = []
    for line in hlo.splitlines():
        m = _OP.search(line)
        if m is None:
            continue
        dims = [s for s in _SHAPE.findall(m.group("type"))]
        elements = sum(int(np.prod([int(d) for d in s.split(",") if d])) for s in dims)
        out.append({"op": m.group("op"), "type": m.group("type"), "elements": elements})
    return out


def setup(loss, V):
    rng = np.random.default_rng(0)
    counts = (10_000_000 // np.arange(1, V + 1)).astype(np.int64) + 1  # Zipf: ∝ 1 / rank
    batch = input_pipeline.Batch(
        rng.integers(0, V, B).astype(np.int32),
        rng.integers(0, V, (B, C)).astype(np.int32),
        (rng.random((B, C)) < 0.8).astype(np.float32),
    )
    return batch, output_layers.constants_for(loss, counts)


def main():
    for V in VOCABS:
        for loss in ("neg", "hs"):
            for optimizer in ("sgd", "adagrad"):
                cfg = update.StepConfig(
                    loss=loss, k=5, share="row", skipgram_input="context", optimizer=optimizer
                )
                batch, aux = setup(loss, V)
                state = jax.eval_shape(
                    lambda cfg=cfg, V=V: update.init_state(jax.random.PRNGKey(0), V, D, cfg)
                )
                for shard_vocab in (False, True):
                    mesh = placement.make_mesh(N, model_axis=2 if shard_vocab else 1)
                    for scan in (False, True):
                        make = runners.mesh_scan_steps if scan else runners.mesh_step
                        fn, _ = make(cfg, mesh, state, shard_vocab)
                        b = batch
                        lr = np.float32(0.1)
                        if scan:
                            b = jax.tree_util.tree_map(lambda x: np.stack([x] * S), batch)
                            lr = np.full((S,), 0.1, np.float32)
                        hlo = fn.lower(state, b, aux, lr).compile().as_text()
                        found = collectives(hlo)
                        print(
                            json.dumps(
                                {
                                    "devices": N,
                                    "loss": loss,
                                    "optimizer": optimizer,
                                    "shard_vocab": shard_vocab,
                                    "scan": scan,
                                    "V": V,
                                    "D": D,
                                    "rows": B,
                                    "slots": C,
                                    "k": cfg.k,
                                    "path": 0 if aux.codes is None else aux.codes.shape[1],
                                    "largest": max((c["elements"] for c in found), default=0),
                                    "collectives": found,
                                }
                            ),  # fmt: skip
                            flush=True,
                        )


if __name__ == "__main__":
    main()
