"""What the compiled mesh step sends: (unique row ids, summed rows), never a table.

tests/mesh_hlo_check.py compiles the shard_map step on 4 and 8 simulated CPU devices
(one step and a scan; replicated and vocabulary-sharded tables; sparse SGD and AdaGrad;
negative sampling and hierarchical softmax) at two vocabulary sizes and lists every
collective of the optimised HLO. Before the shard_map step, XLA's partitioner
all-reduced the whole [V, D] table every SGD step (docs/training.md, "Several devices").
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).with_name("mesh_hlo_check.py")
VOCABS = {4: (20_480, 81_920), 8: (20_480,)}  # V independence read on 4 devices


def _cases(devices: int) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(devices), *map(str, VOCABS[devices])],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.parametrize("devices", [4, 8])
def test_no_collective_grows_with_the_vocabulary(devices):
    cases = _cases(devices)
    assert len(cases) == len(VOCABS[devices]) * 2 * 2 * 2 * 2  # V, loss, optimizer, sharding, scan
    by_setting = {}
    for case in cases:
        v, d, rows, slots = case["V"], case["D"], case["rows"], case["slots"]
        # The most rows one table takes in a step: B·C inputs, B·(1 + K) sampled outputs
        # or B·L tree nodes.
        updates = max(rows * slots, rows * (1 + case["k"]), rows * case["path"])
        assert case["collectives"], case  # several devices must exchange something
        assert case["largest"] <= 4 * updates * d, case
        assert case["largest"] < v * d / 4, case
        key = tuple(case[k] for k in ("loss", "optimizer", "shard_vocab", "scan"))
        ops = [(c["op"], c["type"]) for c in case["collectives"]]
        by_setting.setdefault(key, []).append((case["path"], ops))
    for key, sizes in by_setting.items():
        if len(sizes) == 1:
            continue
        (path, small), (path_large, large) = sizes
        # The same program at 4x the vocabulary; hierarchical softmax's paths grow with
        # log V (a deeper Huffman tree), and its node rows with them, checked above.
        if key[0] == "neg":
            assert small == large, (key, small, large)
        else:
            assert path_large > path, key
