"""Tests for the readers and corpora: tokens, sentences, splits, cache and errors."""

import collections
import gzip
import io
import math
import os
import urllib.request
import zipfile
import zlib

import numpy as np
import pytest

from w2v_jax.data import blocks, corpus, download, encoding, readers

# Words with multi-byte UTF-8 and varied whitespace, so that chunk boundaries fall inside
# characters, words and runs of whitespace.
WORDS = ["the", "of", "a", "cat", "café", "日本語", "naïve", "x", "anarchism", "<unk>"]
SPACES = [" ", " ", " ", "  ", "\t", "\u3000", " \r "]


def random_text(n, seed=0, newline_every=None):
    rng = np.random.default_rng(seed)
    words = rng.choice(WORDS, size=n, p=np.linspace(2, 0.2, len(WORDS)) / 11.0)
    parts = [" "]
    for i, w in enumerate(words):
        parts.append(w)
        if newline_every and i % newline_every == newline_every - 1:
            parts.append("\n")
        else:
            parts.append(SPACES[rng.integers(len(SPACES))])
    return "".join(parts)


def decoded(c):
    return c.vocab.decode(c.ids)


def sentences(c):
    return [c.vocab.decode(c.ids[a:b]) for a, b in zip(c.offsets[:-1], c.offsets[1:], strict=True)]


def check_offsets(c, max_len):
    assert c.ids.dtype == np.int32 and c.offsets.dtype == np.int64
    assert c.offsets[0] == 0 and c.offsets[-1] == len(c.ids)
    lengths = np.diff(c.offsets)
    assert np.all(lengths > 0) and np.all(lengths <= max_len)


def provisional(tokens):
    """The words of a read, in text order, and its line ends, read back from its files."""
    words = list(tokens.table)
    ids = blocks.read(tokens.ids, np.int32, 0, tokens.num_tokens)
    ends = blocks.read(tokens.line_ends, np.int64, 0, tokens.num_lines)
    return [words[i] for i in ids], ends


def load(path, tmp_path, **kwargs):
    kwargs = {"min_count": 1, "split": "all", "cache_dir": tmp_path / "cache", **kwargs}
    return corpus.load_corpus(path, **kwargs)


# Readers.


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 7, 64, readers.CHUNK_BYTES])
def test_single_line_tokens_match_str_split_for_any_chunk_size(tmp_path, chunk_bytes):
    text = random_text(2_000)
    path = tmp_path / "text8"
    path.write_text(text, encoding="utf-8")
    tokens = readers.read_tokens(path, tmp_path / "spill", chunk_bytes=chunk_bytes)
    words, ends = provisional(tokens)
    assert words == text.split()
    assert tokens.num_tokens == len(text.split())
    np.testing.assert_array_equal(ends, [tokens.num_tokens])


@pytest.mark.parametrize("chunk_bytes", [1, 5, readers.CHUNK_BYTES])
def test_lines_end_at_newlines_for_any_chunk_size(tmp_path, chunk_bytes):
    text = random_text(500, newline_every=13) + "\n\nlast line without newline"
    path = tmp_path / "lines.txt"
    path.write_text(text, encoding="utf-8")
    tokens = readers.read_tokens(path, tmp_path / "spill", eos="<eos>", chunk_bytes=chunk_bytes)
    expected = [w for line in text.split("\n") for w in [*line.split(), "<eos>"]]
    words, ends = provisional(tokens)
    assert words == expected
    lengths = [len(line.split()) + 1 for line in text.split("\n")]
    np.testing.assert_array_equal(ends, np.cumsum(lengths))


def test_gzip_zip_and_plain_give_identical_corpora(tmp_path):
    text = random_text(3_000)
    (tmp_path / "plain.txt").write_text(text, encoding="utf-8")
    with gzip.open(tmp_path / "text.gz", "wt", encoding="utf-8") as f:
        f.write(text)
    with zipfile.ZipFile(tmp_path / "text.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("text8", text.encode("utf-8"))
    plain = load(tmp_path / "plain.txt", tmp_path, max_sentence_length=100)
    for name in ("text.gz", "text.zip"):
        other = load(tmp_path / name, tmp_path, max_sentence_length=100, chunk_bytes=11)
        np.testing.assert_array_equal(other.ids, plain.ids)
        np.testing.assert_array_equal(other.offsets, plain.offsets)
        assert other.vocab == plain.vocab
    assert decoded(plain) == text.split()


def test_text8_style_line_is_cut_into_sentences(tmp_path):
    text = random_text(1_003)
    (tmp_path / "t8").write_text(text, encoding="utf-8")
    c = load(tmp_path / "t8", tmp_path, max_sentence_length=100)
    check_offsets(c, 100)
    np.testing.assert_array_equal(np.diff(c.offsets), [100] * 10 + [3])
    assert sum(sentences(c), []) == text.split()


def test_ptb_lines_carry_eos_and_stay_sentences(tmp_path):
    (tmp_path / "ptb.train.txt").write_text(" a b c \n d e \n f \n" * 3)
    (tmp_path / "ptb.valid.txt").write_text(" a b z \n")
    c = corpus.load_corpus("ptb", data_dir=tmp_path, min_count=1, cache_dir=tmp_path / "c")
    assert sentences(c)[:3] == [["a", "b", "c", "<eos>"], ["d", "e", "<eos>"], ["f", "<eos>"]]
    assert len(c.offsets) - 1 == 9 and len(c.ids) == 27
    assert c.vocab.words[0] == "<eos>"
    valid = corpus.encode_corpus("ptb", c.vocab, split="valid", data_dir=tmp_path)
    assert sentences(valid) == [["a", "b", "<eos>"]]  # "z" is not in the train vocab
    assert valid.vocab is c.vocab


def test_long_lines_are_cut_and_eos_can_be_switched(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("a b c d e\nf g\n")
    c = load(path, tmp_path, max_sentence_length=2)
    assert sentences(c) == [["a", "b"], ["c", "d"], ["e"], ["f", "g"]]
    c = load(path, tmp_path, max_sentence_length=3, eos=True)
    assert sentences(c) == [["a", "b", "c"], ["d", "e", "<eos>"], ["f", "g", "<eos>"]]


def test_directory_of_files_is_read_in_sorted_order(tmp_path):
    root = tmp_path / "texts"
    (root / "sub").mkdir(parents=True)
    (root / "b.txt").write_text("b1 b2\n")
    (root / "a.txt").write_text("a1 a2")  # no final newline: the file still ends the line
    with gzip.open(root / "sub" / "c.txt.gz", "wt") as f:
        f.write("c1\n\nc2")
    (root / ".hidden").write_text("never read")
    c = load(root, tmp_path)
    assert sentences(c) == [["a1", "a2"], ["b1", "b2"], ["c1"], ["c2"]]


def test_oov_tokens_are_removed_and_empty_lines_dropped(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("the cat sat\nrare words only\nthe cat\n\nthe mat cat\n")
    c = load(path, tmp_path, min_count=2)
    assert set(c.vocab.words) == {"the", "cat"}
    assert sentences(c) == [["the", "cat"], ["the", "cat"], ["the", "cat"]]
    check_offsets(c, 10_000)


def test_settings_for_case_and_vocabulary(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("The the THE cat Cat a")
    assert decoded(load(path, tmp_path, lowercase=True, min_count=2)) == ["the"] * 3 + ["cat"] * 2
    assert load(path, tmp_path, max_vocab_size=2).vocab.words == ("Cat", "THE")


# Held-out split.


def test_heldout_is_the_last_fraction_and_train_never_sees_it(tmp_path):
    text = random_text(1_000) + " onlyinheldout"
    path = tmp_path / "t8.txt"
    path.write_text(text, encoding="utf-8")
    tokens = text.split()
    k = math.ceil(len(tokens) * 0.05)
    train = load(path, tmp_path, split="train", heldout_fraction=0.05)
    heldout = load(path, tmp_path, split="heldout", heldout_fraction=0.05)
    assert decoded(train) == tokens[:-k]
    assert "onlyinheldout" not in train.vocab.index
    assert heldout.vocab == train.vocab
    assert decoded(heldout) == [w for w in tokens[-k:] if w in train.vocab.index]
    assert sum(train.vocab.counts) == len(tokens) - k
    assert decoded(load(path, tmp_path, split="all")) == tokens
    default = corpus.encode_corpus(path, train.vocab, heldout_fraction=0.05, use_cache=False)
    np.testing.assert_array_equal(default.ids, heldout.ids)


def test_split_errors(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("a b c")
    with pytest.raises(ValueError, match="has splits train, heldout, all"):
        load(path, tmp_path, split="valid")
    with pytest.raises(ValueError, match="leaves no held-out tokens"):
        load(path, tmp_path, split="heldout", heldout_fraction=0.0)
    with pytest.raises(ValueError, match="heldout_fraction must be in"):
        load(path, tmp_path, split="train", heldout_fraction=1.0)
    (tmp_path / "ptb.train.txt").write_text("a\n")
    with pytest.raises(ValueError, match="has splits train, valid, test"):
        corpus.load_corpus("ptb", split="heldout", data_dir=tmp_path)


# Cache.


def spy_on_reader(monkeypatch):
    calls = []
    real = readers.read_tokens

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(readers, "read_tokens", spy)
    return calls


def test_cache_hit_returns_identical_arrays_without_reading(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    path.write_text(random_text(2_000, newline_every=50), encoding="utf-8")
    calls = spy_on_reader(monkeypatch)
    first = load(path, tmp_path, split="train", max_sentence_length=20)
    second = load(path, tmp_path, split="train", max_sentence_length=20)
    assert len(calls) == 1
    assert isinstance(second.ids, np.memmap)
    np.testing.assert_array_equal(second.ids, first.ids)
    np.testing.assert_array_equal(second.offsets, first.offsets)
    assert second.vocab == first.vocab
    entries = sorted((tmp_path / "cache").glob("t.txt-*"))  # train, and heldout with it
    assert [e.name.split("-")[1] for e in entries] == ["heldout", "train"]
    entries = entries[1:]
    assert sorted(p.name for p in entries[0].iterdir()) == [
        "ids.npy",
        "meta.json",
        "offsets.npy",
        "vocab.tsv",
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"min_count": 2},
        {"max_vocab_size": 3},
        {"max_sentence_length": 7},
        {"eos": True},
        {"lowercase": True},
        {"heldout_fraction": 0.2},
        {"split": "all"},
    ],
)
def test_cache_is_invalidated_when_settings_change(tmp_path, monkeypatch, change):
    path = tmp_path / "t.txt"
    path.write_text("The a b c\nA a b\n")
    calls = spy_on_reader(monkeypatch)
    base = {"split": "train", "heldout_fraction": 0.1}
    load(path, tmp_path, **base)
    load(path, tmp_path, **{**base, **change})
    assert len(calls) == 2


def test_cache_is_invalidated_when_the_source_changes(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    path.write_text("a b c")
    calls = spy_on_reader(monkeypatch)
    assert decoded(load(path, tmp_path)) == ["a", "b", "c"]
    path.write_text("a b c d e")
    os.utime(path, ns=(1, 1))
    assert decoded(load(path, tmp_path)) == ["a", "b", "c", "d", "e"]
    assert len(calls) == 2


@pytest.mark.parametrize("damage", ["truncate_ids", "garbage_meta", "drop_vocab", "wrong_key"])
def test_a_damaged_cache_is_rebuilt_not_trusted(tmp_path, monkeypatch, damage):
    path = tmp_path / "t.txt"
    path.write_text(random_text(300, newline_every=7), encoding="utf-8")
    first = load(path, tmp_path)
    first = first._replace(ids=np.array(first.ids))  # a copy: the damage below changes the file
    (entry,) = (tmp_path / "cache").glob("t.txt-*")
    if damage == "truncate_ids":
        data = (entry / "ids.npy").read_bytes()
        (entry / "ids.npy").write_bytes(data[: len(data) - 40])
    elif damage == "garbage_meta":
        (entry / "meta.json").write_text("{not json")
    elif damage == "drop_vocab":
        (entry / "vocab.tsv").unlink()
    else:
        meta = (entry / "meta.json").read_text().replace('"min_count": 1', '"min_count": 9')
        (entry / "meta.json").write_text(meta)
    calls = spy_on_reader(monkeypatch)
    again = load(path, tmp_path)
    assert len(calls) == 1
    np.testing.assert_array_equal(again.ids, first.ids)
    np.testing.assert_array_equal(again.offsets, first.offsets)
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name[0] != "."] == [entry.name]


def test_a_failed_build_leaves_no_cache_behind(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    path.write_text("a b c")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(encoding, "encode", crash)
    with pytest.raises(KeyboardInterrupt):
        load(path, tmp_path)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_default_cache_falls_back_when_the_data_dir_is_not_writable(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cache").write_text("a file where the cache directory should be")
    (data / "ptb.train.txt").write_text("a b\n")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    corpus.load_corpus("ptb", data_dir=data, min_count=1)
    assert [p.name.startswith("ptb-train-") for p in (tmp_path / "xdg/w2v_jax/cache").iterdir()]
    monkeypatch.setenv("W2V_DATA_DIR", str(tmp_path / "env"))
    assert corpus.resolve_data_dir() == tmp_path / "env"
    assert corpus.resolve_data_dir(data) == data


# Errors: one line each, naming the file and the fix.


def one_line_error(exc_type, fn, *args, **kwargs):
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_error_messages(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n\t ")
    assert "empty.txt: no tokens" in one_line_error(ValueError, load, empty, tmp_path)
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"abc def\x00\x01\x02")
    assert "looks like a binary file" in one_line_error(ValueError, load, binary, tmp_path)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café au lait".encode("latin-1"))
    message = one_line_error(ValueError, load, latin1, tmp_path)
    assert "latin1.txt: not UTF-8 text" in message and "iconv" in message
    rare = tmp_path / "rare.txt"
    rare.write_text("every word here is different")
    message = one_line_error(ValueError, load, rare, tmp_path, min_count=5)
    assert "rare.txt: empty vocabulary: read 5 tokens of 5 types" in message
    assert "lower min_count" in message
    missing = tmp_path / "nope.txt"
    message = one_line_error(FileNotFoundError, load, missing, tmp_path)
    assert "nope.txt: no such file or directory" in message and "text8-head" in message
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(gzip.compress(b"some words here")[:-12])
    assert "broken.txt.gz: cannot read it" in one_line_error(ValueError, load, broken, tmp_path)
    noblank = tmp_path / "blank"
    noblank.mkdir()
    assert "directory has no files" in one_line_error(ValueError, load, noblank, tmp_path)


def test_missing_named_corpora_say_where_to_put_them(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tests must never download")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    message = one_line_error(FileNotFoundError, corpus.load_corpus, "wiki-60m", data_dir=tmp_path)
    assert f"expected {tmp_path / 'wiki-60m.txt.gz'}" in message and "W2V_DATA_DIR" in message
    message = one_line_error(FileNotFoundError, corpus.load_corpus, "text8", data_dir=tmp_path)
    assert "text8.zip" in message and "download=True" in message
    message = one_line_error(
        FileNotFoundError, corpus.load_corpus, "ptb", split="test", data_dir=tmp_path
    )
    assert "ptb.test.txt" in message


# text8 download and verification, on a small fake archive.


def fake_zip(tmp_path, content=b" anarchism originated as a term"):
    path = tmp_path / "fake.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("text8", content)
    check = download.ZipCheck(os.path.getsize(path), "text8", len(content), zlib.crc32(content))
    return path, check


def test_verify_zip_checks_size_member_and_crc(tmp_path):
    path, check = fake_zip(tmp_path)
    download.verify_zip(path, check)
    bad = [
        (check._replace(size=check.size + 1), "bytes, expected"),
        (check._replace(crc32=check.crc32 ^ 1), "CRC-32"),
        (check._replace(member_size=check.member_size + 1), "CRC-32"),
        (check._replace(member="text9"), "not the expected archive"),
    ]
    for wrong, match in bad:
        with pytest.raises(ValueError, match=match):
            download.verify_zip(path, wrong)
    assert corpus.TEXT8_CHECK == (31_344_016, "text8", 100_000_000, 0x7D6BE66F)
    assert corpus.TEXT8_URL == "http://mattmahoney.net/dc/text8.zip"


def test_download_keeps_only_a_verified_file(tmp_path, monkeypatch):
    path, check = fake_zip(tmp_path)
    served = path.read_bytes()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(served))
    dest = tmp_path / "data"
    got = download.download("http://example/text8.zip", dest / "text8.zip", check)
    assert got == dest / "text8.zip" and got.read_bytes() == served
    with pytest.raises(ValueError, match="bytes, expected 31,344,016"):
        corpus.download_text8(tmp_path / "other")  # the fake is not the real text8.zip
    assert list((tmp_path / "other").iterdir()) == []
    monkeypatch.setattr(corpus, "TEXT8_CHECK", check)
    c = corpus.load_corpus("text8", data_dir=tmp_path / "d", download=True, min_count=1)
    assert decoded(c) == ["anarchism", "originated", "as", "a"]  # "term" is held out


# Real data.


@pytest.mark.data
def test_ptb_train_counts(data_file, tmp_path):
    path = data_file("ptb.train.txt")
    c = corpus.load_corpus("ptb", data_dir=path.parent, min_count=1, cache_dir=tmp_path)
    assert len(c.vocab) == 10_000 and "<eos>" in c.vocab.index
    assert len(c.ids) == 929_589 and len(c.offsets) - 1 == 42_068
    with open(path, encoding="utf-8") as f:
        text = f.read()
    counts = collections.Counter(text.split())
    counts["<eos>"] = text.count("\n")
    c5 = corpus.load_corpus("ptb", data_dir=path.parent, cache_dir=tmp_path)
    assert len(c5.vocab) == sum(1 for n in counts.values() if n >= 5)
    assert len(c5.ids) == sum(n for n in counts.values() if n >= 5)
    check_offsets(c5, 10_000)


@pytest.mark.data
def test_text8_head_counts(data_file, tmp_path):
    path = data_file("text8-head.txt.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        counts = collections.Counter(f.read().split())
    assert sum(counts.values()) == 2_139_748
    c = corpus.load_corpus("text8-head", split="all", data_dir=path.parent, cache_dir=tmp_path)
    assert len(c.vocab) == sum(1 for n in counts.values() if n >= 5)
    assert len(c.ids) == sum(n for n in counts.values() if n >= 5)
    check_offsets(c, 10_000)
    assert c.vocab.words[:2] == ("the", "of")


@pytest.mark.parametrize("heldout,expected", [("heldout", "v"), ("valid", "v"), ("test", "t")])
def test_ptb_heldout_split_is_configurable(tmp_path, monkeypatch, heldout, expected):
    """corpus.heldout="heldout" means ptb.valid; "test" gives the paper's test split."""
    from w2v_jax import settings
    from w2v_jax.configs import ptb
    from w2v_jax.data import sources

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "ptb.train.txt").write_text(" v t a \n" * 3)
    (tmp_path / "ptb.valid.txt").write_text(" v v \n")
    (tmp_path / "ptb.test.txt").write_text(" t t \n")
    config = ptb.get_config()
    config.corpus.data_dir, config.corpus.heldout = str(tmp_path), heldout
    loaded = sources.load(settings.resolve(config).corpus)
    assert sentences(loaded.heldout) == [[expected, expected, "<eos>"]]
