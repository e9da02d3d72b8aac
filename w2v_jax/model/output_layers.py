r"""The six output layers, each declared once: the registry every other module reads.

A layer is what turns an input vector into a loss on the centre word: its output table,
whether it draws noise samples or walks the Huffman tree, its per-example library loss
(`losses`), and its logits-level core and correction (`losses.terms`). The step, the
fused kernels, the likelihood and the analyses look these attributes up instead of
comparing loss names, so a new layer is one entry here plus its loss.

========================  ==============  =======  ====  ======================  =========
name                      table           sampled  tree  core                    correction
========================  ==============  =======  ====  ======================  =========
``softmax``               ``out_embed``   no       no    logsumexp over V        none
``softmax_penalty``       ``out_embed``   no       no    penalised_nll           none
``sampled_softmax``       ``out_embed``   yes      no    sampled_softmax_terms   − log q
``nce``                   ``out_embed``   yes      no    sigmoid_terms           − log(K q)
``neg``                   ``out_embed``   yes      no    sigmoid_terms           none
``hs``                    ``node_embed``  no       yes   tree_terms              none
========================  ==============  =======  ====  ======================  =========

Samples equal to the example's label ("accidental hits") are dropped where the layer
``drops_hits`` and the step's ``remove_accidental_hits`` is on: ``neg`` (word2vec C's and
gensim's skip of a negative equal to the target) and ``sampled_softmax`` (TensorFlow's
default). ``nce`` always keeps them: its ``− log(K q)`` logit is the log-odds of data
against K draws from ``q`` itself, label included (`losses.nce_loss`).

``softmax_penalty`` is the softmax plus ``penalty`` · (Z − 1 − log Z), Z exact: what binary
NCE optimises as K grows (Ma & Collins, 2018). It trains like the softmax (a dense output
gradient) and is scored like it (the exact held-out likelihood ignores the penalty).

`Constants` (the per-run arrays a layer needs: the noise table and log q, or the Huffman
arrays) are built on the host by `constants_for`.

Shape letters: V vocab, L Huffman depth, E examples, D dim, K samples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from w2v_jax.model import huffman, losses, sampling
from w2v_jax.model.losses import terms


class Constants(NamedTuple):
    """Per-run constant arrays a layer needs, passed to the step as arguments (never
    closed over). Fields a layer does not use are None.

    Look them up by a batch's word ids with `log_q_at` and `paths`: a padding id (V, see
    `input_pipeline.Batch`) gets log q 0 and the empty path, whose points are V - 1, one
    past the inner nodes, so the step's gathers read zeros there and its scatters drop.
    """

    noise: object = None  # sampling.AliasTable over the noise distribution q (sampled)
    log_q: jax.Array | None = None  # [V] float32 log noise probabilities (sampled)
    codes: jax.Array | None = None  # [V, L] float32 Huffman codes per word (tree)
    points: jax.Array | None = None  # [V, L] int32 inner-node ids per word, V-1 pads (tree)
    path_mask: jax.Array | None = None  # [V, L] float32, 1 on valid path positions (tree)

    def log_q_at(self, ids: jax.Array) -> jax.Array:
        """log q of word ``ids`` (any shape); 0 at an id outside [0, V) (padding)."""
        return losses.take(self.log_q, ids)

    def paths(self, words: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(codes, points, path_mask), each [..., L], of ``words`` [...]; a word id outside
        [0, V) (padding) gets the empty path: codes 0, points V - 1, mask 0."""
        inner = self.points.shape[0] - 1  # V - 1 inner nodes: the padding point
        return (
            losses.take(self.codes, words),
            jnp.asarray(self.points).at[words].get(mode="fill", fill_value=inner),
            losses.take(self.path_mask, words),
        )


@dataclasses.dataclass(frozen=True)
class OutputLayer:
    """One output layer (hashable: usable as a static argument of `jax.jit`)."""

    name: str  # the config's ``loss.name``
    loss: Callable[..., jax.Array]  # the per-example library loss (`losses`)
    table: str = "out_embed"  # the output table it trains: out_embed [V, D] | node_embed [V-1, D]
    sampled: bool = False  # draws K noise samples per example from q (needs noise, log_q)
    tree: bool = False  # walks the Huffman tree (needs codes, points, path_mask)
    binary: bool = False  # sampled core: sigmoid_terms (True) or sampled_softmax_terms
    correction: Callable | None = None  # (logits, log_q, K) -> logits, from `losses.terms`
    biases: bool = True  # output biases are defined (not for the tree's inner nodes)
    penalised: bool = False  # full softmax plus penalty · (Z − 1 − log Z) (takes ``penalty``)
    drops_hits: bool = False  # sampled: takes ``remove_accidental_hits`` (neg, sampled softmax)

    def table_rows(self, vocab_size: int) -> int:
        """Rows of the output table: V - 1 inner nodes for the tree, else V words."""
        return vocab_size - 1 if self.tree else vocab_size

    def per_example(
        self,
        inputs,
        out,
        labels,
        *,
        bias=None,
        samples=None,
        log_q=None,
        path=None,
        chunk_size: int | None = None,
        remove_accidental_hits: bool = True,
        penalty: float = 1.0,
    ) -> jax.Array:
        """The library loss [E] with the arguments this layer takes.

        inputs [E, D], out [V, D] (or the gathered rows), labels [E], bias [V] or None,
        samples [E, K] (sampled), log_q [V] (corrected layers), path (codes, points,
        mask) each [E, L] (tree), penalty α >= 0 (penalised), remove_accidental_hits
        (``drops_hits``); the rest is ignored.
        """
        if self.tree:
            return self.loss(inputs, out, *path)
        if not self.sampled:
            extra = {"penalty": penalty} if self.penalised else {}
            return self.loss(inputs, out, labels, bias, chunk_size=chunk_size, **extra)
        corrected = () if self.correction is None else (log_q,)
        hits = {"remove_accidental_hits": remove_accidental_hits} if self.drops_hits else {}
        return self.loss(inputs, out, labels, samples, *corrected, bias, **hits)


LAYERS: tuple[OutputLayer, ...] = (
    OutputLayer("softmax", losses.softmax_loss),
    OutputLayer("softmax_penalty", losses.softmax_penalty_loss, penalised=True),
    OutputLayer(
        "sampled_softmax",
        losses.sampled_softmax_loss,
        sampled=True,
        correction=terms.log_q_correction,
        drops_hits=True,
    ),
    OutputLayer(
        "nce", losses.nce_loss, sampled=True, binary=True, correction=terms.log_kq_correction
    ),
    # Negative sampling: NCE's sigmoid terms without the log(K q) correction.
    OutputLayer("neg", losses.negative_sampling_loss, sampled=True, binary=True, drops_hits=True),
    OutputLayer(
        "hs", losses.hierarchical_softmax_loss, table="node_embed", tree=True, biases=False
    ),
)
BY_NAME: dict[str, OutputLayer] = {layer.name: layer for layer in LAYERS}
NAMES: tuple[str, ...] = tuple(BY_NAME)  # the config's allowed ``loss.name`` values
SAMPLED: tuple[str, ...] = tuple(layer.name for layer in LAYERS if layer.sampled)


VECTORS = ("input", "input+output")  # config.vectors: the word vectors a run exports


def word_vectors(params: dict, layer: str | OutputLayer, vectors: str) -> np.ndarray:
    """[V, D] float32 word vectors of trained ``params``: what a run evaluates and exports.

    ``vectors`` "input": the input table ``in_embed`` (word2vec's and gensim's export);
    "input+output": ``in_embed`` plus the output table where ``layer`` has one vector per
    word (every layer but the tree, whose inner nodes are not words: its input vectors).
    The sum is the "w + c" of Levy, Goldberg & Dagan (TACL 2015); docs/training.md
    measures it (higher analogy, WS353 and neighbour stability across seeds here).
    """
    words = np.asarray(params["in_embed"], np.float32)
    layer = get(layer)
    if vectors == "input+output" and not layer.tree:
        return words + np.asarray(params[layer.table], np.float32)
    return words


def get(layer: str | OutputLayer) -> OutputLayer:
    """The layer called ``layer`` (a layer is returned as it is)."""
    if isinstance(layer, OutputLayer):
        return layer
    if layer not in BY_NAME:
        raise ValueError(f"unknown output layer {layer!r}; use one of {list(NAMES)}")
    return BY_NAME[layer]


def constants_for(
    layer: str | OutputLayer, counts: np.ndarray, ns_exponent: float = 0.75
) -> Constants:
    """The host arrays ``layer`` needs from the word counts [V]: the unigram^ns_exponent
    noise table and log q (sampled layers) or the Huffman arrays (the tree)."""
    layer = get(layer)
    if layer.sampled:
        return Constants(
            noise=sampling.build_alias_table(sampling.noise_probs(counts, ns_exponent)),
            log_q=sampling.noise_log_probs(counts, ns_exponent),
        )
    if layer.tree:
        tree = huffman.build_huffman(counts)
        return Constants(
            codes=tree.codes.astype(np.float32),
            points=tree.points.astype(np.int32),
            path_mask=tree.mask.astype(np.float32),
        )
    return Constants()
