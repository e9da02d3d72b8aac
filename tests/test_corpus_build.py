"""The corpus build at scale: bit-identical to the old in-memory build, bounded memory,
parallel reads, the held-out entry from the same read, pre-encoded folders, and several
processes sharing one build."""

import collections
import gzip
import json
import multiprocessing
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tracemalloc
import zipfile

import corpus_build_child
import numpy as np
import pytest

from w2v_jax import settings
from w2v_jax.configs import default
from w2v_jax.data import blocks, cache, corpus, encoding, readers, sources, vocab

digest = corpus_build_child.digest
ROOT = pathlib.Path(__file__).resolve().parents[1]

# A mixed corpus: a directory of plain, gzip and zip members, lines, blank lines, a
# text8-style single line, Unicode words and whitespace (U+3000, NBSP, "\r").
MIXED_WORDS = ["the", "of", "The", "café", "CAFÉ", "日本語", "naïve", "x", "Ωmega", "<unk>"]
MIXED_WORDS += ["a-b", "z"]
MIXED_SPACES = [" ", " ", "  ", "\t", "\u3000", " \r ", "\xa0"]


def mixed_corpus(root: pathlib.Path) -> pathlib.Path:
    rng = random.Random(0)

    def words(n, newline_every=0):
        out = []
        for _ in range(n):
            out.append(MIXED_WORDS[min(int(rng.expovariate(0.5)), len(MIXED_WORDS) - 1)])
            newline = newline_every and rng.randrange(newline_every) == 0
            out.append("\n" if newline else rng.choice(MIXED_SPACES))
        return "".join(out)

    root.mkdir(parents=True)
    (root / "a.txt").write_text(words(400, 9) + "\n\n\n  \n" + words(50, 5) + "tail")
    with gzip.open(root / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n" + words(300, 4) + "\n")
    with zipfile.ZipFile(root / "c.zip", "w") as zf:
        zf.writestr("one.txt", words(200, 6).encode())
        zf.writestr("two.txt", ("\n\n" + words(100, 3)).encode())
    (root / "sub").mkdir()
    (root / "sub" / "d.txt").write_text(words(700))
    (root / "sub" / "empty.txt").write_text("")
    (root / "sub" / "blank.txt").write_text(" \n\t\n")
    (root / ".hidden").write_text("never read")
    return root


# Settings, and the digest of what the in-memory build of commit 7c369f2 (before this
# one) returned for them on `mixed_corpus`, with use_cache=False (ids, offsets, vocab:
# `digest`). Measured with `git worktree add /tmp/old 7c369f2` and PYTHONPATH=/tmp/old.
OLD_DIGESTS = {
    "all": (dict(split="all", min_count=1), "cc419e2c60e069ed"),
    "train_mc2_len7": (
        dict(split="train", min_count=2, max_sentence_length=7, heldout_fraction=0.1),
        "3e3a84bcd5071ba1",
    ),
    "heldout_mc2_len7": (
        dict(split="heldout", min_count=2, max_sentence_length=7, heldout_fraction=0.1),
        "5890e2b710fa0c65",
    ),
    "all_eos_lower_len5": (
        dict(split="all", min_count=3, eos=True, lowercase=True, max_sentence_length=5),
        "6e74274f97052378",
    ),
    "train_cap4": (
        dict(split="train", max_vocab_size=4, min_count=1, heldout_fraction=0.05),
        "abb243cb8d4fbab7",
    ),
}


def sentences(c):
    return [c.vocab.decode(c.ids[a:b]) for a, b in zip(c.offsets[:-1], c.offsets[1:], strict=True)]


def reference(root, *, min_count, max_len, eos=None, lowercase=False):
    """A naive reference of split="all": member texts -> lines -> vocab -> sentences."""
    texts = []
    for m in readers.members(root):
        with m.open() as f:
            texts.append(f.read().decode("utf-8"))
    lines = []
    for text in texts:
        parts = (text.lower() if lowercase else text).split("\n")
        extra = [eos] if eos else []
        lines += [p.split() + extra for p in parts[:-1]]
        if parts[-1].split():
            lines.append(parts[-1].split() + extra)
    counts = collections.Counter(w for line in lines for w in line)
    v = vocab.Vocab.from_counts(counts, min_count=min_count)
    kept = [[w for w in line if w in v.index] for line in lines]
    return v, [line[i : i + max_len] for line in kept if line for i in range(0, len(line), max_len)]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> pathlib.Path:
    return mixed_corpus(tmp_path_factory.mktemp("mixed") / "texts")


@pytest.mark.parametrize("block", [1, 7, None], ids=["block1", "block7", "default"])
def test_the_build_is_bit_identical_to_the_old_one(mixed, tmp_path, monkeypatch, block):
    """Every split and setting gives the old in-memory build's bytes, whatever the block
    the files are streamed in, the read chunk, and with or without the cache."""
    if block:
        monkeypatch.setattr(blocks, "BLOCK", block)
    for name, (kwargs, want) in OLD_DIGESTS.items():
        for chunk_bytes, use_cache in ((5, False), (readers.CHUNK_BYTES, True)):
            got = corpus.load_corpus(
                mixed, use_cache=use_cache, cache_dir=tmp_path / f"c{chunk_bytes}",
                chunk_bytes=chunk_bytes, **kwargs,
            )  # fmt: skip
            assert digest(got) == want, (name, chunk_bytes, use_cache)


@pytest.mark.parametrize("block", [2, None], ids=["block2", "default"])
def test_the_build_matches_a_naive_reference(mixed, monkeypatch, block):
    if block:
        monkeypatch.setattr(blocks, "BLOCK", block)
    for kwargs in (dict(min_count=1, max_len=3), dict(min_count=2, max_len=50, eos="<eos>")):
        v, want = reference(mixed, **kwargs)
        got = corpus.load_corpus(
            mixed, split="all", min_count=kwargs["min_count"], use_cache=False,
            max_sentence_length=kwargs["max_len"], eos=bool(kwargs.get("eos")),
        )  # fmt: skip
        assert got.vocab == v
        assert sentences(got) == want


def test_parallel_read_equals_the_serial_read(mixed, tmp_path, monkeypatch):
    """Workers (and a plain file cut into pieces at newlines) write the serial read's
    provisional ids and line ends byte for byte."""
    serial = readers.read_tokens(mixed, tmp_path / "serial", chunk_bytes=7)
    monkeypatch.setattr(readers, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(readers, "PIECE_BYTES", 300)
    work = readers.pieces(readers.members(mixed))
    assert sum(p.member.name.endswith("a.txt") for p in work) > 2  # a.txt is cut
    parallel = readers.read_tokens(mixed, tmp_path / "parallel", chunk_bytes=7, workers=3)
    assert list(parallel.table) == list(serial.table)
    assert parallel.ids.read_bytes() == serial.ids.read_bytes()
    assert parallel.line_ends.read_bytes() == serial.line_ends.read_bytes()
    assert (parallel.num_tokens, parallel.num_lines) == (serial.num_tokens, serial.num_lines)
    assert sorted(p.name for p in (tmp_path / "parallel").iterdir()) == ["ends.i64", "ids.i32"]
    _, want = OLD_DIGESTS["train_mc2_len7"]
    kwargs = OLD_DIGESTS["train_mc2_len7"][0]
    assert digest(corpus.load_corpus(mixed, use_cache=False, workers=2, **kwargs)) == want


def test_a_worker_error_is_one_line(tmp_path, monkeypatch):
    root = tmp_path / "texts"
    root.mkdir()
    (root / "a.txt").write_text("fine words\n")
    (root / "b.txt").write_bytes("café".encode("latin-1"))
    monkeypatch.setattr(readers, "PARALLEL_MIN_BYTES", 0)
    with pytest.raises(ValueError, match=r"b.txt: not UTF-8 text \(byte 0xe9") as info:
        readers.read_tokens(root, tmp_path / "spill", workers=2)
    assert "\n" not in str(info.value)


def test_the_build_holds_no_array_of_the_corpus_size(tmp_path, monkeypatch):
    """Traced allocations (NumPy's included) peak well below one int32 per token: the
    ids live in files and are streamed in blocks."""
    monkeypatch.setattr(blocks, "BLOCK", 1 << 14)
    rng = np.random.default_rng(0)
    n = 1_000_000
    words = np.array([f"w{i}" for i in range(500)])
    path = tmp_path / "long.txt"
    with open(path, "w") as f:
        for part in np.array_split(rng.zipf(1.3, n) % 500, 20):  # 20 long lines
            f.write(" ".join(words[part]) + "\n")
    tracemalloc.start()
    try:
        c = corpus.load_corpus(
            path, split="train", min_count=1, cache_dir=tmp_path / "c", chunk_bytes=1 << 14
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(c.ids) > 0.98 * n and isinstance(c.ids, np.memmap)
    assert peak < n  # bytes: a quarter of the int32 ids, an eighth of an int64 array


def test_train_writes_the_heldout_entry_from_the_same_read(mixed, tmp_path, monkeypatch):
    reads = collections.Counter()
    real = readers._decoded

    def counted(piece, chunk_bytes):
        reads[piece.member.name] += 1
        return real(piece, chunk_bytes)

    monkeypatch.setattr(readers, "_decoded", counted)
    options = dict(cache_dir=tmp_path / "c", min_count=2, heldout_fraction=0.1)
    train = corpus.load_corpus(mixed, split="train", **options)
    assert set(reads.values()) == {1}
    heldout = corpus.load_corpus(mixed, split="heldout", **options)
    again = corpus.encode_corpus(mixed, train.vocab, cache_dir=tmp_path / "c", heldout_fraction=0.1)
    assert set(reads.values()) == {1}  # both came from the entry the train build wrote
    assert digest(heldout) == digest(again)
    fresh = corpus.load_corpus(mixed, split="heldout", use_cache=False, **options)
    assert digest(heldout) == digest(fresh) and heldout.vocab == train.vocab
    assert isinstance(heldout.ids, np.memmap)


# Several processes sharing one build.


def test_two_processes_share_one_build(mixed, tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    marker = tmp_path / "builds.txt"
    args = (mixed, tmp_path / "cache", marker, barrier, results)
    procs = [ctx.Process(target=corpus_build_child.load, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(marker.read_text().splitlines()) == 1  # one built, the other waited and read
    assert (
        got[0][1]
        == got[1][1]
        == digest(corpus.load_corpus(mixed, split="train", min_count=1, use_cache=False))
    )
    names = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert [n for n in names if not n.startswith(".")] == [
        n for n in names if n.startswith("texts-")
    ]
    assert any(n.endswith(".lock") for n in names)


# Pre-encoded corpora.


def encoded_folder(tmp_path, mixed) -> tuple[pathlib.Path, corpus.Corpus]:
    """A folder with the "all" entry's ids.npy, offsets.npy, vocab.tsv, and that corpus."""
    whole = corpus.load_corpus(mixed, split="all", min_count=1, cache_dir=tmp_path / "c")
    (entry,) = (tmp_path / "c").glob("texts-all-*")
    folder = tmp_path / "encoded"
    folder.mkdir()
    for name in cache.FILES:
        shutil.copy(entry / name, folder / name)
    return folder, whole


def test_a_pre_encoded_folder_is_read_as_it_is(mixed, tmp_path):
    folder, whole = encoded_folder(tmp_path, mixed)
    got = corpus.load_corpus(folder, split="all", use_cache=False)
    assert isinstance(got.ids, np.memmap) and digest(got) == digest(whole)
    assert not (folder / "meta.json").exists() and sorted(os.listdir(folder)) == sorted(cache.FILES)
    # Positional splits, as for text: the last 10% of tokens, sentences cut at the edge.
    n, k = len(whole.ids), int(np.ceil(len(whole.ids) * 0.1))
    train = corpus.load_corpus(folder, split="train", heldout_fraction=0.1)
    heldout = corpus.load_corpus(folder, split="heldout", heldout_fraction=0.1)
    np.testing.assert_array_equal(np.concatenate([train.ids, heldout.ids]), whole.ids)
    assert len(heldout.ids) == k and train.vocab == heldout.vocab == whole.vocab
    edges = np.union1d(whole.offsets, [n - k])
    np.testing.assert_array_equal(train.offsets, edges[edges <= n - k])
    np.testing.assert_array_equal(heldout.offsets, edges[edges >= n - k] - (n - k))
    # max_sentence_length still cuts; the vocabulary of another corpus is refused.
    short = corpus.load_corpus(folder, split="all", max_sentence_length=4)
    assert sum(sentences(short), []) == sum(sentences(whole), [])
    assert np.diff(short.offsets).max() == 4
    other = vocab.Vocab.from_counts({"a": 3}, min_count=1)
    with pytest.raises(ValueError, match="read with its own vocab.tsv"):
        corpus.encode_corpus(folder, other)


def test_a_pre_encoded_folder_as_corpus_name_trains_and_holds_out(mixed, tmp_path, monkeypatch):
    folder, whole = encoded_folder(tmp_path, mixed)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    config = default.get_config()
    config.corpus.name = str(folder)
    data = sources.load(settings.resolve(config).corpus)
    assert data.train.vocab == data.heldout.vocab == whole.vocab
    assert len(data.train.ids) + len(data.heldout.ids) == len(whole.ids)
    assert not (tmp_path / "xdg").exists()  # nothing was cached


@pytest.mark.parametrize(
    "damage,message",
    [
        ("missing_vocab", "needs vocab.tsv"),
        ("int64_ids", "ids.npy is int64 of shape"),
        ("offsets_short", "offsets.npy runs from 0 to"),
        ("offsets_not_increasing", "offsets.npy must increase: sentence 1 has 0 tokens"),
        ("id_out_of_range", "is outside [0, V = 13) of vocab.tsv"),
        ("meta_mismatch", "meta.json says num_tokens=5"),
        ("unsorted_vocab", "sorted by descending count"),
        ("not_npy", "offsets.npy: not a readable .npy file"),
    ],
)
def test_a_bad_pre_encoded_folder_is_one_line(mixed, tmp_path, damage, message):
    folder, whole = encoded_folder(tmp_path, mixed)
    ids, offsets = np.array(whole.ids), np.array(whole.offsets)
    if damage == "missing_vocab":
        (folder / "vocab.tsv").unlink()
    elif damage == "int64_ids":
        np.save(folder / "ids.npy", ids.astype(np.int64))
    elif damage == "offsets_short":
        np.save(folder / "offsets.npy", offsets[:-1])
    elif damage == "offsets_not_increasing":
        offsets[1] = offsets[2]
        np.save(folder / "offsets.npy", offsets)
    elif damage == "id_out_of_range":
        ids[-1] = len(whole.vocab)
        np.save(folder / "ids.npy", ids)
    elif damage == "meta_mismatch":
        (folder / "meta.json").write_text(json.dumps({"num_tokens": 5}))
    elif damage == "unsorted_vocab":
        (folder / "vocab.tsv").write_text("a\t1\nb\t2\n")
    else:
        (folder / "offsets.npy").write_text("not an array")
    with pytest.raises(ValueError) as info:
        corpus.load_corpus(folder, split="all")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(folder) in str(info.value)


# Settings and the benchmark.


def test_cache_dir_and_workers_come_from_the_config(mixed, tmp_path):
    config = default.get_config()
    config.corpus.name, config.corpus.min_count = str(mixed), 1
    config.corpus.cache_dir, config.corpus.workers = str(tmp_path / "mine"), 2
    options = settings.resolve(config).corpus
    assert (options.cache_dir, options.workers) == (str(tmp_path / "mine"), 2)
    data = sources.load(options)
    names = sorted(p.name.split("-")[1] for p in (tmp_path / "mine").glob("texts-*"))
    assert names == ["heldout", "train"] and data.heldout.vocab is data.train.vocab
    config.corpus.workers = -1
    with pytest.raises(ValueError, match="corpus.workers"):
        settings.resolve(config)
    defaults = settings.resolve(default.get_config()).corpus
    assert (defaults.cache_dir, defaults.workers) == (None, None)


def test_encode_counts_in_blocks_of_at_least_the_types(tmp_path, monkeypatch):
    """count is one bincount per block of max(BLOCK, P) tokens: O(N + P) in all."""
    monkeypatch.setattr(blocks, "BLOCK", 4)
    path = tmp_path / "t.txt"
    path.write_text(" ".join(f"w{i % 10}" for i in range(95)))
    tokens = readers.read_tokens(path, tmp_path / "spill")
    sizes = []
    real = np.bincount

    def spy(x, minlength=0):
        sizes.append(len(x))
        return real(x, minlength=minlength)

    monkeypatch.setattr(np, "bincount", spy)
    counts = encoding.count(tokens, 3, 95)
    assert sizes == [10] * 9 + [2] and counts.sum() == 92


def test_bench_corpus_build_quick(tmp_path):
    """The benchmark at --quick size, with this checkout standing in for the old one."""
    out = tmp_path / "results"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    args = ["--quick", f"--data_dir={tmp_path / 'data'}", f"--old_checkout={ROOT}",
            f"--out_dir={out}"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "bench_corpus_build.py"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rows = {(r["code"], r["tokens"]) for r in result["rows"]}
    assert rows == {("new", 200_000), ("old", 200_000)}
    for row in result["rows"]:
        assert row["seconds"] > 0 and row["tokens_per_s"] > 0 and row["peak_rss_bytes"] > 0
    assert all(r["identical_to_old"] for r in result["rows"] if r["code"] == "new")
    assert (out / "results.json").is_file() and (out / "table.md").is_file()
