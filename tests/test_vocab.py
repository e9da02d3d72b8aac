"""Tests for the vocabulary: order, filtering, encode/decode and vocab.tsv."""

import dataclasses

import numpy as np
import pytest

from w2v_jax.data import vocab

COUNTS = {"cat": 3, "the": 9, "a": 3, "zebra": 1, "mat": 2, "on": 3}


def test_sorted_by_count_then_word():
    v = vocab.Vocab.from_counts(COUNTS, min_count=1)
    assert v.words == ("the", "a", "cat", "on", "mat", "zebra")
    assert v.counts.dtype == np.int64
    np.testing.assert_array_equal(v.counts, [9, 3, 3, 3, 2, 1])


def test_order_does_not_depend_on_insertion_order():
    forward = vocab.Vocab.from_counts(COUNTS, min_count=1)
    backward = vocab.Vocab.from_counts(dict(reversed(list(COUNTS.items()))), min_count=1)
    assert forward == backward
    assert forward.words == backward.words


def test_min_count_drops_rare_words():
    v = vocab.Vocab.from_counts(COUNTS, min_count=3)
    assert v.words == ("the", "a", "cat", "on")
    assert len(vocab.Vocab.from_counts(COUNTS)) == 1  # default min_count=5 keeps "the"


def test_max_vocab_size_keeps_most_frequent_and_breaks_ties_by_word():
    v = vocab.Vocab.from_counts(COUNTS, min_count=1, max_vocab_size=3)
    assert v.words == ("the", "a", "cat")  # "on" ties with "a" and "cat" but sorts last
    assert len(vocab.Vocab.from_counts(COUNTS, min_count=1, max_vocab_size=100)) == 6


def test_decode_maps_ids_to_words():
    v = vocab.Vocab.from_counts(COUNTS, min_count=2)
    assert v.decode(np.array([0, 2, 3, 0, 4], np.int32)) == ["the", "cat", "on", "the", "mat"]
    assert v.decode(range(len(v))) == list(v.words)
    assert v.decode([]) == []


def test_decode_rejects_ids_outside_the_vocab():
    v = vocab.Vocab.from_counts(COUNTS, min_count=1)
    with pytest.raises(ValueError, match="ids must be in"):
        v.decode([0, -1])
    with pytest.raises(ValueError, match="ids must be in"):
        v.decode([len(v)])


def test_index_is_cached_and_consistent():
    v = vocab.Vocab.from_counts(COUNTS, min_count=1)
    assert v.index is v.index
    assert all(v.words[i] == w for w, i in v.index.items())


def test_frozen_and_counts_read_only():
    v = vocab.Vocab.from_counts(COUNTS, min_count=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.words = ()
    with pytest.raises(ValueError):
        v.counts[0] = 1


def test_save_load_round_trip(tmp_path):
    v = vocab.Vocab.from_counts({**COUNTS, "café": 4, "<eos>": 5}, min_count=1)
    path = tmp_path / "vocab.tsv"
    v.save(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[:3] == ["the\t9", "<eos>\t5", "café\t4"]
    assert len(lines) == len(v)
    loaded = vocab.Vocab.load(path)
    assert loaded == v
    assert loaded.counts.dtype == np.int64
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_load_rejects_malformed_and_unsorted_files(tmp_path):
    path = tmp_path / "vocab.tsv"
    path.write_text("the\t9\ncat three\n")
    with pytest.raises(ValueError, match=r"vocab.tsv:2: expected 'word<TAB>count'"):
        vocab.Vocab.load(path)
    path.write_text("cat\t3\nthe\t9\n")
    with pytest.raises(ValueError, match="descending count"):
        vocab.Vocab.load(path)


def test_constructor_checks_invariants():
    with pytest.raises(ValueError, match="one count per word"):
        vocab.Vocab(words=("a", "b"), counts=np.array([2]))
    with pytest.raises(ValueError, match="distinct"):
        vocab.Vocab(words=("a", "a"), counts=np.array([2, 2]))
    with pytest.raises(ValueError, match="ties must be sorted"):
        vocab.Vocab(words=("b", "a"), counts=np.array([2, 2]))


def test_empty_vocabulary_error_is_one_helpful_line():
    with pytest.raises(ValueError) as info:
        vocab.Vocab.from_counts({"a": 2, "b": 1, "c": 1}, min_count=5)
    message = str(info.value)
    assert "\n" not in message
    assert "read 4 tokens of 3 types" in message
    assert "min_count=5" in message and "lower min_count" in message


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="min_count"):
        vocab.Vocab.from_counts(COUNTS, min_count=0)
    with pytest.raises(ValueError, match="max_vocab_size"):
        vocab.Vocab.from_counts(COUNTS, max_vocab_size=0)
