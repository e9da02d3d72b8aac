r"""The embedded synthetic corpus: a known low-rank Markov chain and its exact ground truth.

Tokens come from a first-order Markov chain over V words with a log-linear transition
matrix of rank R,

.. math::

    P_{wc} = \frac{\exp(u_w \cdot v_c + b_c)}{\sum_{c'} \exp(u_w \cdot v_{c'} + b_{c'})},
    \qquad b_c = -s \log(c + 1),

with Gaussian u, v in R^{V x R} scaled so that u_w . v_c has standard deviation ``scale``.
The bias makes word frequencies Zipf-like with exponent about s; the stationary
distribution pi (pi P = pi) is solved exactly in float64 and is whatever the chain makes
it, so frequencies are Zipf-like rather than exactly Zipf (``scale=0`` gives exact Zipf
and i.i.d. tokens). Words are named ``w0000``, ``w0001``, ... in chain order (chain id c is
the bias rank c); the Corpus's Vocab is sorted by empirical count, so `GroundTruth` maps
between the two orders and gives every truth in vocab order.

Every sentence starts from pi, so each position is exactly stationary; the truth ignores
sentence edges (a pair at distance d is missing d times per sentence), a relative error
of about W / sentence_length, i.e. 0.5% for W=5 and the default length 1000.

Shape letters: V words (chain order), U words in a vocabulary (U <= V), R rank, N tokens,
S sentences, W window.
"""

import dataclasses
import math
import time
from typing import NamedTuple

import numpy as np
from absl import logging

from w2v_jax import errors
from w2v_jax.data import corpus as corpus_lib
from w2v_jax.data import vocab as vocab_lib


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines the synthetic corpus; the same spec gives the same corpus."""

    vocab_size: int = 1000  # V, words in the chain.
    rank: int = 16  # R, rank of the interaction logits u_w . v_c; 1 <= R <= V.
    num_tokens: int = 2_000_000  # N, tokens in the corpus.
    zipf_exponent: float = 1.0  # s >= 0 in the bias b_c = -s log(c + 1).
    scale: float = 2.0  # >= 0, std of u_w . v_c; 0 makes tokens i.i.d. Zipf.
    seed: int = 0  # >= 0; the chain depends on (seed, V, R, s, scale) only, not on N.
    sentence_length: int = 1000  # tokens per sentence (the last one may be shorter); >= 2.

    def __post_init__(self):
        rules = {  # field: (lowest value, rule as said in the error)
            "vocab_size": (2, "must be an integer >= 2"),
            "rank": (1, "must be an integer in [1, vocab_size]"),
            "num_tokens": (1, "must be an integer >= 1"),
            "zipf_exponent": (0.0, "must be a finite number >= 0"),
            "scale": (0.0, "must be a finite number >= 0"),
            "seed": (0, "must be an integer >= 0"),
            "sentence_length": (2, "must be an integer >= 2"),
        }
        for field, (lowest, rule) in rules.items():
            value = getattr(self, field)
            kinds = (int, np.integer) if isinstance(lowest, int) else (int, float, np.number)
            ok = isinstance(value, kinds) and not isinstance(value, bool)
            ok = ok and math.isfinite(value) and value >= lowest
            if field == "rank" and ok:
                ok = value <= self.vocab_size
            if not ok:
                raise errors.ConfigError(f"SyntheticSpec.{field} {rule}, got {value!r}")


class MarkovChain(NamedTuple):
    """A stationary first-order Markov chain, in chain order."""

    transition: np.ndarray  # float64 [V, V], P[w, c] = p(next = c | current = w).
    stationary: np.ndarray  # float64 [V], pi with pi P = pi.


def word_names(vocab_size: int) -> tuple[str, ...]:
    """Names of the chain's words in chain order: ``w0000``, ``w0001``, ...; [V]."""
    width = max(4, len(str(vocab_size - 1)))
    return tuple(f"w{i:0{width}d}" for i in range(vocab_size))


def stationary_distribution(transition: np.ndarray) -> np.ndarray:
    """Solves pi P = pi, sum(pi) = 1 exactly (a linear solve in float64); [V, V] -> [V]."""
    v = transition.shape[0]
    system = transition.T - np.eye(v)
    system[-1] = 1.0  # Replace one (redundant) balance equation by the normalisation.
    rhs = np.zeros(v)
    rhs[-1] = 1.0
    pi = np.linalg.solve(system, rhs)
    return pi / pi.sum()


def make_chain(spec: SyntheticSpec) -> MarkovChain:
    """Builds the spec's transition matrix P [V, V] and its stationary distribution pi [V]."""
    rng = np.random.default_rng([spec.seed, 0])
    std = math.sqrt(spec.scale) * spec.rank**-0.25  # So that std(u_w . v_c) = scale.
    u = rng.normal(0.0, std, (spec.vocab_size, spec.rank))  # [V, R]
    v = rng.normal(0.0, std, (spec.vocab_size, spec.rank))  # [V, R]
    bias = -spec.zipf_exponent * np.log(np.arange(spec.vocab_size) + 1.0)  # [V]
    logits = u @ v.T + bias  # [V, V]
    logits -= logits.max(axis=1, keepdims=True)
    transition = np.exp(logits)
    transition /= transition.sum(axis=1, keepdims=True)
    return MarkovChain(transition, stationary_distribution(transition))


def sample_chain(
    chain: MarkovChain, *, num_tokens: int, sentence_length: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Samples ceil(N / L) independent sentences, each started from pi, run in parallel.

    One vectorised inverse-CDF step per position advances all S chains: the rows of the
    cumulative P are shifted by their row index into one increasing array, so the next word
    of a chain at w with uniform u is a single ``searchsorted`` for w + u.

    Returns:
      ids: int32 [N] chain ids, sentence after sentence.
      offsets: int64 [S+1] sentence boundaries; all sentences have length L but the last.
    """
    v = chain.transition.shape[0]
    num_sentences = -(-num_tokens // sentence_length)
    rng = np.random.default_rng([seed, 1])
    cdf = np.cumsum(chain.transition, axis=1)  # [V, V]
    cdf[:, -1] = 1.0
    flat_cdf = (cdf + np.arange(v)[:, None]).ravel()  # [V*V], row w lies in (w, w+1].
    row_start = np.arange(v, dtype=np.int64) * v  # [V]
    start_cdf = np.cumsum(chain.stationary)
    start_cdf[-1] = 1.0
    tokens = np.empty((sentence_length, num_sentences), np.int32)  # [L, S]
    word = np.searchsorted(start_cdf, rng.random(num_sentences), side="right")  # [S]
    tokens[0] = word
    for t in range(1, sentence_length):
        found = np.searchsorted(flat_cdf, word + rng.random(num_sentences), side="right")
        word = np.minimum(found - row_start[word], v - 1)  # min() guards w + u rounding up.
        tokens[t] = word
    ids = np.ascontiguousarray(tokens.T).ravel()[:num_tokens]
    offsets = np.minimum(np.arange(num_sentences + 1, dtype=np.int64) * sentence_length, num_tokens)
    return ids, offsets


def window_weights(window: int, *, dynamic: bool = True) -> np.ndarray:
    """Probability a_k that a context at distance k = 1..W is used; [W].

    word2vec's dynamic window draws b ~ Uniform{1..W} per centre and keeps distances
    k <= b, so a_k = (W - k + 1) / W; a fixed window keeps all of them, a_k = 1.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window!r}")
    k = np.arange(1, window + 1)
    return (window - k + 1) / window if dynamic else np.ones(window)


def reverse_transition(chain: MarkovChain) -> np.ndarray:
    """The time-reversed chain R[w, c] = pi_c P[c, w] / pi_w = p(previous = c | w); [V, V]."""
    pi = chain.stationary
    return chain.transition.T * pi[None, :] / pi[:, None]


def skipgram_conditional(
    chain: MarkovChain, window: int, *, dynamic: bool = True, left_only: bool = False
) -> np.ndarray:
    r"""Exact p(context = c | centre = w) of the skip-gram pairs; [V, V], rows sum to 1.

    .. math::

        p(c \mid w) = \frac{\sum_{k=1}^W a_k (P^k + R^k)_{wc}}{2 \sum_k a_k}

    with a_k from `window_weights` and R the reversed chain; ``left_only`` keeps only the
    W previous words: p(c | w) = sum_k a_k R^k_{wc} / sum_k a_k.
    """
    weights = window_weights(window, dynamic=dynamic)
    steps = [reverse_transition(chain)] + ([] if left_only else [chain.transition])
    total = np.zeros_like(chain.transition)
    for step in steps:
        power = np.eye(step.shape[0])
        for a_k in weights:
            power = power @ step  # [V, V], k-step transition.
            total += a_k * power
    return total / (len(steps) * weights.sum())


def pair_joint(
    chain: MarkovChain, window: int, *, dynamic: bool = True, left_only: bool = False
) -> np.ndarray:
    """p(w, c) = pi_w p(c | w) of a uniformly drawn (centre, context) pair; [V, V], sums to 1.

    Symmetric for two-sided windows (each pair is seen from both ends); its row and column
    marginals are both pi.
    """
    conditional = skipgram_conditional(chain, window, dynamic=dynamic, left_only=left_only)
    return chain.stationary[:, None] * conditional


def pmi_from_joint(joint: np.ndarray) -> np.ndarray:
    """log p(w, c) - log p(w) - log p(c) with the joint's own marginals; [V, V]."""
    row = joint.sum(axis=1, keepdims=True)
    col = joint.sum(axis=0, keepdims=True)
    return np.log(joint) - np.log(row) - np.log(col)


def conditional_entropy(joint: np.ndarray) -> float:
    """H(C | W) in nats of a joint [V, V]: the lowest mean cross-entropy any model can reach."""
    conditional = joint / joint.sum(axis=1, keepdims=True)
    return float(-(joint * np.log(np.where(joint > 0, conditional, 1.0))).sum())


def _restrict_joint(joint: np.ndarray, index: np.ndarray) -> np.ndarray:
    sub = joint[np.ix_(index, index)]
    return sub / sub.sum()


def _row_normalise(matrix: np.ndarray) -> np.ndarray:
    return matrix / matrix.sum(axis=1, keepdims=True)


class GroundTruth(NamedTuple):
    """The chain behind a synthetic corpus, with every truth in a vocabulary's order.

    Words of the chain missing from the vocabulary (with min_count=1: words that never
    occurred, each with pi_w of order 1/N or less) are dropped and the truth renormalised:
    distributions over U words as a whole, conditionals row by row, PMI from the
    renormalised joint and its marginals. If all V words are present this is a permutation.
    """

    spec: SyntheticSpec
    chain: MarkovChain  # Chain order, all V words.
    vocab_to_chain: np.ndarray  # int64 [U], chain id of each vocab id.

    @property
    def chain_to_vocab(self) -> np.ndarray:
        """int64 [V], vocab id of each chain id, -1 for words not in the vocabulary."""
        out = np.full(self.spec.vocab_size, -1, np.int64)
        out[self.vocab_to_chain] = np.arange(len(self.vocab_to_chain))
        return out

    def for_vocab(self, vocab: vocab_lib.Vocab) -> "GroundTruth":
        """The same truth in another vocabulary's order (exact only if no tokens were removed)."""
        lookup = {name: i for i, name in enumerate(word_names(self.spec.vocab_size))}
        unknown = [w for w in vocab.words if w not in lookup]
        if unknown:
            raise ValueError(f"vocab has words not in the chain, e.g. {unknown[:3]}")
        ids = np.array([lookup[w] for w in vocab.words], dtype=np.int64)
        return self._replace(vocab_to_chain=ids)

    def unigram(self) -> np.ndarray:
        """pi in vocab order; [U]."""
        pi = self.chain.stationary[self.vocab_to_chain]
        return pi / pi.sum()

    def next_word_conditional(self) -> np.ndarray:
        """P in vocab order, p(next | previous n-1 words) for left-only n-gram models; [U, U]."""
        joint = self.chain.stationary[:, None] * self.chain.transition
        return _row_normalise(_restrict_joint(joint, self.vocab_to_chain))

    def pair_joint(self, window: int, *, dynamic=True, left_only=False) -> np.ndarray:
        """`pair_joint` in vocab order; [U, U]."""
        joint = pair_joint(self.chain, window, dynamic=dynamic, left_only=left_only)
        return _restrict_joint(joint, self.vocab_to_chain)

    def skipgram_conditional(self, window: int, *, dynamic=True, left_only=False) -> np.ndarray:
        """`skipgram_conditional` in vocab order, p(context | centre); [U, U]."""
        return _row_normalise(self.pair_joint(window, dynamic=dynamic, left_only=left_only))

    def pmi(self, window: int, *, dynamic=True, left_only=False) -> np.ndarray:
        """Exact PMI(w, c) = log p(w, c) - log p(w) - log p(c) of the window pairs; [U, U]."""
        return pmi_from_joint(self.pair_joint(window, dynamic=dynamic, left_only=left_only))


def make_synthetic(spec: SyntheticSpec) -> tuple[corpus_lib.Corpus, GroundTruth]:
    """Samples the spec's corpus and returns it with its ground truth, both in vocab order.

    The Vocab is built with min_count=1: it holds every word that occurred, sorted by
    descending count (ties by name), and no token is removed, so the truth stays exact.
    Subsampling must be off when training on it.
    """
    start = time.perf_counter()
    chain = make_chain(spec)
    chain_ids, offsets = sample_chain(
        chain, num_tokens=spec.num_tokens, sentence_length=spec.sentence_length, seed=spec.seed
    )
    counts = np.bincount(chain_ids, minlength=spec.vocab_size)  # [V]
    names = word_names(spec.vocab_size)
    vocab = vocab_lib.Vocab.from_counts(
        {names[i]: int(counts[i]) for i in np.flatnonzero(counts)}, min_count=1
    )
    truth = GroundTruth(spec, chain, np.empty(0, np.int64)).for_vocab(vocab)
    ids = truth.chain_to_vocab[chain_ids].astype(np.int32)  # [N]
    seconds = time.perf_counter() - start
    message = "synthetic corpus: %d tokens, %d/%d words occur, %.2fs"
    logging.info(message, len(ids), len(vocab), spec.vocab_size, seconds)
    return corpus_lib.Corpus(ids=ids, offsets=offsets, vocab=vocab), truth
