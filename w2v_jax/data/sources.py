"""What a run needs from the host, built from the config: corpora, aux arrays, batches.

Shape letters: V vocab, L Huffman depth, N tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import jax
import numpy as np

from w2v_jax import settings
from w2v_jax.data import corpus as corpus_lib
from w2v_jax.data import input_pipeline, prefetch, synthetic
from w2v_jax.model import output_layers

# What `corpus.heldout = "heldout"` means per named corpus (ptb has its own files; other
# text-like corpora use their last slice). Any other value is a split name ("test" for ptb).
HELDOUT_SPLIT = {"ptb": "valid"}
_HELDOUT_SEED_OFFSET = 1_000_003  # held-out synthetic text: same chain, another stream


class Data(NamedTuple):
    train: corpus_lib.Corpus
    heldout: corpus_lib.Corpus | None  # encoded with the training vocabulary
    truth: synthetic.GroundTruth | None  # synthetic corpus only
    english: bool  # analogy/similarity evaluation makes sense


def synthetic_spec(config) -> synthetic.SyntheticSpec:
    s = config.synthetic
    return synthetic.SyntheticSpec(
        vocab_size=s.vocab_size,
        rank=s.rank,
        num_tokens=s.num_tokens,
        zipf_exponent=s.zipf_exponent,
        scale=s.scale,
        seed=s.seed,
        sentence_length=s.sentence_length,
    )


def _synthetic(config) -> Data:
    spec = synthetic_spec(config)
    train, truth = synthetic.make_synthetic(spec)
    heldout = None
    if config.corpus.heldout and config.synthetic.heldout_tokens:
        chain_ids, offsets = synthetic.sample_chain(
            truth.chain,
            num_tokens=config.synthetic.heldout_tokens,
            sentence_length=spec.sentence_length,
            seed=spec.seed + _HELDOUT_SEED_OFFSET,
        )
        ids = truth.chain_to_vocab[chain_ids]
        keep = ids >= 0  # words that never occurred in training are out of vocabulary
        new_offsets = np.concatenate([[0], np.cumsum(keep)])[offsets]
        heldout = corpus_lib.Corpus(ids[keep].astype(np.int32), new_offsets, train.vocab)
    return Data(train, heldout, truth, english=False)


def load(config) -> Data:
    """Loads the training corpus, its held-out text and (synthetic only) the truth."""
    c = config.corpus
    if c.name == "synthetic":
        return _synthetic(config)
    common = dict(data_dir=c.data_dir or None, max_sentence_length=c.max_sentence_length)
    train = corpus_lib.load_corpus(
        c.name,
        split="train",
        min_count=c.min_count,
        max_vocab_size=c.max_vocab_size or None,
        download=c.download,
        **common,
    )
    heldout = None
    if c.heldout:
        split = HELDOUT_SPLIT.get(c.name, "heldout") if c.heldout == "heldout" else c.heldout
        heldout = corpus_lib.encode_corpus(c.name, train.vocab, split=split, **common)
    return Data(train, heldout, None, english=True)


def aux_for(loss_name: str, counts: np.ndarray, ns_exponent: float = 0.75):
    """`output_layers.constants_for` the named layer (kept for the callers of this module)."""
    return output_layers.constants_for(loss_name, counts, ns_exponent)


def make_aux(config, counts: np.ndarray):
    """`aux_for` the config's loss and noise exponent."""
    return aux_for(config.loss.name, counts, config.loss.ns_exponent)


def batch_options(config) -> dict:
    """Pipeline settings of a run; this process reads its own share of the corpus."""
    return dict(
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        layout=config.layout,
        batch_size=config.batch_size * config.steps_per_call,  # rows per call
        window=config.window,
        sample=config.sample,
        dynamic_window=config.dynamic_window,
        left_only=config.left_only,
        max_sentence_length=config.corpus.max_sentence_length,
    )


def batches(
    config, corpus: corpus_lib.Corpus, start: input_pipeline.Position
) -> Iterator[input_pipeline.Item]:
    """Training batches from ``start`` to the end of the last epoch, prefetched."""
    opts = batch_options(config)
    if opts["process_count"] > 1:  # every host must take the same number of steps
        rows = settings.expected_rows_per_epoch(config, corpus) / opts["process_count"]
        opts["batches_per_epoch"] = max(int(0.98 * rows / opts["batch_size"]), 1)
    items = input_pipeline.iterate_batches(
        corpus.ids,
        corpus.offsets,
        corpus.vocab.counts,
        seed=config.seed,
        epochs=config.epochs,
        start=start,
        shuffle_buffer=config.shuffle_buffer,
        **opts,
    )
    if config.prefetch:
        return prefetch.prefetch(items, size=config.prefetch)
    return items


def heldout_batches(config, heldout: corpus_lib.Corpus, max_batches: int):
    """A fixed list of held-out batches (epoch 0 of the held-out text, seed fixed)."""
    opts = batch_options(config)
    opts.update(sample=0.0, process_index=0, process_count=1)  # the text as it is
    items = input_pipeline.iterate_batches(
        heldout.ids, heldout.offsets, heldout.vocab.counts, seed=0, epochs=1, **opts
    )
    out = []
    for item in items:
        out.append(item.batch)
        if len(out) >= max_batches:
            break
    return out
