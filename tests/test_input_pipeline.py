"""Tests of the host input pipeline against naive double loops."""

import itertools
import threading
import time

import numpy as np
import pytest

from w2v_jax.data import input_pipeline, prefetch, windows

V = 60


def make_corpus(seed=0, sentences=40, max_length=30, vocab=V):
    """Zipf-ish ids in sentences of 0..max_length tokens; counts taken from the ids."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, max_length + 1, size=sentences)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    p = 1.0 / np.arange(1, vocab + 1)
    ids = rng.choice(vocab, size=offsets[-1], p=p / p.sum()).astype(np.int32)
    counts = np.maximum(np.bincount(ids, minlength=vocab), 1).astype(np.int64)
    return ids, offsets, counts


def naive_rows(ids, offsets, keep, span, window, pad, left_only=False):
    """Grouped rows by a double loop over kept words: (centre, contexts, mask) per centre;
    empty slots hold ``pad`` (V)."""
    slots = window if left_only else 2 * window
    rows = []
    for s in range(len(offsets) - 1):
        tokens = range(offsets[s], offsets[s + 1])
        words = [int(ids[t]) for t in tokens if keep[t]]
        spans = [int(span[t]) for t in tokens if keep[t]]
        for i, centre in enumerate(words):
            contexts, mask = [pad] * slots, [0.0] * slots
            for d in range(1, spans[i] + 1):
                if i - d >= 0:
                    contexts[d - 1], mask[d - 1] = words[i - d], 1.0
                if not left_only and i + d < len(words):
                    contexts[window + d - 1], mask[window + d - 1] = words[i + d], 1.0
            if any(mask):
                rows.append((centre, contexts, mask))
    return rows


def naive_pairs(rows):
    """Skip-gram pairs of grouped rows, centre-major, slots in order."""
    return [(c, x) for c, xs, ms in rows for x, m in zip(xs, ms, strict=True) if m]


def pair_list(rows):
    """Sorted (centre, context) pairs of pair-layout rows, to compare as multisets."""
    return sorted(zip(rows[0].tolist(), rows[1][:, 0].tolist(), strict=True))


def collect(**kwargs):
    """All items of an iteration (defaults: one epoch, small chunks, batch 7)."""
    args = dict(batch_size=7, window=3, sample=0.0, seed=1, epochs=1, chunk_tokens=50)
    args.update(kwargs)
    corpus = args.pop("corpus")
    return list(input_pipeline.iterate_batches(*corpus, **args))


def real_rows(items):
    """Concatenates the batches and drops the padding (all-zero mask) rows."""
    centres = np.concatenate([it.batch.centres for it in items])
    contexts = np.concatenate([it.batch.contexts for it in items])
    mask = np.concatenate([it.batch.mask for it in items])
    real = mask.any(axis=1)
    return centres[real], contexts[real], mask[real]


def draws_of(corpus, epoch=0, **kwargs):
    args = dict(window=3, sample=0.0, seed=1, chunk_tokens=50)
    args.update(kwargs)
    return windows.epoch_draws(windows.make_plan(*corpus, **args), epoch)


def assert_grouped_equal(items, expected):
    centres, contexts, mask = real_rows(items)
    assert len(centres) == len(expected)
    np.testing.assert_array_equal(centres, [r[0] for r in expected])
    np.testing.assert_array_equal(contexts, [r[1] for r in expected])
    np.testing.assert_array_equal(mask, [r[2] for r in expected])


def assert_pairs_equal(items, expected_rows):
    centres, contexts, mask = real_rows(items)
    pairs = naive_pairs(expected_rows)
    assert contexts.shape[1] == 1 and np.all(mask == 1.0)
    np.testing.assert_array_equal(np.stack([centres, contexts[:, 0]], 1), pairs)


@pytest.mark.parametrize("layout", ["grouped", "pairs"])
@pytest.mark.parametrize("sample,dynamic", [(0.0, False), (0.0, True), (1e-2, False), (1e-2, True)])
def test_rows_match_naive_double_loop(layout, sample, dynamic):
    corpus = make_corpus()
    kw = dict(sample=sample, dynamic_window=dynamic)
    draws = draws_of(corpus, **kw)
    if sample == 0.0:
        assert draws.keep.all()
    else:
        assert 0 < draws.keep.sum() < len(draws.keep)
    if dynamic:
        assert set(draws.span[draws.keep]) == {1, 2, 3}
    else:
        assert np.all(draws.span[draws.keep] == 3)
    expected = naive_rows(corpus[0], corpus[1], draws.keep, draws.span, 3, len(corpus[2]))
    items = collect(corpus=corpus, layout=layout, **kw)
    if layout == "grouped":
        assert_grouped_equal(items, expected)
    else:
        assert_pairs_equal(items, expected)


def test_hand_example_slot_order():
    corpus = (np.array([1, 2, 3, 4], np.int32), np.array([0, 4]), np.ones(5, np.int64))
    kw = dict(corpus=corpus, layout="grouped", window=2, dynamic_window=False, batch_size=4)
    centres, contexts, _ = real_rows(collect(**kw))
    np.testing.assert_array_equal(centres, [1, 2, 3, 4])
    # slots: left d=1, left d=2, right d=1, right d=2; empty slots hold V = 5
    np.testing.assert_array_equal(
        contexts, [[5, 5, 2, 3], [1, 5, 3, 4], [2, 1, 4, 5], [3, 2, 5, 5]]
    )
    centres, contexts, mask = real_rows(collect(left_only=True, **kw))
    np.testing.assert_array_equal(centres, [2, 3, 4])  # the first word has no left context
    np.testing.assert_array_equal(contexts, [[1, 5], [2, 1], [3, 2]])
    np.testing.assert_array_equal(mask, [[1, 0], [1, 1], [1, 1]])


@pytest.mark.parametrize("layout", ["grouped", "pairs"])
def test_left_only_matches_naive(layout):
    corpus = make_corpus(seed=3)
    kw = dict(sample=1e-2, dynamic_window=False, left_only=True)
    draws = draws_of(corpus, dynamic_window=False, sample=1e-2)
    expected = naive_rows(
        corpus[0], corpus[1], draws.keep, draws.span, 3, len(corpus[2]), left_only=True
    )
    items = collect(corpus=corpus, layout=layout, **kw)
    if layout == "grouped":
        assert items[0].batch.contexts.shape == (7, 3)
        assert_grouped_equal(items, expected)
    else:
        assert_pairs_equal(items, expected)


def test_long_sentences_are_split_into_pieces():
    ids, offsets, counts = make_corpus(seed=4, max_length=60)
    corpus = (ids, windows.split_sentences(offsets, 13), counts)  # as a loaded corpus is cut
    kw = dict(sample=1e-2)
    draws = draws_of(corpus, **kw)
    assert np.diff(draws.offsets).max() <= 13
    expected = naive_rows(corpus[0], draws.offsets, draws.keep, draws.span, 3, len(corpus[2]))
    assert_grouped_equal(collect(corpus=corpus, layout="grouped", **kw), expected)


@pytest.mark.parametrize("layout", ["grouped", "pairs"])
def test_windows_stay_inside_sentences(layout):
    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 12, size=30)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    sentence = np.repeat(np.arange(30), lengths)
    ids = (sentence * 10 + rng.integers(0, 10, size=offsets[-1])).astype(np.int32)
    counts = np.bincount(ids, minlength=300) + 1
    items = collect(corpus=(ids, offsets, counts), layout=layout, window=5, sample=1e-2)
    centres, contexts, mask = real_rows(items)
    same = (contexts // 10) == (centres[:, None] // 10)
    assert np.all(same | (mask == 0))
    assert np.all(contexts[mask == 0] == len(counts))  # padding is V, outside the tables


def test_keep_probabilities_formula():
    t, total = 1e-3, 100_000
    counts = np.array([400, 100, 50, 0, total - 550])  # f / (tN) = 4, 1, 0.5, 0, ...
    p = windows.keep_probabilities(counts, t)
    f = counts[[0, -1]].astype(float)
    np.testing.assert_allclose(p[[0, -1]], (np.sqrt(f / (t * total)) + 1) * (t * total) / f)
    np.testing.assert_allclose(p[:4], [0.75, 1.0, 1.0, 1.0])  # clipped to 1; count 0 -> 1
    assert p[0] != np.sqrt(1 / 4)  # the paper's rule keeps sqrt(tN/f) = 0.5
    np.testing.assert_array_equal(windows.keep_probabilities(counts, 0.0), 1.0)


def test_subsampling_keeps_the_expected_fraction():
    corpus = make_corpus(seed=6, sentences=2000)
    draws = draws_of(corpus, sample=1e-2)
    p = windows.keep_probabilities(corpus[2], 1e-2)[corpus[0]]
    assert abs(draws.keep.sum() - p.sum()) < 5 * np.sqrt(np.sum(p * (1 - p)))


def test_determinism_and_fresh_draws_per_epoch():
    corpus = make_corpus()
    kw = dict(corpus=corpus, layout="grouped", sample=1e-2, epochs=2, shuffle_buffer=16)
    a, b = collect(**kw), collect(**kw)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.position == y.position and x.tokens == y.tokens
        for u, v in zip(x.batch, y.batch, strict=True):
            np.testing.assert_array_equal(u, v)
    d0, d1 = draws_of(corpus, 0, sample=1e-2), draws_of(corpus, 1, sample=1e-2)
    assert not np.array_equal(d0.keep, d1.keep) and not np.array_equal(d0.span, d1.span)
    epoch0 = [x for x in a if x.position.epoch == 0 or x.position == (1, 0, 0, 0)]
    epoch1 = a[len(epoch0) :]
    assert not np.array_equal(real_rows(epoch0)[0], real_rows(epoch1)[0])
    other_seed = collect(seed=2, **kw)
    assert not np.array_equal(real_rows(a)[0], real_rows(other_seed)[0])


def test_shuffle_buffer_permutes_within_blocks():
    rng = np.random.default_rng(0)
    (order,) = windows.shuffle_rows(rng, (np.arange(23),), 5)
    assert not np.array_equal(order, np.arange(23))
    for start in range(0, 23, 5):  # each block of 5 rows (the last one of 3) is permuted
        assert sorted(order[start : start + 5]) == list(range(start, min(start + 5, 23)))
    corpus = make_corpus()
    plain = real_rows(collect(corpus=corpus, layout="pairs"))
    mixed = real_rows(collect(corpus=corpus, layout="pairs", shuffle_buffer=8))
    assert not np.array_equal(plain[0], mixed[0])
    assert pair_list(plain) == pair_list(mixed)


def test_positions_and_token_progress():
    corpus = make_corpus()
    items = collect(corpus=corpus, layout="pairs", sample=1e-2, epochs=2)
    n = len(corpus[0])
    assert input_pipeline.share_range(corpus[1]) == (0, n)
    tokens = [it.tokens for it in items]
    assert tokens == sorted(tokens) and tokens[-1] == 2 * n
    per_epoch = sum(1 for it in items if it.position.epoch == 0) + 1
    assert items[per_epoch - 1].position == (1, 0, 0, 0) and items[per_epoch - 1].tokens == n
    assert [it.position[:2] for it in items[:3]] == [(0, 1), (0, 2), (0, 3)]


@pytest.mark.parametrize("layout", ["grouped", "pairs"])
@pytest.mark.parametrize("shuffle_buffer", [0, 5, 1000])
def test_resume_continues_exactly(layout, shuffle_buffer):
    corpus = make_corpus(seed=7)
    kw = dict(corpus=corpus, layout=layout, sample=1e-2, epochs=2, shuffle_buffer=shuffle_buffer)
    full = collect(**kw)
    per_epoch = sum(1 for it in full if it.position.epoch == 0) + 1
    for j in sorted({0, 1, 5, per_epoch // 2, per_epoch - 2, per_epoch - 1, per_epoch + 3}):
        rest = collect(start=full[j].position, **kw)
        assert len(rest) == len(full) - j - 1
        for x, y in zip(full[j + 1 :], rest, strict=True):
            assert x.position == y.position and x.tokens == y.tokens
            for u, v in zip(x.batch, y.batch, strict=True):
                np.testing.assert_array_equal(u, v)
    assert collect(start=input_pipeline.Position(2, 0), **kw) == []


@pytest.mark.parametrize("where", [0.5, -2])
def test_resume_draws_only_the_chunk_it_starts_in(monkeypatch, where):
    corpus = make_corpus(seed=8, sentences=200)
    kw = dict(corpus=corpus, layout="grouped", sample=1e-2, chunk_tokens=100)
    full = collect(**kw)
    calls = []
    draw = windows.draw
    monkeypatch.setattr(windows, "draw", lambda *a, **k: calls.append(1) or draw(*a, **k))
    chunks = len(windows.make_plan(*corpus, window=3, sample=1e-2, seed=1, chunk_tokens=100).bounds)
    j = int(where * len(full)) if where > 0 else len(full) + where
    start = full[j].position
    rest = collect(start=start, epochs=start.epoch + 1, **kw)
    # O(1): the chunk the position names and the ones its first batch reaches, never the
    # earlier chunks of the epoch (a batch of 32 rows spans at most two 100-token chunks).
    assert chunks > 20 and start.chunk > 10 and len(calls) <= len(rest) + 2
    assert len(rest) <= 2 or len(calls) < chunks - start.chunk + 1


def test_padding_and_fixed_shapes():
    corpus = make_corpus()
    for layout, slots in (("grouped", 6), ("pairs", 1)):
        items = collect(corpus=corpus, layout=layout, batch_size=16)
        rows = len(real_rows(items)[0])
        assert len(items) == -(-rows // 16) and rows % 16
        for it in items:
            assert it.batch.centres.shape == (16,) and it.batch.centres.dtype == np.int32
            assert it.batch.contexts.shape == (16, slots) and it.batch.contexts.dtype == np.int32
            assert it.batch.mask.shape == (16, slots) and it.batch.mask.dtype == np.float32
        last = items[-1].batch
        pad = ~last.mask.any(axis=1)
        assert pad.sum() == 16 - rows % 16 and pad[-1] and not pad[0]
        vocab = len(corpus[2])  # padding rows and slots hold V, never a word's id
        assert np.all(last.centres[pad] == vocab) and np.all(last.contexts[pad] == vocab)
        for it in items:
            assert np.all(it.batch.contexts[it.batch.mask == 0] == vocab)
        dropped = collect(corpus=corpus, layout=layout, batch_size=16, drop_remainder=True)
        assert len(dropped) == len(items) - 1
        assert dropped[-1].position == (1, 0, 0, 0)


def test_batches_per_epoch_pads_or_truncates():
    corpus = make_corpus()
    natural = len(collect(corpus=corpus, layout="grouped"))
    longer = collect(corpus=corpus, layout="grouped", batches_per_epoch=natural + 3, epochs=2)
    assert len(longer) == 2 * (natural + 3)
    assert not longer[natural + 1].batch.mask.any() and longer[natural + 2].position[:2] == (1, 0)
    filler = longer[natural + 1].batch
    assert np.all(filler.centres == len(corpus[2])) and np.all(filler.contexts == len(corpus[2]))
    shorter = collect(corpus=corpus, layout="grouped", batches_per_epoch=2, epochs=2)
    assert [it.position[:2] for it in shorter] == [(0, 1), (1, 0), (1, 1), (2, 0)]


def test_shard_batch_shapes():
    batch = input_pipeline.Batch(
        np.arange(8, dtype=np.int32), np.zeros((8, 6), np.int32), np.ones((8, 6), np.float32)
    )
    sharded = input_pipeline.shard_batch(batch, 4)
    assert sharded.centres.shape == (4, 2) and sharded.contexts.shape == (4, 2, 6)
    assert sharded.mask.shape == (4, 2, 6)
    np.testing.assert_array_equal(sharded.centres[1], [2, 3])
    with pytest.raises(ValueError):
        input_pipeline.shard_batch(batch, 3)


def _naive_share(offsets, max_length, p, count):
    """Piece boundaries of share p: split every sentence into pieces, then give each piece
    to the process whose token range [p·N/P, (p + 1)·N/P) holds its start."""
    pieces = windows.split_sentences(offsets, max_length)
    n = int(offsets[-1])
    starts = pieces[:-1]
    mine = (starts >= n * p // count) & (starts < n * (p + 1) // count)
    if not mine.any():
        return None
    first, last = np.flatnonzero(mine)[[0, -1]]
    return pieces[first : last + 2]


@pytest.mark.parametrize("max_length", [1, 7, 30, 10_000])
def test_shares_match_a_naive_split_and_are_balanced(max_length):
    _, offsets, _ = make_corpus(sentences=100)
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 40, size=60)  # some sentences empty
    ragged = np.concatenate([[0], np.cumsum(lengths)])
    for offs in (offsets, ragged, np.array([0, 1000])):  # the last: one long line
        for count in (1, 2, 3, 7):
            cut = windows.split_sentences(offs, max_length)  # as a loaded corpus is cut
            shares = [windows.share_sentences(cut, p, count) for p in range(count)]
            for p, share in enumerate(shares):
                naive = _naive_share(offs, max_length, p, count)
                if naive is None:
                    assert share[0] == share[-1]  # an empty share
                else:
                    np.testing.assert_array_equal(share, naive)
            assert shares[0][0] == 0 and shares[-1][-1] == offs[-1]
            assert all(a[-1] == b[0] for a, b in itertools.pairwise(shares))
            tokens = [int(s[-1] - s[0]) for s in shares]
            longest = min(max_length, int(np.diff(offs).max()))  # a piece is not cut
            assert max(tokens) - min(tokens) <= 2 * longest
    with pytest.raises(ValueError):
        windows.share_sentences(offsets, 3, 3)


def test_a_share_reads_only_its_tokens():
    ids, offsets, counts = make_corpus(sentences=100)
    for p in range(3):
        share = windows.share_sentences(offsets, p, 3)
        poisoned = np.full_like(ids, -1)  # anything read outside the share is -1
        poisoned[share[0] : share[-1]] = ids[share[0] : share[-1]]
        items = collect(
            corpus=(poisoned, offsets, counts), layout="grouped", process_index=p, process_count=3
        )
        centres, contexts, _ = real_rows(items)
        assert centres.min() >= 0 and contexts.min() >= 0


def _share_options(**fields) -> input_pipeline.PipelineOptions:
    """Grouped rows, window 3, sample 1e-2, seed 1, 2 epochs: what `collect` draws."""
    return input_pipeline.PipelineOptions(
        layout="grouped", rows_per_call=16, window=3, sample=1e-2, dynamic_window=True,
        left_only=False, shuffle_buffer=0, prefetch=0, seed=1,
        epochs=2, **fields,
    )  # fmt: skip


def test_shares_agree_on_tokens_and_rows():
    corpus = make_corpus(sentences=100)
    ids, offsets, counts = corpus
    options = _share_options(process_count=3)
    expected = [
        input_pipeline.share_rows(options._replace(process_index=p), ids, offsets, counts)
        for p in range(3)
    ]
    whole = input_pipeline.expected_rows_per_epoch(options, counts)
    assert sum(expected) == pytest.approx(whole, rel=1e-9)
    for p in range(3):  # the expectation is close to what a share yields
        kw = dict(corpus=corpus, layout="grouped", sample=1e-2, process_index=p, process_count=3)
        actual = len(real_rows(collect(**kw))[0])
        assert actual == pytest.approx(expected[p], rel=0.15)
    # With a fixed number of batches and the corpus's tokens, every share reports the
    # same progress after each batch: the same learning rate everywhere.
    kw = dict(corpus=corpus, layout="grouped", batch_size=16, epochs=2, batches_per_epoch=5)
    kw["epoch_tokens"] = len(ids)
    runs = [collect(process_index=p, process_count=3, **kw) for p in range(3)]
    assert [len(r) for r in runs] == [10, 10, 10]
    tokens = [[it.tokens for it in r] for r in runs]
    assert tokens[0] == tokens[1] == tokens[2] and tokens[0][4] == len(ids)
    assert tokens[0][-1] == 2 * len(ids)


def test_position_at_a_fraction_of_the_share():
    corpus = make_corpus(sentences=200)
    ids, offsets, counts = corpus
    options = _share_options(process_index=1, process_count=2, batches_per_epoch=40)
    at = input_pipeline.position_at(options, ids, offsets, counts, 1, 0.5)
    assert at.epoch == 1 and at.batch == 20 and at.row == 0
    plan = windows.make_plan(ids, offsets, counts, window=3, sample=1e-2, seed=1,
                             process_index=1, process_count=2)  # fmt: skip
    first = plan.pieces[plan.bounds[at.chunk]] - plan.pieces[0]
    assert first >= 0.5 * plan.tokens
    assert (
        at.chunk == 0 or plan.pieces[plan.bounds[at.chunk - 1]] - plan.pieces[0] < 0.5 * plan.tokens
    )


def test_processes_together_see_the_whole_corpus():
    corpus = make_corpus(sentences=100)
    kw = dict(corpus=corpus, layout="pairs", dynamic_window=False)
    whole = real_rows(collect(**kw))
    parts = [real_rows(collect(process_index=p, process_count=3, **kw)) for p in range(3)]
    assert pair_list(whole) == sorted(sum((pair_list(p) for p in parts), []))
    ranges = [
        input_pipeline.share_range(corpus[1], process_index=p, process_count=3) for p in range(3)
    ]
    per_process = [hi - lo for lo, hi in ranges]
    assert sum(per_process) == len(corpus[0])
    last = collect(process_index=1, process_count=3, **kw)[-1]
    assert last.tokens == per_process[1]


def test_prefetch_yields_the_same_sequence():
    corpus = make_corpus()
    items = collect(corpus=corpus, layout="grouped", epochs=2)
    source = input_pipeline.iterate_batches(
        *corpus,
        layout="grouped",
        batch_size=7,
        window=3,
        sample=0.0,
        seed=1,
        epochs=2,
        chunk_tokens=50,
    )
    fetched = list(prefetch.prefetch(source, size=3))
    assert [it.position for it in fetched] == [it.position for it in items]
    for x, y in zip(items, fetched, strict=True):
        np.testing.assert_array_equal(x.batch.contexts, y.batch.contexts)


def test_prefetch_propagates_exceptions():
    def failing():
        yield 1
        yield 2
        raise KeyError("boom")

    it = prefetch.prefetch(failing())
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(KeyError, match="boom"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_prefetch_close_stops_the_thread():
    closed = threading.Event()

    def endless():
        try:
            yield from itertools.count()
        finally:
            closed.set()

    before = threading.active_count()
    with prefetch.prefetch(endless(), size=2) as it:
        assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert closed.wait(2.0)
    deadline = time.time() + 2.0
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_rejects_bad_arguments():
    corpus = make_corpus()
    with pytest.raises(ValueError):
        collect(corpus=corpus, layout="cbow")
    with pytest.raises(ValueError):
        collect(corpus=(corpus[0], corpus[1][:-1], corpus[2]), layout="pairs")
    with pytest.raises(ValueError):
        collect(corpus=(corpus[0], corpus[1], corpus[2][:5]), layout="pairs")
