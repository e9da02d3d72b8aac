"""experiments/claim2_table1.py on a tiny text: the grid per threshold, gensim's row (when
gensim is installed), the report beside the paper's Table 1, reruns, bad flags."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = "experiments/claim2_table1.py"


def _has_gensim() -> bool:
    try:
        import gensim.models.word2vec  # noqa: F401
    except Exception:
        return False
    return True


HAS_GENSIM = _has_gensim()


def _run(args, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("W2V_DATA_DIR", None)
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def _config_flags(zipf_text_dir):
    return [
        "--config=w2v_jax/configs/tiny.py",
        f"--config.corpus.name={zipf_text_dir / 'tiny.txt'}",
        f"--config.corpus.data_dir={zipf_text_dir}",
        f"--config.eval.analogies={zipf_text_dir / 'questions-words.txt'}",
        f"--config.eval.similarity={zipf_text_dir / 'wordsim353.tsv'}",
        "--config.epochs=1",
    ]


@pytest.mark.slow
def test_grid_gensim_and_report(zipf_text_dir, tmp_path):
    work, out = tmp_path / "runs", tmp_path / "out"
    gensim = "--gensim=" + ("1e-3" if HAS_GENSIM else "")
    args = [*_config_flags(zipf_text_dir), f"--workdir={work}", f"--out_dir={out}",
            "--grid=0/neg:2,1e-3/neg:2,1e-3/hs", gensim]  # fmt: skip
    done = _run(args, tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    rows = json.loads((out / "claim2.json").read_text())
    assert [(r["side"], r["method"], r["sample"]) for r in rows] == [
        ("ours", "NEG-2", 0.0), ("ours", "NEG-2", 1e-3), ("ours", "HS-Huffman", 1e-3)
    ] + ([("gensim", "NEG-5", 1e-3)] if HAS_GENSIM else [])  # fmt: skip
    for r in rows:
        assert r["status"] == "ok", r
        assert 0 <= r["analogy_total"] <= 1 and r["wall_s"] > 0 and r["words_per_s"] > 0
        assert r["similarity_wordsim353_spearman"] is not None
    assert (work / "sample0" / "neg_k2_s0" / "vectors.bin").exists()
    assert (work / "sample1e-3" / "hs_s0" / "vectors.bin").exists()
    assert rows[1]["steps"] < rows[0]["steps"]  # subsampling: fewer words, fewer steps
    table = (out / "table.md").read_text()
    assert "| NEG-2 | none | ours |" in table and "| HS-Huffman | 1e-3 | ours |" in table
    assert (out / "claim2.png").read_bytes()[:4] == b"\x89PNG"

    # A rerun finds everything finished; reporting a bigger grid marks the rest "not run".
    again = _run([*args[:-2], "--grid=0/neg:2,1e-5/neg:15", "--gensim=", "--train=false"],
                 tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr[-4000:]
    rows = json.loads((out / "claim2.json").read_text())
    assert [r["status"] for r in rows] == ["ok", "not run"]
    assert rows[1]["paper_total"] == 61 and rows[1]["paper_minutes"] == 36
    assert "| NEG-15 | 1e-5 | ours | not run |" in (out / "table.md").read_text()


@pytest.mark.parametrize("flag, message", [
    ("--grid=neg:5", "--grid item 'neg:5' is not SAMPLE/POINT"),
    ("--grid=-1/neg:5", "--grid item '-1/neg:5': '-1' is not a subsampling threshold"),
    ("--grid=0/bogus:5", "bogus"),
    ("--gensim=often", "--gensim: 'often' is not a subsampling threshold"),
])  # fmt: skip
def test_bad_flags_are_one_line_before_training(zipf_text_dir, tmp_path, flag, message):
    done = _run([*_config_flags(zipf_text_dir), f"--workdir={tmp_path / 'runs'}",
                 f"--out_dir={tmp_path / 'out'}", flag], tmp_path)  # fmt: skip
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, done.stderr[-2000:]
    assert not (tmp_path / "runs").exists()
