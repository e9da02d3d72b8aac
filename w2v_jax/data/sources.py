"""The data a run trains and evaluates on: its corpus, held-out text and (synthetic) truth.

Shape letters: V vocab, L Huffman depth, N tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from w2v_jax.data import corpus as corpus_lib
from w2v_jax.data import synthetic, windows

# What `corpus.heldout = "heldout"` means per named corpus (ptb has its own files; other
# text-like corpora use their last slice). Any other value is a split name ("test" for ptb).
HELDOUT_SPLIT = {"ptb": "valid"}
_HELDOUT_SEED_OFFSET = 1_000_003  # held-out synthetic text: same chain, another stream


class CorpusOptions(NamedTuple):
    """Which corpus a run trains on and how it is read (`settings.resolve` builds it)."""

    name: str  # "synthetic", a named corpus ("text8", "ptb", ...) or a path
    data_dir: str | None  # None: $W2V_DATA_DIR, else the user cache
    cache_dir: str | None  # encoded corpora; None: ~/.cache/w2v_jax/cache
    workers: int | None  # processes tokenising a directory; None: min(4, CPUs)
    download: bool  # fetch text8.zip when missing
    min_count: int  # drop words rarer than this
    max_vocab_size: int | None  # None: no cap
    max_sentence_length: int  # longest sentence, in tokens
    heldout_split: str  # the split evaluated as held-out text; "" = none
    synthetic: synthetic.SyntheticSpec | None  # the chain, when name == "synthetic"
    synthetic_heldout_tokens: int  # held-out tokens drawn from the same chain


class Data(NamedTuple):
    train: corpus_lib.Corpus
    heldout: corpus_lib.Corpus | None  # encoded with the training vocabulary
    truth: synthetic.GroundTruth | None  # synthetic corpus only
    word_benchmarks: bool  # English text: analogy and word-similarity sets apply


def heldout_split(name: str, heldout: str) -> str:
    """The split name ``corpus.heldout`` means for corpus ``name`` ("" = none)."""
    if heldout == "heldout":
        return HELDOUT_SPLIT.get(name, "heldout")
    return heldout


def _cut(c: corpus_lib.Corpus, max_sentence_length: int) -> corpus_lib.Corpus:
    """``c`` with its sentences cut as a loaded corpus's (`windows.split_sentences`)."""
    return c._replace(offsets=windows.split_sentences(c.offsets, max_sentence_length))


def _synthetic(options: CorpusOptions) -> Data:
    spec = options.synthetic
    train, truth = synthetic.make_synthetic(spec)
    train = _cut(train, options.max_sentence_length)
    heldout = None
    if options.heldout_split and options.synthetic_heldout_tokens:
        chain_ids, offsets = synthetic.sample_chain(
            truth.chain,
            num_tokens=options.synthetic_heldout_tokens,
            sentence_length=spec.sentence_length,
            seed=spec.seed + _HELDOUT_SEED_OFFSET,
        )
        ids = truth.chain_to_vocab[chain_ids]
        keep = ids >= 0  # words that never occurred in training are out of vocabulary
        new_offsets = np.concatenate([[0], np.cumsum(keep)])[offsets]
        heldout = corpus_lib.Corpus(ids[keep].astype(np.int32), new_offsets, train.vocab)
        heldout = _cut(heldout, options.max_sentence_length)
    return Data(train, heldout, truth, word_benchmarks=False)


def load(options: CorpusOptions) -> Data:
    """Loads the training corpus, its held-out text and (synthetic only) the truth."""
    if options.name == "synthetic":
        return _synthetic(options)
    common = dict(
        data_dir=options.data_dir,
        cache_dir=options.cache_dir,
        workers=options.workers,
        max_sentence_length=options.max_sentence_length,
    )
    train = corpus_lib.load_corpus(
        options.name,
        split="train",
        min_count=options.min_count,
        max_vocab_size=options.max_vocab_size,
        download=options.download,
        **common,
    )
    heldout = None
    if options.heldout_split:
        heldout = corpus_lib.encode_corpus(
            options.name, train.vocab, split=options.heldout_split, **common
        )
    return Data(train, heldout, None, word_benchmarks=True)
