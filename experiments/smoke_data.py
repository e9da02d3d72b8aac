"""A tiny data directory for smoke runs: a Zipf text of 200 word types (``tiny.txt``, 20k
tokens), an analogy file (one semantic, one syntactic section) and a word-pair file over
its words. Used by ``gpu_check.py --cpu_smoke`` and by the tests' ``zipf_text_dir``."""

from __future__ import annotations

import pathlib

import numpy as np


def write(root: pathlib.Path) -> pathlib.Path:
    """Writes the three files into the existing folder ``root``; returns it."""
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, 201)
    tokens = rng.choice(200, size=20_000, p=p / p.sum())
    (root / "tiny.txt").write_text(" ".join(f"w{i}" for i in tokens) + "\n")
    questions = (
        ": capital-common-countries\nw1 w2 w3 w4\n: gram1-adjective-to-adverb\nw5 w6 w7 w8\n"
    )
    (root / "questions-words.txt").write_text(questions)
    (root / "wordsim353.tsv").write_text("w1\tw2\t5\nw3\tw4\t2\nw5\tw9\t7\n")
    return root
