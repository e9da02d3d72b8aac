"""The issue-7 benchmark programs run end to end on tiny settings and end with their JSON.

gensim is optional: with it the benchmark runs both sides, without it our side only.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _has_gensim() -> bool:
    try:
        import gensim.models.word2vec  # noqa: F401
    except Exception:  # absent, or a broken install: the benchmark runs our side only
        return False
    return True


HAS_GENSIM = _has_gensim()
BENCHMARK_KEYS = (
    "words_per_s",
    "gensim_words_per_s",
    "ratio",
    "analogy",
    "gensim_analogy",
    "ws353",
    "gensim_ws353",
    "words_per_s_min",
    "words_per_s_max",
    "words_per_s_excl_first_step",
    "idle_fraction",
    "peak_rss_bytes",
    "memory_bytes",
    "rss_ratio",
    "vocab_size",
    "gensim_vocab_size",
    "settings",
    "date",
    "machine",
    "runs",
)


def _run(script: str, args: list[str], tmp_path: pathlib.Path) -> dict:
    """Runs experiments/<script>; returns the JSON object on its last stdout line."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("W2V_DATA_DIR", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def data_dir(tmp_path) -> pathlib.Path:
    """A Zipf text of 200 word types, with analogy and word-pair files over its words."""
    root = tmp_path / "data"
    root.mkdir()
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, 201)
    tokens = rng.choice(200, size=20_000, p=p / p.sum())
    (root / "tiny.txt").write_text(" ".join(f"w{i}" for i in tokens) + "\n")
    (root / "questions-words.txt").write_text(": tiny\nw1 w2 w3 w4\nw5 w6 w7 w8\n")
    (root / "wordsim353.tsv").write_text("w1\tw2\t5\nw3\tw4\t2\nw5\tw9\t7\n")
    return root


@pytest.mark.slow
def test_benchmark_ends_with_json(data_dir, tmp_path):
    args = [
        f"--corpus={data_dir / 'tiny.txt'}",
        f"--data_dir={data_dir}",
        "--epochs=1",
        "--repeats=1",
        "--dim=16",
        "--ours_overrides=loss.share=row,batch_size=64",
    ]
    result = _run("benchmark.py", args + ([] if HAS_GENSIM else ["--skip_gensim"]), tmp_path)
    assert set(BENCHMARK_KEYS) <= set(result)
    assert result["words_per_s"] > 0 and 0 <= result["idle_fraction"] <= 1
    assert 0 <= result["analogy"] <= 1 and result["ws353"] is not None
    assert result["settings"]["ours_overrides"] == ["loss.share=row", "batch_size=64"]
    if HAS_GENSIM:
        assert result["gensim_words_per_s"] > 0 and result["ratio"] > 0
        assert result["gensim_vocab_size"] == result["vocab_size"] and result["vocab_match"]
        assert 0 <= result["gensim_analogy"] <= 1
    else:
        assert result["gensim_words_per_s"] is None and result["ratio"] is None
        assert result["gensim_analogy"] is None and result["gensim_note"]


@pytest.mark.slow
def test_bench_losses_ends_with_json(tmp_path):
    args = [
        "--vocab_sizes=300,500",
        "--ks=5",
        "--dims=16",
        "--batch_size=64",
        "--chunk_size=128",
        "--steps=2",
        "--repeats=1",
        f"--plot={tmp_path / 'cost.png'}",
    ]
    result = _run("bench_losses.py", args, tmp_path)
    assert (tmp_path / "cost.png").read_bytes()[:4] == b"\x89PNG"
    assert {"rows", "peak_gflops", "square_peak_gflops", "targets", "machine"} <= set(result)
    rows = {(r["loss"], r["vocab_size"]): r for r in result["rows"]}
    losses = {"softmax", "sampled_softmax", "nce", "neg", "hs"}
    assert set(rows) == {(loss, v) for loss in losses for v in (300, 500)}
    assert all(r["ms_per_step"] > 0 and r["pairs_per_s"] > 0 for r in rows.values())
    softmax = rows["softmax", 500]
    assert softmax["chunk"] == 128 and softmax["fraction_of_peak"] > 0
    assert softmax["peak_shape"] in result["peak_gflops"]
    assert rows["softmax", 300]["chunk"] == 104  # 3 equal blocks of 100, rounded up to 8s
    found = result["targets"]
    assert {"nce-5@300", "nce-5@500"} <= set(found["softmax_per_pair_vs_nce"])
    assert {"neg-5", "nce-5", "sampled_softmax-5", "hs"} <= set(found["time_ratio_vmax_vmin"])
    assert found["softmax_time_ratio_vmax_vmin"] > 0 and found["hs_depth_ratio_vmax_vmin"] > 0
