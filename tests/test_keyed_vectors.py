"""word2vec C file formats: exact layout, round trips, gensim cross-check, clear errors."""

import gzip
import struct

import numpy as np
import pytest

from w2v_jax.evaluation import keyed_vectors

WORDS = ("the", "of", "naïve", "King", "x")


def _vectors(num_words=5, dim=3, seed=0):
    return np.random.default_rng(seed).normal(size=(num_words, dim)).astype(np.float32)


def test_binary_bytes_are_exactly_word2vec_c(tmp_path):
    vectors = _vectors(2, 2)
    path = tmp_path / "v.bin"
    keyed_vectors.save_word2vec_binary(path, ["a", "bé"], vectors)
    expected = (
        b"2 2\n"
        + b"a "
        + struct.pack("<2f", *vectors[0])
        + b"\n"
        + "bé ".encode()
        + struct.pack("<2f", *vectors[1])
        + b"\n"
    )
    assert path.read_bytes() == expected


def test_text_layout(tmp_path):
    path = tmp_path / "v.txt"
    keyed_vectors.save_word2vec_text(path, ["a", "b"], np.array([[0.5, -1.0], [2.0, 0.25]]))
    assert path.read_text() == "2 2\na 0.5 -1\nb 2 0.25\n"


@pytest.mark.parametrize("binary", [False, True])
def test_round_trip_is_exact(tmp_path, binary):
    vectors = _vectors()
    path = tmp_path / ("v.bin" if binary else "v.txt")
    save = keyed_vectors.save_word2vec_binary if binary else keyed_vectors.save_word2vec_text
    save(path, WORDS, vectors)
    kv = keyed_vectors.load_word2vec(path)
    assert kv.words == WORDS
    assert kv.vectors.dtype == np.float32 and kv.vocab_size == 5 and kv.dim == 3
    np.testing.assert_array_equal(kv.vectors, vectors)  # 9 digits round-trip float32


@pytest.mark.parametrize("binary", [False, True])
def test_streaming_writer_crosses_chunks_and_detects_format(tmp_path, monkeypatch, binary):
    monkeypatch.setattr(keyed_vectors, "_WRITE_ROWS", 3)
    monkeypatch.setattr(keyed_vectors, "_READ_BYTES", 7)
    words = tuple(f"w{i}" for i in range(10))
    vectors = _vectors(10, 4)
    path = tmp_path / "vectors"  # no extension: the content decides
    save = keyed_vectors.save_word2vec_binary if binary else keyed_vectors.save_word2vec_text
    save(path, words, vectors)
    kv = keyed_vectors.load_word2vec(path)
    assert kv.words == words
    np.testing.assert_array_equal(kv.vectors, vectors)
    limited = keyed_vectors.load_word2vec(path, binary=binary, limit=4)
    assert limited.words == words[:4]
    np.testing.assert_array_equal(limited.vectors, vectors[:4])


def test_reads_word2vec_c_text_with_trailing_spaces_and_crlf(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"2 3 \nthe 0.100000 -0.200000 0.300000 \r\nof 1.000000 2.000000 3.000000 \n")
    kv = keyed_vectors.load_word2vec(path)
    assert kv.words == ("the", "of")
    np.testing.assert_allclose(kv.vectors, [[0.1, -0.2, 0.3], [1, 2, 3]], rtol=1e-7)


def test_reads_binary_without_newlines_after_rows(tmp_path):
    path = tmp_path / "v.bin"
    vectors = _vectors(2, 2)
    path.write_bytes(b"2 2\na " + vectors[0].tobytes() + b"b " + vectors[1].tobytes())
    kv = keyed_vectors.load_word2vec(path)
    assert kv.words == ("a", "b")
    np.testing.assert_array_equal(kv.vectors, vectors)


def test_repeated_word_keeps_first_row(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("3 1\na 1\nb 2\na 3\n")
    kv = keyed_vectors.load_word2vec(path)
    assert kv.words == ("a", "b")
    np.testing.assert_array_equal(kv.vectors[:, 0], [1, 2])


def test_helpers():
    kv = keyed_vectors.create(["Paris", "paris", "x"], [[3, 4], [1, 0], [0, 0]], counts=[5, 3, 1])
    assert keyed_vectors.word_index(kv.words, lower=True) == {"paris": 0, "x": 2}
    assert keyed_vectors.word_index(kv.words)["paris"] == 1
    np.testing.assert_allclose(
        keyed_vectors.unit_rows(kv.vectors), [[0.6, 0.8], [1, 0], [0, 0]], rtol=1e-6
    )
    with pytest.raises(ValueError, match="vectors must be"):
        keyed_vectors.create(["a"], np.zeros((2, 3)))


@pytest.mark.parametrize("word", ["two words", "", "tab\tword", "new\nline"])
def test_writer_rejects_bad_words_and_leaves_nothing(tmp_path, word):
    path = tmp_path / "v.bin"
    with pytest.raises(ValueError, match="whitespace"):
        keyed_vectors.save_word2vec_binary(path, ["ok", word], np.zeros((2, 2)))
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_atomically(tmp_path):
    path = tmp_path / "v.txt"
    keyed_vectors.save_word2vec_text(path, ["a"], np.ones((1, 2)))
    keyed_vectors.save_word2vec_text(path, ["b"], np.zeros((1, 2)))
    assert keyed_vectors.load_word2vec(path).words == ("b",)
    assert [p.name for p in tmp_path.iterdir()] == ["v.txt"]


_ROW = struct.pack("<2f", 1.0, 2.0)


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("empty.txt", b"", "empty file"),
        ("header.txt", b"two 3\na 1 2 3\n", "line 1: bad header 'two 3'"),
        ("header1.txt", b"3\n", "line 1: bad header '3'"),
        ("dim.txt", b"2 3\na 1 2 3\nb 1 2\n", "line 3: expected a word and 3 values, got 2"),
        ("value.txt", b"2 2\na 1 2\nb 1 x\n", "line 3: non-numeric value"),
        ("noword.txt", b"1 2\n 1 2\n", "line 2: row starts with a space, not a word"),
        ("short.txt", b"3 2\na 1 2\nb 1 2\n", "line 4: file ends after 2 rows, header says 3"),
        ("long.txt", b"1 2\na 1 2\nb 1 2\n", "data after the 1 rows"),
        ("cut.bin", b"2 2\na " + _ROW + b"\nb " + _ROW[:5], "row 2: truncated vector"),
        ("few.bin", b"3 2\na " + _ROW + b"\nb " + _ROW, "row 3: no word: file ends after 2 rows"),
        ("utf8.bin", b"1 2\n\xff\xfe " + _ROW + b"\n", "row 1: word is not UTF-8"),
    ],
)
def test_malformed_files_raise_one_line_errors(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        keyed_vectors.load_word2vec(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message


def test_wrong_dimension_text_is_not_mistaken_for_binary(tmp_path):
    path = tmp_path / "vectors"  # no extension: detection must still choose text
    path.write_bytes(b"1 4\na 1 2 3\n")
    with pytest.raises(ValueError, match="line 2: expected a word and 4 values, got 3"):
        keyed_vectors.load_word2vec(path)


@pytest.mark.parametrize("binary", [False, True])
def test_gensim_reads_ours_and_we_read_gensims(tmp_path, binary):
    gensim_models = pytest.importorskip("gensim.models")
    vectors = _vectors()
    ours = tmp_path / ("ours.bin" if binary else "ours.txt")
    save = keyed_vectors.save_word2vec_binary if binary else keyed_vectors.save_word2vec_text
    save(ours, WORDS, vectors)
    theirs = gensim_models.KeyedVectors.load_word2vec_format(str(ours), binary=binary)
    assert tuple(theirs.index_to_key) == WORDS
    np.testing.assert_array_equal(theirs.vectors, vectors)

    theirs_path = tmp_path / ("theirs.bin" if binary else "theirs.txt")
    theirs.save_word2vec_format(str(theirs_path), binary=binary)
    kv = keyed_vectors.load_word2vec(theirs_path)
    assert kv.words == WORDS
    np.testing.assert_allclose(kv.vectors, vectors, rtol=1e-6)


@pytest.mark.parametrize("name", ["v.txt.gz", "v.bin.gz", "v.gz"])
def test_reads_gzip(tmp_path, name):
    vectors = _vectors()
    plain = tmp_path / "plain"
    save = keyed_vectors.save_word2vec_text if "txt" in name else keyed_vectors.save_word2vec_binary
    save(plain, WORDS, vectors)
    (tmp_path / name).write_bytes(gzip.compress(plain.read_bytes()))
    kv = keyed_vectors.load_word2vec(tmp_path / name)
    assert kv.words == WORDS
    np.testing.assert_array_equal(kv.vectors, vectors)


def test_detects_binary_whose_first_float_byte_is_a_newline(tmp_path):
    path = tmp_path / "vectors"  # no extension: the content decides
    value = np.frombuffer(b"\n\x00\x80\x3f", dtype="<f4")  # 1.0000012, first byte b"\n"
    keyed_vectors.save_word2vec_binary(path, ["a", "b"], np.stack([value, value]))
    kv = keyed_vectors.load_word2vec(path)
    assert kv.words == ("a", "b")
    np.testing.assert_array_equal(kv.vectors, np.stack([value, value]))
