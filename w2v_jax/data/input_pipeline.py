"""Host input pipeline: fixed-shape word2vec batches from a tokenised corpus.

The corpus comes in as arrays: ``ids`` int32[N] (OOV removed), ``offsets`` int64[S + 1]
(sentence s is ids[offsets[s]:offsets[s + 1]]) and ``counts`` int64[V]. Everything runs in
NumPy on the host; the device only sees `Batch`es of one shape.

An epoch is cut into chunks of whole sentences (about ``chunk_tokens`` tokens each; the
corpus's sentences are already cut to ``corpus.max_sentence_length``). Chunk c of epoch
e draws its subsampling, windows and shuffle from its own generator seeded with (seed, e, first
token of c), so batches are a pure function of (seed, epoch, batch index). A `Position`
names the chunk and the row within it where the next batch starts, so a resume builds
that one chunk: O(1) in the corpus size.

Several processes: each reads only its share of the corpus (`windows.share_sentences`)
and yields the same ``batches_per_epoch``, so all step in lockstep at the same learning rate.

Shape letters: B batch rows, C context slots, N tokens, S sentences, V vocabulary.
"""

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
from absl import logging

from w2v_jax.data import prefetch, windows

LAYOUTS = ("grouped", "pairs")


class PipelineOptions(NamedTuple):
    """How a run cuts its corpus into batches (`settings.resolve` builds it)."""

    layout: str  # "grouped" (centre x context slots) or "pairs" (skip-gram)
    rows_per_call: int  # batch rows the host sends per call (batch_size x steps_per_call)
    window: int  # max distance between centre and context
    sample: float  # subsampling threshold t (0 = off)
    dynamic_window: bool  # word2vec's effective window ~ Uniform{1..window}
    left_only: bool  # contexts are only the previous words
    shuffle_buffer: int  # rows shuffled within a bounded buffer; 0 = corpus order
    prefetch: int  # host batches prepared ahead on a thread; 0 = none
    seed: int  # subsampling, windows, shuffle
    epochs: int  # passes over the corpus
    process_index: int = 0  # this process's share of the corpus ...
    process_count: int = 1  # ... out of this many (rows_per_call is then this share's)
    batches_per_epoch: int | None = None  # several shares: every share yields this many
    epoch_tokens: int | None = None  # several shares: the whole corpus's tokens (for lr)


class Batch(NamedTuple):
    """One fixed-shape batch. An all-zero mask row is padding and carries no loss.

    Padding holds the id V (the vocabulary size), outside the V-row tables: the step
    gathers zeros there (``mode="fill"``) and drops its scatters (``mode="drop"``), so no
    padding slot touches a real row (id 0, the most frequent word, used to take them all).
    A masked context slot always holds V; so does the centre of a row added to fill a batch.
    """

    centres: np.ndarray  # int32 [B]     the centre word (CBOW's label; skip-gram's output)
    contexts: np.ndarray  # int32 [B, C]  context word ids, V where padded
    mask: np.ndarray  # float32 [B, C] 1.0 for a real context slot, 0.0 for padding


class Position(NamedTuple):
    """Where an iteration stands: the next batch to yield is ``batch`` of ``epoch``, and
    its first row is row ``row`` of chunk ``chunk`` of this process's share (in the
    chunk's shuffled order), so resuming builds one chunk."""

    epoch: int = 0
    batch: int = 0
    chunk: int = 0
    row: int = 0


class Item(NamedTuple):
    """What `iterate_batches` yields."""

    batch: Batch
    position: Position  # the position after this batch: start there to continue
    tokens: int  # raw tokens consumed since epoch 0, this batch incl.: this process's
    # share's, or with ``epoch_tokens`` the whole group's, (epoch + (batch + 1) /
    # batches_per_epoch) · epoch_tokens


def share_range(
    offsets: np.ndarray,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> tuple[int, int]:
    """[lo, hi): the tokens this process's share reads (`windows.share_sentences`); with
    one process an `Item`'s ``tokens`` grow by hi - lo per epoch."""
    pieces = windows.share_sentences(offsets, process_index, process_count)
    return int(pieces[0]), int(pieces[-1])


def _empty_batch(batch_size: int, slots: int, pad_id: int) -> Batch:
    """``batch_size`` padding rows: every id ``pad_id`` (V), every mask 0."""
    return Batch(
        np.full(batch_size, pad_id, np.int32),
        np.full((batch_size, slots), pad_id, np.int32),
        np.zeros((batch_size, slots), np.float32),
    )


def _epoch(
    plan: windows.Plan,
    epoch: int,
    start: Position,
    *,
    batch_size: int,
    layout: str,
    left_only: bool,
    shuffle_buffer: int,
    drop_remainder: bool,
) -> Iterator[tuple[Batch, int, int, int]]:
    """Yields (batch, raw tokens consumed in this epoch, chunk, row) from ``start`` on;
    (chunk, row) is where the next batch starts."""
    size, num_chunks = batch_size, plan.bounds.shape[0] - 1
    skip = start.row  # rows of the first chunk that earlier batches took
    parts, have = [], 0  # rows carried over to the next batch
    for chunk in range(start.chunk, num_chunks):
        draws, rng, lo, hi = plan.chunk(epoch, chunk)
        rows = windows.make_rows(
            draws, layout=layout, window=plan.window, left_only=left_only, pad_id=plan.vocab_size
        )
        rows = windows.shuffle_rows(rng, rows, shuffle_buffer)
        n = rows[0].shape[0]
        i, skip = min(skip, n), 0
        done = lo - int(plan.pieces[0])  # tokens before this chunk; row j ends at
        width = hi - lo  # done + width · (j + 1) / n (interpolated)
        if have:
            take = min(size - have, n - i)
            parts.append(tuple(a[i : i + take] for a in rows))
            have, i = have + take, i + take
            if have < size:
                continue
            batch = Batch(*(np.concatenate(p) for p in zip(*parts, strict=True)))
            yield batch, done + width * i // n, chunk, i
            parts, have = [], 0
        while n - i >= size:
            yield (
                Batch(*(a[i : i + size] for a in rows)),
                done + width * (i + size) // n,
                chunk,
                i + size,
            )
            i += size
        if i < n:
            parts, have = [tuple(a[i:] for a in rows)], n - i
    if have and not drop_remainder:
        pad = _empty_batch(size - have, parts[0][1].shape[1], plan.vocab_size)
        batch = Batch(*(np.concatenate(p) for p in zip(*parts, pad, strict=True)))
        yield batch, plan.tokens, num_chunks, 0


def iterate_batches(
    ids: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    *,
    layout: str,
    batch_size: int,
    window: int,
    sample: float,
    seed: int,
    epochs: int | None,
    start: Position | None = None,
    dynamic_window: bool = True,
    left_only: bool = False,
    shuffle_buffer: int = 0,
    drop_remainder: bool = False,
    batches_per_epoch: int | None = None,
    epoch_tokens: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    chunk_tokens: int = 1 << 16,
) -> Iterator[Item]:
    """Yields word2vec batches of one fixed shape, epoch after epoch.

    Frequent words are subsampled (`windows.keep_probabilities`) before windowing, so
    window distances count kept words, as in word2vec C; windows never cross a sentence.
    Centres without any valid context produce no row.

    Args:
        ids: int[N] token ids; offsets: int[S + 1] sentence bounds; counts: int[V].
        layout: "grouped": one row per kept centre, C = 2·window slots (slot k < window is
            the word k + 1 to the left, slot window + k the word k + 1 to the right), or
            C = window left slots when ``left_only``; serves skip-gram (each valid slot is a
            pair) and CBOW (a row is one example). "pairs": flat skip-gram pairs, C = 1.
        batch_size: rows B per batch.
        window: the maximum window W.
        sample: subsampling threshold t (word2vec's ``sample``; 0 disables).
        seed: with the epoch and the chunk, determines every random draw.
        epochs: the epoch to stop before (None: forever).
        start: the position to start from (default the beginning), e.g. the ``position``
            of the last `Item` a previous run consumed (or `position_at`).
        dynamic_window: window b uniform in 1..W per kept centre (word2vec); else b = W.
        left_only: contexts are only the previous words (n-gram / log-bilinear LM setup:
            use with ``dynamic_window=False``).
        shuffle_buffer: permute rows within consecutive blocks of this many rows inside a
            chunk (0: keep corpus order).
        drop_remainder: drop the last partial batch of an epoch instead of padding it.
        batches_per_epoch: if set, every epoch has exactly this many batches: padded with
            padding batches (ids V, mask 0), or truncated (logged). Several processes
            need it so that all of them step in lockstep (`batches_per_epoch`).
        epoch_tokens: with ``batches_per_epoch``: an Item's ``tokens`` are
            (epoch + (batch + 1) / batches_per_epoch) · epoch_tokens, the same on every
            process (pass the whole corpus's tokens).
        process_index, process_count: this process reads only its share of the sentence
            sentences (`windows.share_sentences`).
        chunk_tokens: about how many tokens each independently seeded chunk holds.

    Padding (empty slots, the rows that fill an epoch's last batch) holds the id
    V = len(counts), never a word's id (`Batch`).

    Yields:
        `Item`(batch, position after the batch, cumulative raw tokens). The position after
        the last batch of epoch e is Position(e + 1).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    start = Position() if start is None else Position(*start)
    if batch_size < 1 or start.epoch < 0 or start.batch < 0:
        raise ValueError(f"bad batch_size {batch_size} or start {start}")
    plan = windows.make_plan(
        ids,
        offsets,
        counts,
        window=window,
        sample=sample,
        seed=seed,
        dynamic_window=dynamic_window,
        process_index=process_index,
        process_count=process_count,
        chunk_tokens=chunk_tokens,
    )
    opts = dict(
        batch_size=batch_size,
        layout=layout,
        left_only=left_only,
        shuffle_buffer=shuffle_buffer,
        drop_remainder=drop_remainder,
    )
    slots = 1 if layout == "pairs" else (window if left_only else 2 * window)
    total = plan.tokens
    if epoch_tokens is not None and batches_per_epoch is None:
        raise ValueError("epoch_tokens needs batches_per_epoch")

    def tokens(epoch: int, index: int, within: int) -> int:  # after batch ``index``
        if epoch_tokens is None:
            return epoch * total + within
        return epoch * epoch_tokens + epoch_tokens * (index + 1) // batches_per_epoch

    epoch, at = start.epoch, start
    while epochs is None or epoch < epochs:
        stream = _epoch(plan, epoch, at, **opts)
        if batches_per_epoch is not None:
            stream = _exactly(
                stream,
                batches_per_epoch - at.batch,
                (
                    _empty_batch(batch_size, slots, plan.vocab_size),
                    total,
                    plan.bounds.shape[0] - 1,
                    0,
                ),
                epoch,
            )
        index, previous = at.batch, None
        for current in stream:
            if previous is not None:
                batch, within, chunk, row = previous
                yield Item(
                    batch, Position(epoch, index, chunk, row), tokens(epoch, index - 1, within)
                )
            previous, index = current, index + 1
        if previous is not None:
            yield Item(previous[0], Position(epoch + 1), tokens(epoch, index - 1, previous[1]))
        epoch, at = epoch + 1, Position(epoch + 1)


def _exactly(stream: Iterator, count: int, empty: tuple, epoch: int) -> Iterator:
    """Pads ``stream`` with ``empty`` (an empty batch as `_epoch` yields it), or truncates
    it, to ``count`` batches."""
    for _ in range(count):
        yield next(stream, empty)
    if next(stream, None) is not None:
        logging.warning("epoch %d has more than batches_per_epoch batches; truncated", epoch)


def shard_batch(batch: Batch, num_devices: int) -> Batch:
    """Reshapes every field from [B, ...] to [num_devices, B // num_devices, ...] for pmap."""
    rows = batch.centres.shape[0]
    if num_devices < 1 or rows % num_devices:
        raise ValueError(f"batch of {rows} rows does not split over {num_devices} devices")
    return Batch(*(a.reshape(num_devices, rows // num_devices, *a.shape[1:]) for a in batch))


def _rows_per_kept(options: PipelineOptions) -> float:
    """Expected rows per kept token: 1 (grouped) or the mean number of contexts (pairs)."""
    if options.layout == "grouped":
        return 1.0
    mean_window = (options.window + 1) / 2 if options.dynamic_window else options.window
    return mean_window if options.left_only else 2 * mean_window


def expected_rows_per_epoch(options: PipelineOptions, counts: np.ndarray) -> float:
    """Expected batch rows per epoch over the whole corpus: kept centre words (grouped)
    or kept pairs (pairs)."""
    kept = float(np.sum(counts * windows.keep_probabilities(counts, options.sample)))
    return kept * _rows_per_kept(options)


def share_rows(options: PipelineOptions, ids, offsets, counts, block: int = 1 << 24) -> float:
    """Expected rows of this process's share in one epoch (`expected_rows_per_epoch` of
    its tokens), read in blocks of ``block`` tokens."""
    pieces = windows.share_sentences(
        np.asarray(offsets, np.int64), options.process_index, options.process_count
    )
    keep = windows.keep_probabilities(counts, options.sample)
    lo, hi, kept = int(pieces[0]), int(pieces[-1]), 0.0
    for a in range(lo, hi, block):
        kept += float(np.bincount(ids[a : min(a + block, hi)], minlength=len(keep)) @ keep)
    return kept * _rows_per_kept(options)


def batches_per_share(options: PipelineOptions, ids, offsets, counts) -> int:
    """How many calls of ``rows_per_call`` rows this share fills in an epoch: 99% of its
    expected rows (so a share rarely needs padding). Several processes take the least of
    theirs (`PipelineOptions.batches_per_epoch`)."""
    return max(int(0.99 * share_rows(options, ids, offsets, counts) / options.rows_per_call), 1)


def position_at(options: PipelineOptions, ids, offsets, counts, epoch: int, fraction: float):
    """The `Position` ``fraction`` of the way through ``epoch`` in this share: batch
    ``fraction`` · batches_per_epoch, at the first chunk that starts at or after that
    fraction of the share's tokens. For resuming on another number of processes, where
    the saved chunk and row of each share no longer apply."""
    plan = windows.make_plan(
        ids, offsets, counts, window=options.window, sample=options.sample,
        seed=options.seed, process_index=options.process_index,
        process_count=options.process_count,
    )  # fmt: skip
    starts = plan.pieces[plan.bounds[:-1]] - plan.pieces[0]  # [K] first token of each chunk
    chunk = int(np.searchsorted(starts, fraction * plan.tokens, "left"))
    batch = int(round(fraction * (options.batches_per_epoch or 0)))
    return Position(epoch, batch, chunk, 0)


def _iterate(options: PipelineOptions, ids, offsets, counts, **overrides) -> Iterator[Item]:
    kwargs = dict(
        layout=options.layout,
        batch_size=options.rows_per_call,
        window=options.window,
        sample=options.sample,
        seed=options.seed,
        epochs=options.epochs,
        dynamic_window=options.dynamic_window,
        left_only=options.left_only,
        shuffle_buffer=options.shuffle_buffer,
        process_index=options.process_index,
        process_count=options.process_count,
    )
    kwargs.update(overrides)
    return iterate_batches(ids, offsets, counts, **kwargs)


def batches(
    options: PipelineOptions,
    ids: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    start: Position,
) -> Iterator[Item]:
    """Training batches of ``rows_per_call`` rows from ``start`` to the end of the last
    epoch, prefetched on a thread when ``options.prefetch``."""
    overrides = {"start": start}
    if options.batches_per_epoch is not None:  # every process takes the same steps
        overrides.update(
            batches_per_epoch=options.batches_per_epoch, epoch_tokens=options.epoch_tokens
        )
    items = _iterate(options, ids, offsets, counts, **overrides)
    if options.prefetch:
        return prefetch.prefetch(items, size=options.prefetch)
    return items


def heldout_batches(
    options: PipelineOptions,
    ids: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    max_batches: int,
) -> Sequence[Batch]:
    """A fixed list of held-out batches: epoch 0 of the text as it is (no subsampling),
    seed 0, the whole text on every process."""
    items = _iterate(
        options, ids, offsets, counts, sample=0.0, seed=0, epochs=1, process_index=0,
        process_count=1,
    )  # fmt: skip
    out = []
    for item in items:
        out.append(item.batch)
        if len(out) >= max_batches:
            break
    return out
