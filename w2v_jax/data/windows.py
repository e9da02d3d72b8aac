"""Chunks, subsampling and context windows of an epoch, in host NumPy.

A process's share of the corpus (`share_sentences`) is cut into chunks of whole sentences
(`make_plan`) on a grid of token positions common to every process, so a chunk's tokens
do not depend on the number of processes unless a share's edge cuts it; chunk c of
epoch e draws everything from its own generator seeded with (seed, e, first token of c).
Within a chunk all work is vectorised: no Python loop runs per token or per pair.
`input_pipeline` turns the rows made here into fixed-shape batches.

Shape letters: N tokens (of the chunk), S sentences, V vocabulary, M kept tokens, R rows,
W window, C context slots (2·W, or W when left-only; 1 for pairs).

Slot order of a grouped row: slot k < W holds the kept word k + 1 positions to the left of
the centre; slot W + k the kept word k + 1 positions to the right. A left-only row is the
first W slots, so its position is meaningful (slot 0 = previous word).

Padding: a slot with no context holds the id V (``pad_id``, see `input_pipeline.Batch`).
"""

from typing import NamedTuple

import numpy as np


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
    r"""word2vec C's probability of keeping each word in frequent-word subsampling.

    .. math::
        p_{keep}(w) = \min\left(1, \left(\sqrt{\frac{f_w}{tN}} + 1\right)\frac{tN}{f_w}\right)

    with f_w the count of w, N the total count and t = ``sample``. This is what word2vec C
    and gensim compute. The paper (Mikolov et al., 2013, "Distributed Representations of
    Words and Phrases and their Compositionality", eq. 5) states a different rule: discard
    with probability 1 - sqrt(t / (f_w / N)), i.e. keep sqrt(tN / f_w), which keeps fewer
    of the frequent words (the C code adds tN / f_w).

    Args:
        counts: int[V] vocabulary counts.
        sample: the threshold t; 0 disables subsampling (every probability is 1).

    Returns:
        float64[V] keep probabilities in (0, 1]; words with count 0 get 1.
    """
    counts = np.asarray(counts, np.float64)
    if counts.ndim != 1:
        raise ValueError(f"counts must be 1-D, got shape {counts.shape}")
    if sample < 0:
        raise ValueError(f"sample must be >= 0, got {sample}")
    if sample == 0:
        return np.ones_like(counts)
    threshold = sample * counts.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        p = (np.sqrt(counts / threshold) + 1.0) * threshold / counts
    return np.where(counts > 0, np.minimum(p, 1.0), 1.0)


def split_sentences(offsets: np.ndarray, max_length: int) -> np.ndarray:
    """Cuts every sentence longer than ``max_length`` tokens into consecutive pieces: the
    one sentence cutter, applied once, when a corpus is loaded (`encoding.encode`,
    pre-encoded folders, `sources`' synthetic corpus). Empty sentences are dropped.
    gensim does the same with 10,000-token pieces; word2vec C with 1,000 kept words. It
    also lets one-line corpora such as text8 be chunked.

    Args:
        offsets: int[S + 1] sentence boundaries.
        max_length: the longest piece, in tokens.

    Returns:
        int64[S' + 1] piece boundaries covering the same tokens.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    offsets = np.asarray(offsets, np.int64)
    num = -(-np.diff(offsets) // max_length)  # ceil; 0 for an empty sentence
    first = np.cumsum(num) - num
    k = np.arange(num.sum()) - np.repeat(first, num)
    starts = np.repeat(offsets[:-1], num) + k * max_length
    return np.append(starts, offsets[-1])


class Draws(NamedTuple):
    """The random choices of one chunk: which tokens survive and each centre's window."""

    keep: np.ndarray  # bool [N]   the token survived subsampling
    kept_ids: np.ndarray  # int32 [M]  ids of the kept tokens, in corpus order
    kept_offsets: np.ndarray  # int32 [S + 1] sentence boundaries counted in kept tokens
    span: np.ndarray  # int32 [M]  effective window b of each kept centre (1..W)


def draw(
    rng: np.random.Generator,
    tokens: np.ndarray,
    offsets: np.ndarray,
    keep_prob: np.ndarray | None,
    *,
    window: int,
    dynamic_window: bool,
) -> Draws:
    """Draws subsampling and dynamic windows for one chunk, in a fixed stream order.

    The stream gives one float32 uniform per token (only with ``keep_prob``), then one
    window per kept token (only with ``dynamic_window``), so the same chunk of the same
    epoch always gets the same draws.

    Args:
        rng: the chunk's generator.
        tokens: int32[N] token ids of the chunk.
        offsets: int[S + 1] sentence boundaries relative to the chunk (0 .. N).
        keep_prob: float32[V] keep probabilities (`keep_probabilities`); None keeps all.
        window: the maximum window W.
        dynamic_window: draw b uniform in 1..W per kept centre (word2vec); else b = W.
    """
    if keep_prob is not None:
        u = rng.random(tokens.shape[0], dtype=np.float32)
        keep = u < keep_prob[tokens]
        kept_ids = tokens[keep]
        cum = np.concatenate([[0], np.cumsum(keep, dtype=np.int32)])
        kept_offsets = cum[offsets]
    else:
        keep = np.ones(tokens.shape[0], bool)
        kept_ids = tokens
        kept_offsets = np.asarray(offsets, np.int32)
    if dynamic_window:
        span = rng.integers(1, window + 1, size=kept_ids.shape[0], dtype=np.int32)
    else:
        span = np.full(kept_ids.shape[0], window, np.int32)
    return Draws(keep, kept_ids, kept_offsets.astype(np.int32, copy=False), span)


def make_rows(
    draws: Draws, *, layout: str, window: int, left_only: bool, pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Builds the rows of one chunk from its draws.

    Args:
        draws: the chunk's `Draws`.
        layout: "grouped" (one row per kept centre with at least one context, C = 2W or
            W slots) or "pairs" (one row per (centre, context) pair, C = 1, centre-major).
        window: the maximum window W.
        left_only: only the previous words are contexts.
        pad_id: the id of an empty slot: V, the vocabulary size (outside every V-row table).

    Returns:
        centres int32[R], contexts int32[R, C] (``pad_id`` where invalid), mask float32[R, C].
    """
    ids = draws.kept_ids
    # Valid left and right contexts of each kept centre [M]: at most ``span`` kept words
    # away and in the same sentence.
    lengths = np.diff(draws.kept_offsets)
    index = np.arange(ids.shape[0], dtype=np.int32)
    left = np.minimum(index - np.repeat(draws.kept_offsets[:-1], lengths), draws.span)
    right = np.zeros_like(left)
    if not left_only:
        right = np.minimum(np.repeat(draws.kept_offsets[1:], lengths) - 1 - index, draws.span)
    padded = np.concatenate([np.zeros(window, np.int32), ids, np.zeros(window, np.int32)])
    around = np.lib.stride_tricks.sliding_window_view(padded, 2 * window + 1)  # [M, 2W+1]
    # Row pattern of valid slots for every (left, right) count: one gather, not a compare.
    first = np.arange(window)[None, :] < np.arange(window + 1)[:, None]  # [W+1, W]
    if left_only:
        code, patterns = left, first
    else:
        code = left * (window + 1) + right
        patterns = np.concatenate(
            [np.repeat(first, window + 1, 0), np.tile(first, (window + 1, 1))], 1
        )
    valid = patterns[code]  # [M, C]
    contexts = np.empty(valid.shape, np.int32)
    contexts[:, :window] = around[:, window - 1 :: -1]  # distance 1..W
    if not left_only:
        contexts[:, window:] = around[:, window + 1 :]
    if layout == "pairs":
        centres = np.repeat(ids, left + right)
        pair_contexts = contexts[valid][:, None]
        return centres, pair_contexts, np.ones(pair_contexts.shape, np.float32)
    np.copyto(contexts, np.int32(pad_id), where=~valid)
    mask = patterns.astype(np.float32)[code]
    nonempty = (left + right) > 0
    if nonempty.all():
        return ids, contexts, mask
    return ids[nonempty], contexts[nonempty], mask[nonempty]


def shuffle_rows(rng: np.random.Generator, rows: tuple, buffer: int) -> tuple:
    """Permutes rows within consecutive blocks of ``buffer`` rows (0 or 1: no shuffle)."""
    n = rows[0].shape[0]
    if buffer <= 1 or n < 2:
        return rows
    full = n // buffer * buffer
    blocks = rng.permuted(np.arange(full).reshape(-1, buffer), axis=1)
    order = np.concatenate([blocks.ravel(), full + rng.permutation(n - full)])
    return tuple(a[order] for a in rows)


def share_sentences(offsets: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
    """The sentences of one process's share: contiguous, disjoint, covering and near-equal
    in tokens over the processes.

    The share of process p is the sentences that start in tokens [p·N/P, (p + 1)·N/P),
    found by binary searches in ``offsets`` (which may be memory-mapped), so a process
    reads O(S/P + P log S) offsets. The sentences are the corpus's own, already cut to
    ``corpus.max_sentence_length`` (`split_sentences`, when the corpus is loaded).

    Args:
      offsets: int[S + 1] increasing sentence boundaries (0 .. N).
      process_index, process_count: p and P.

    Returns:
      int64 [S_p + 1] the share's sentence boundaries (global token offsets); a share with
      no sentence is ``[t, t]``: zero tokens.
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    n = int(offsets[-1])
    lo, hi = (
        n if t >= n else int(offsets[np.searchsorted(offsets, t, "left")])  # first start >= t
        for t in (n * process_index // process_count, n * (process_index + 1) // process_count)
    )
    if hi <= lo:
        return np.array([lo, lo], np.int64)
    first = int(np.searchsorted(offsets, lo, "right")) - 1
    last = int(np.searchsorted(offsets, hi, "left"))
    return np.asarray(offsets[first : last + 1], np.int64)


class Plan(NamedTuple):
    """How one process's share of the corpus is cut into independently seeded chunks."""

    ids: np.ndarray  # int32 [N] the whole corpus (maybe a memmap: only the share is read)
    pieces: np.ndarray  # int64 [S' + 1] this process's sentence pieces (global offsets)
    bounds: np.ndarray  # int64 [K + 1] chunk k = pieces bounds[k] .. bounds[k + 1]
    keep_prob: np.ndarray | None  # float32 [V]; None when every word is kept
    seed: int
    window: int
    dynamic_window: bool
    vocab_size: int  # V: the id of a padding slot (`make_rows`'s ``pad_id``)

    @property
    def tokens(self) -> int:
        """Raw tokens of this share (one epoch)."""
        return int(self.pieces[-1] - self.pieces[0])

    def chunk(self, epoch: int, k: int) -> tuple[Draws, np.random.Generator, int, int]:
        """Draws chunk k of an epoch.

        Returns the draws, the chunk's generator (its stream continues with the shuffle)
        and the chunk's token range [lo, hi) in ``ids``.
        """
        first, last = self.bounds[k], self.bounds[k + 1]
        lo, hi = int(self.pieces[first]), int(self.pieces[last])
        rng = np.random.default_rng((self.seed, epoch, lo))
        tokens, rel = self.ids[lo:hi], self.pieces[first : last + 1] - lo
        draws = draw(
            rng, tokens, rel, self.keep_prob, window=self.window, dynamic_window=self.dynamic_window
        )
        return draws, rng, lo, hi


def make_plan(
    ids,
    offsets,
    counts,
    *,
    window: int,
    sample: float,
    seed: int,
    dynamic_window: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    chunk_tokens: int = 1 << 16,
) -> Plan:
    """Validates the corpus arrays and cuts this process's share into chunks.

    Arguments as in `input_pipeline.iterate_batches`. Only the share's ids and offsets
    are read (they may be memory-mapped): a process's start-up reads 1/P of the corpus.
    Chunks end at the first piece boundary at or after each multiple of ``chunk_tokens``
    (global token positions), and at the share's edges.
    """
    if window < 1 or seed < 0 or chunk_tokens < 1:
        raise ValueError(
            f"need window, chunk_tokens >= 1 and seed >= 0: {window}, {chunk_tokens}, {seed}"
        )
    ids, offsets = np.asarray(ids), np.asarray(offsets, np.int64)  # memmaps stay unread
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be a 1-D integer array, got {ids.dtype}{ids.shape}")
    if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != ids.size:
        raise ValueError("offsets must be 1-D, start at 0 and end at len(ids)")
    pieces = share_sentences(offsets, process_index, process_count)
    if np.any(np.diff(pieces) < 0):
        raise ValueError("offsets must be non-decreasing")
    mine = ids[pieces[0] : pieces[-1]]
    if mine.size and (mine.min() < 0 or mine.max() >= len(counts)):
        raise ValueError(f"ids must lie in [0, {len(counts)})")
    grid = np.arange((pieces[0] // chunk_tokens + 1) * chunk_tokens, pieces[-1], chunk_tokens)
    cuts = np.searchsorted(pieces, grid)
    bounds = np.unique(np.concatenate([[0], cuts, [pieces.shape[0] - 1]]))
    keep_prob = keep_probabilities(counts, sample).astype(np.float32)
    keep_prob = None if np.all(keep_prob >= 1.0) else keep_prob
    ids = ids if ids.dtype == np.int32 else ids.astype(np.int32)
    return Plan(ids, pieces, bounds, keep_prob, seed, window, dynamic_window, len(counts))


class EpochDraws(NamedTuple):
    """The random choices of one epoch over a plan's share (see `epoch_draws`)."""

    offsets: np.ndarray  # int64 [S' + 1] sentence pieces (global token offsets)
    keep: np.ndarray  # bool [N']  the token survived subsampling
    span: np.ndarray  # int32 [N'] effective window of a kept token; 0 if dropped


def epoch_draws(plan: Plan, epoch: int) -> EpochDraws:
    """All draws of one epoch; with them a naive double loop reproduces every row.

    For tests and analysis: `input_pipeline.iterate_batches` with the same `make_plan`
    arguments makes exactly these draws.
    """
    keep, span = [np.zeros(0, bool)], [np.zeros(0, np.int32)]
    for k in range(plan.bounds.shape[0] - 1):
        draws = plan.chunk(epoch, k)[0]
        keep.append(draws.keep)
        span.append(np.zeros(draws.keep.shape, np.int32))
        span[-1][draws.keep] = draws.span
    return EpochDraws(plan.pieces, np.concatenate(keep), np.concatenate(span))
