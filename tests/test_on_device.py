"""Tests of the on-device input pipeline against the host pipeline and exact references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from conftest import cpu_bitwise

from w2v_jax.data import input_pipeline, on_device, windows

V = 25


def zipf_corpus(seed=0, sentences=150, max_length=40, vocab=V):
    """~3,000 Zipf-ish ids in sentences of 1..max_length tokens; counts from the ids."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_length + 1, size=sentences)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    p = 1.0 / np.arange(1, vocab + 1)
    ids = rng.choice(vocab, size=offsets[-1], p=p / p.sum()).astype(np.int32)
    counts = np.maximum(np.bincount(ids, minlength=vocab), 1).astype(np.int64)
    return ids, offsets, counts


def unique_corpus(seed=0, sentences=60, max_length=12):
    """Every token its own word (id = position), so a batch reveals its positions; some
    sentences are empty or one word long. Equal counts: one keep probability."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, max_length + 1, size=sentences)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.arange(offsets[-1], dtype=np.int32)
    return ids, offsets, np.full(ids.shape[0], 10, np.int64)


def unique_sample(corpus):
    """The threshold t that keeps each word of `unique_corpus` with probability ~0.69:
    keep = sqrt(x) + x with x = t·(total count) / count = t·N."""
    return 0.22 / corpus[0].size


def epoch_batches(corpus, key, epoch, spec):
    """Every batch of one epoch, through `feed_for_call` and `batch_at` (the training path),
    stacked on a leading step axis [T, ...]."""
    t_epoch = spec.steps_per_epoch
    feed, _ = on_device.feed_for_call(corpus, key, epoch * t_epoch, t_epoch, spec)
    steps = jnp.arange(epoch * t_epoch, (epoch + 1) * t_epoch)
    return jax.device_get(_draw_steps(feed, steps, spec)), jax.device_get(feed.first)


@jax.jit(static_argnums=2)
def _draw_steps(feed, steps, spec):
    return jax.vmap(lambda s: on_device.batch_at(feed, s, spec))(steps)


def pair_counts(centres, contexts, mask, vocab):
    """[V, V] counts of the valid (centre, context) slots of batches of any leading shape."""
    valid = mask > 0
    c = np.broadcast_to(centres[..., None], valid.shape)
    return np.bincount(c[valid] * vocab + contexts[valid], minlength=vocab * vocab).reshape(
        vocab, vocab
    )


def homogeneity(a, b, p_value=1e-6):
    """Two-sample chi-square statistic over the cells both totals expect >= 5 counts in,
    and the (1 - p_value) quantile of its null distribution.

    The counts are sums of Bernoulli draws over a fixed corpus, so their variance is at most
    Poisson's: the statistic can only be smaller than the chi-square it is compared with,
    and a one-in-a-million threshold cannot flake. A wrong pipeline (e.g. windows over raw
    positions instead of kept words) gives several times the threshold here.
    """
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    pooled = (a + b) / (a.sum() + b.sum())
    cells = pooled * min(a.sum(), b.sum()) >= 5
    stat = 0.0
    for x in (a, b):
        expected = x.sum() * pooled[cells]
        stat += np.sum((x[cells] - expected) ** 2 / expected)
    df = int(cells.sum()) - 1
    assert df >= 2, "too few populated cells to test"
    return stat, scipy.stats.chi2.isf(p_value, df)


def host_batches(corpus, *, epochs, **kwargs):
    """Concatenated centres, contexts and mask of the host pipeline's batches, and the
    number of valid slots (pairs) of each epoch."""
    items = input_pipeline.iterate_batches(*corpus, layout="grouped", epochs=epochs, **kwargs)
    batches, pairs, epoch = [], np.zeros(epochs), 0
    for item in items:
        batches.append(item.batch)
        pairs[epoch] += np.count_nonzero(item.batch.mask)
        epoch = item.position.epoch  # the epoch of the next batch
    return tuple(np.concatenate(field) for field in zip(*batches, strict=True)), pairs


@pytest.mark.parametrize(
    "dynamic_window, left_only", [(True, False), (False, True)], ids=["word2vec", "left-fixed"]
)
def test_pair_frequencies_match_the_host_pipeline(dynamic_window, left_only):
    corpus = zipf_corpus()
    settings = dict(window=3, sample=0.02, dynamic_window=dynamic_window, left_only=left_only)
    epochs = 40
    host, host_pairs = host_batches(corpus, epochs=epochs, batch_size=16, seed=3, **settings)
    device_corpus = on_device.make_corpus(*corpus, sample=settings["sample"])
    spec = on_device.make_spec(corpus[0], corpus[2], batch_size=16, **settings)
    key = on_device.data_key(3)
    batches = [epoch_batches(device_corpus, key, e, spec)[0] for e in range(epochs)]
    device = tuple(np.stack(field) for field in zip(*batches, strict=True))

    assert device[1].shape[1:] == (spec.steps_per_epoch, 16, spec.slots)
    stat, limit = homogeneity(pair_counts(*host, V), pair_counts(*device, V))
    assert stat < limit, (stat, limit)
    # Context distance and side: tests the dynamic window b ~ Uniform{1..W}.
    stat, limit = homogeneity((host[2] > 0).sum(0), (device[2] > 0).sum((0, 1, 2)))
    assert stat < limit, (stat, limit)
    # As many pairs per epoch, once the device's T·B rows are scaled to E[M] kept centres;
    # within 4 standard errors of the difference of the two means.
    rows = spec.steps_per_epoch * spec.batch_size
    scale = on_device.expected_kept(corpus[0], corpus[2], settings["sample"]) / rows
    device_pairs = (device[2] > 0).sum((1, 2, 3)) * scale
    error = 4 * np.sqrt((device_pairs.var() + host_pairs.var()) / epochs)
    assert abs(device_pairs.mean() - host_pairs.mean()) < error


def test_kept_word_frequencies_match_the_host_pipeline():
    corpus = zipf_corpus(seed=1)
    sample, epochs, batch = 0.02, 60, 16
    plan = windows.make_plan(*corpus, window=3, sample=sample, seed=5)
    host = sum(
        np.bincount(corpus[0][windows.epoch_draws(plan, e).keep], minlength=V)
        for e in range(epochs)
    )
    device_corpus = on_device.make_corpus(*corpus, sample=sample)
    spec = on_device.make_spec(corpus[0], corpus[2], sample=sample, batch_size=batch, window=3)
    key = on_device.data_key(5)
    kept, centres = np.zeros(V, np.int64), np.zeros(V, np.int64)
    for e in range(epochs):
        batches, epoch = epoch_batches(device_corpus, key, e, spec)
        kept += np.bincount(epoch.ids[: epoch.num_kept], minlength=V)
        centres += np.bincount(batches.centres.ravel(), minlength=V)
    stat, limit = homogeneity(host, kept)
    assert stat < limit, (stat, limit)
    # Rows visit kept words in proportion (every row a kept centre, each about once).
    stat, limit = homogeneity(host, centres)
    assert stat < limit, (stat, limit)
    expected = on_device.expected_kept(corpus[0], corpus[2], sample)
    assert abs(kept.sum() / epochs - expected) < 4 * np.sqrt(expected / epochs)
    assert spec.steps_per_epoch == round(expected / batch)


@pytest.mark.parametrize("left_only", [False, True])
def test_every_pair_is_a_kept_neighbour_in_the_same_sentence(left_only):
    """Exact: on a corpus of unique words, each row's valid slots are its nearest kept
    neighbours in the centre's sentence, on the right side, within one common window b."""
    corpus = unique_corpus()
    ids, offsets, counts = corpus
    window, batch = 3, 8
    device_corpus = on_device.make_corpus(ids, offsets, counts, sample=unique_sample(corpus))
    spec = on_device.make_spec(
        ids,
        counts,
        sample=unique_sample(corpus),
        batch_size=batch,
        window=window,
        left_only=left_only,
    )
    sentence = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    key = on_device.data_key(0)
    checked = 0
    for e in range(4):
        batches, epoch = epoch_batches(device_corpus, key, e, spec)
        kept = epoch.ids[: epoch.num_kept]  # raw positions, in order
        assert 0 < kept.size < ids.size and np.all(np.diff(kept) > 0)
        index = np.full(ids.size, -1)
        index[kept] = np.arange(kept.size)
        centres = batches.centres.ravel()
        contexts = batches.contexts.reshape(-1, spec.slots)
        mask = batches.mask.reshape(-1, spec.slots)
        assert np.all(index[centres] >= 0), "a centre was not kept"
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert np.all(contexts[mask == 0] == spec.vocab_size), "padding slots must hold id V"
        for centre, row, valid in zip(centres, contexts, mask > 0, strict=True):
            i = index[centre]
            same = sentence[kept] == sentence[centre]
            left = [kept[i - d] for d in range(1, window + 1) if i - d >= 0 and same[i - d]]
            right = [kept[i + d] for d in range(1, window + 1) if i + d < kept.size and same[i + d]]
            n_left = int(valid[:window].sum())
            assert np.all(valid[:n_left]) and list(row[:n_left]) == left[:n_left]
            spans = {b for b in range(1, window + 1) if n_left == min(b, len(left))}
            if not left_only:
                n_right = int(valid[window:].sum())
                assert np.all(valid[window : window + n_right])
                assert list(row[window : window + n_right]) == right[:n_right]
                spans &= {b for b in range(1, window + 1) if n_right == min(b, len(right))}
            assert spans, "no single window b explains the row"
            assert centre not in row[valid], "a centre paired with itself"
            checked += int(valid.sum())
    assert checked > 1000


def test_an_epoch_visits_each_kept_word_about_once():
    corpus = unique_corpus(seed=2, sentences=300)
    ids, offsets, counts = corpus
    device_corpus = on_device.make_corpus(ids, offsets, counts, sample=unique_sample(corpus))
    spec = on_device.make_spec(ids, counts, sample=unique_sample(corpus), batch_size=8, window=2)
    key = on_device.data_key(1)
    for e in range(3):
        batches, epoch = epoch_batches(device_corpus, key, e, spec)
        visits = np.bincount(batches.centres.ravel(), minlength=ids.size)
        kept, rows = int(epoch.num_kept), spec.steps_per_epoch * spec.batch_size
        assert visits.max() <= 2
        assert np.count_nonzero(visits) >= min(kept, rows) - spec.batch_size
        # Rows of one step are M/B kept words apart: no two share a window.
        gaps = np.diff(np.sort(batches.centres, axis=1), axis=1)
        assert gaps.min() > 2 * spec.window


def test_same_seed_and_step_give_the_same_batch_and_restarts_continue_identically():
    corpus = zipf_corpus(seed=4)
    sample = 0.02
    device_corpus = on_device.make_corpus(*corpus, sample=sample)
    spec = on_device.make_spec(corpus[0], corpus[2], sample=sample, batch_size=32, window=4)
    t_epoch = spec.steps_per_epoch
    calls = 5  # steps per call: calls straddle epoch boundaries
    assert t_epoch % calls
    draw = jax.jit(on_device.batch_at, static_argnums=2)

    def run(key, start, stop):
        out, cache = {}, None
        for first in range(start, stop, calls):
            feed, cache = on_device.feed_for_call(device_corpus, key, first, calls, spec, cache)
            assert len(cache) <= 2
            for s in range(first, first + calls):
                out[s] = jax.device_get(draw(feed, s, spec))
        return out

    key = on_device.data_key(7)
    full = run(key, 0, 3 * t_epoch)
    resumed = run(key, 2 * calls * (t_epoch // calls) - calls, 3 * t_epoch)
    for s, batch in resumed.items():
        for a, b in zip(batch, full[s], strict=True):
            np.testing.assert_array_equal(a, b)
    # The pure per-step function agrees with the training path, and is deterministic.
    pure = jax.jit(on_device.draw_batch, static_argnums=3)
    for s in (0, t_epoch - 1, t_epoch, 2 * t_epoch + 3):
        again = pure(device_corpus, key, s, spec)
        for a, b, c in zip(full[s], pure(device_corpus, key, s, spec), again, strict=True):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(b, c)
    other = run(on_device.data_key(8), 0, calls)
    assert not np.array_equal(other[0].centres, full[0].centres)
    assert not np.array_equal(full[1].contexts, full[0].contexts)
    # Epochs differ: subsampling is redrawn.
    e0, _ = on_device.feed_for_call(device_corpus, key, 0, 1, spec)
    e1, _ = on_device.feed_for_call(device_corpus, key, t_epoch, 1, spec)
    assert not np.array_equal(e0.first.ids, e1.first.ids)


def test_feed_refuses_calls_longer_than_an_epoch():
    corpus = zipf_corpus()
    device_corpus = on_device.make_corpus(*corpus, sample=0.0)
    spec = on_device.make_spec(corpus[0], corpus[2], sample=0.0, batch_size=1000, window=2)
    assert spec.steps_per_epoch == 3
    with pytest.raises(ValueError, match="1..T=3"):
        on_device.feed_for_call(device_corpus, on_device.data_key(0), 0, 4, spec)


def test_without_subsampling_every_token_is_kept():
    corpus = zipf_corpus()
    device_corpus = on_device.make_corpus(*corpus, sample=0.0)
    epoch = on_device.subsample(device_corpus, on_device.data_key(0), 3)
    assert int(epoch.num_kept) == corpus[0].size
    np.testing.assert_array_equal(epoch.ids, corpus[0])
    assert int(epoch.index) == 3


def test_tokens_done_counts_each_step_as_one_T_th_of_an_epoch():
    spec = on_device.Spec(batch_size=4, window=2, steps_per_epoch=7, vocab_size=10)
    n = 1000
    done = [on_device.tokens_done(s, n, spec) for s in range(3 * 7 + 1)]
    assert done[0] == 0 and done[7] == n and done[21] == 3 * n
    assert np.all(np.diff(done) >= 0)
    assert done == [s * n // 7 for s in range(22)]


def test_a_corpus_too_big_for_the_device_gives_one_line_naming_the_host_mode():
    need = on_device.device_bytes(10_000, 100)
    assert need == 40 * 10_000 + 400
    assert on_device.check_fits(10_000, 100, cap_bytes=need + 1) == need
    with pytest.raises(ValueError, match="input.mode='host'") as err:
        on_device.check_fits(10_000, 100, reserved_bytes=2, cap_bytes=need + 1)
    assert "\n" not in str(err.value) and "10,000 tokens" in str(err.value)


def _device_config(**overrides):
    """The tiny config in device mode, with subsampling, 4 steps per call and dotted
    overrides."""
    from w2v_jax.configs import tiny

    config = tiny.get_config()
    config.update_from_flattened_dict(
        {"input.mode": "device", "sample": 1e-2, "steps_per_call": 4, **overrides}
    )
    return config


# Reruns and resume in device mode: bit for bit on XLA:CPU (`cpu_bitwise`); the twin, on
# any backend, to float32 rounding of scatter-add order over the tiny run's steps.
RERUN_TOLERANCE = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def device_runs(tmp_path_factory):
    """Device mode trained twice (a, b), stopped at 37 and resumed (cut), and host mode (h):
    trained once for the bitwise test and its tolerance twin."""
    from w2v_jax import trainer

    root = tmp_path_factory.mktemp("device_runs")
    results = {
        "a": trainer.train_and_evaluate(_device_config(), str(root / "a")),
        "b": trainer.train_and_evaluate(_device_config(), str(root / "b")),
        "first": trainer.train_and_evaluate(_device_config(max_steps=37), str(root / "cut")),
        "cut": trainer.train_and_evaluate(_device_config(), str(root / "cut")),
        "h": trainer.train_and_evaluate(_device_config(**{"input.mode": "host"}), str(root / "h")),
    }
    return root, results


@cpu_bitwise
@pytest.mark.slow
def test_device_mode_trains_deterministically_and_resumes_bit_exactly(device_runs):
    root, _ = device_runs  # bit equality: XLA:CPU (see RERUN_TOLERANCE)
    vectors = (root / "a/vectors.bin").read_bytes()
    assert (root / "b/vectors.bin").read_bytes() == vectors
    assert (root / "cut/vectors.bin").read_bytes() == vectors


@pytest.mark.slow
def test_device_mode_trains_deterministically_and_resumes_within_tolerance(device_runs):
    from w2v_jax import run_folder
    from w2v_jax.evaluation import keyed_vectors

    root, results = device_runs
    full = results["a"]
    assert results["b"]["step"] == full["step"]
    want = keyed_vectors.load_word2vec(root / "a/vectors.bin")
    for run in ("b", "cut"):
        got = keyed_vectors.load_word2vec(root / f"{run}/vectors.bin")
        assert got.words == want.words
        np.testing.assert_allclose(got.vectors, want.vectors, **RERUN_TOLERANCE, err_msg=run)
    logged = [r for r in run_folder.read_metrics(root / "a") if "train/loss" in r]
    assert logged[-1]["train/loss"] < logged[0]["train/loss"]
    # The last call is shorter: the run ends exactly after `epochs` epochs of T steps,
    # having consumed epochs · N tokens.
    assert full["train/tokens"] == 2 * 6_000
    assert results["first"]["step"] == 40
    assert results["cut"]["step"] == full["step"]
    # Host and device batches are drawn differently but from one distribution: the same
    # held-out loss within 2% (seeds move it by ~0.5%; untrained it is 6 ln 2 = 4.16).
    assert abs(results["h"]["eval/heldout_loss"] - full["eval/heldout_loss"]) < 0.05
    assert full["eval/heldout_loss"] < 3.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"input.mode": "disk"}, r"config.input.mode='disk' is not allowed"),
        ({"layout": "pairs"}, r"needs --config.layout='grouped', got 'pairs'"),
        ({"parallel.mode": "mesh"}, r"needs --config.parallel.mode='single', got 'mesh'"),
        # 1 KiB: not even the tables fit; 100 KiB: the tables do, the corpus beside them not
        ({"input.device_memory_gib": 1e-6}, r"the train state .* \(input.device_memory_gib\)"),
        ({"input.device_memory_gib": 1e-4}, r"is free \(input.device_memory_gib\); use input"),
    ],
)
def test_device_mode_refuses_what_it_cannot_run_in_one_line(tmp_path, overrides, message):
    from w2v_jax import trainer

    with pytest.raises(ValueError, match=message) as err:
        trainer.train_and_evaluate(_device_config(**overrides), str(tmp_path))
    assert "\n" not in str(err.value)


# --- Index arithmetic near 2^31 − 1 (scalars and [B] vectors only, no large arrays) -----

INT32_MAX = 2**31 - 1


@pytest.mark.parametrize("m", [1, 7, 2**30 + 1, INT32_MAX - 1, INT32_MAX])
def test_add_mod_never_wraps(m):
    values = sorted(v for v in {0, 1, m // 2, m - 2, m - 1} if 0 <= v < m)
    a, b = np.meshgrid(values, values)
    got = on_device.add_mod(jnp.asarray(a, jnp.int32), jnp.asarray(b, jnp.int32), jnp.int32(m))
    np.testing.assert_array_equal(np.asarray(got, np.int64), (a.astype(np.int64) + b) % m)


@pytest.mark.parametrize("n", [1, 3, 1000, 46_341, 65_536, 2**20 + 7])
@pytest.mark.parametrize("m", [0, 1, 65_535, 2**30 + 3, INT32_MAX - 1, INT32_MAX])
def test_scaled_floor_is_exact(n, m):
    rng = np.random.default_rng(n + m)
    b = np.unique(np.concatenate([[0, n - 1, n // 2], rng.integers(0, n, 4096)]))
    got = on_device.scaled_floor(jnp.asarray(b, jnp.int32), jnp.int32(m), n)
    np.testing.assert_array_equal(np.asarray(got, np.int64), b.astype(np.int64) * m // n)


def test_scaled_floor_at_the_largest_divisor():
    n = INT32_MAX  # b·r below n² ≈ 2^62: only exact integer steps get this right
    b = np.array([0, 1, 2, n // 3, n - 2, n - 1], np.int64)
    for m in (n - 1, n - 2, 2**30 + 1):
        got = on_device.scaled_floor(jnp.asarray(b, jnp.int32), jnp.int32(m), n)
        assert np.asarray(got, np.int64).tolist() == [int(x) * m // n for x in b]


@pytest.mark.parametrize("batch", [1, 4096, 65_536])
@pytest.mark.parametrize("num_kept", [1, 2**30 + 1, INT32_MAX - 1])
def test_row_positions_match_python_ints_near_the_limit(batch, num_kept):
    steps_per_epoch = max(1, num_kept // batch)
    for step, offset in ((INT32_MAX - 1, num_kept - 1), (steps_per_epoch - 1, num_kept // 2)):
        got = on_device.row_positions(
            jnp.int32(step), jnp.int32(num_kept), jnp.int32(offset), steps_per_epoch, batch
        )
        rows = np.arange(batch, dtype=np.int64)
        want = (offset + rows * num_kept // batch + step % steps_per_epoch) % num_kept
        np.testing.assert_array_equal(np.asarray(got, np.int64), want)


def test_row_positions_of_an_epoch_that_kept_nothing_are_zero():
    got = on_device.row_positions(jnp.int32(5), jnp.int32(0), jnp.int32(0), 3, 8)
    np.testing.assert_array_equal(got, np.zeros(8))


def test_context_positions_stay_inside_without_overflow():
    n = INT32_MAX - 1  # the most tokens `make_corpus` accepts
    centre = np.array([[0], [1], [n - 2], [n - 1]], np.int64)
    distance = np.array([[0, -2, -1, 1, 2]], np.int64)
    where, inside = on_device.context_positions(
        jnp.asarray(centre, jnp.int32), jnp.asarray(distance, jnp.int32), n
    )
    want = centre + distance
    ok = (want >= 0) & (want < n)
    np.testing.assert_array_equal(inside, ok)
    np.testing.assert_array_equal(np.asarray(where, np.int64), np.where(ok, want, centre))


def test_tokens_done_is_exact_for_int32_steps():
    spec = on_device.Spec(batch_size=4, window=2, steps_per_epoch=3, vocab_size=10)
    step, tokens = np.int32(INT32_MAX - 1), INT32_MAX - 1
    assert on_device.tokens_done(step, tokens, spec) == (INT32_MAX - 1) * tokens // 3


def test_a_run_past_the_int32_step_counter_is_refused_in_one_line():
    from w2v_jax import settings
    from w2v_jax.configs import tiny
    from w2v_jax.data import sources

    config = tiny.get_config()
    run = settings.resolve(config)
    train = sources.load(run.corpus).train
    settings.check_against_corpus(run, train)  # ~100 steps per epoch: fine
    config.epochs = 2**25  # x ~100 steps per epoch: past 2^31
    huge = settings.resolve(config)
    with pytest.raises(ValueError, match="int32 step counter") as err:
        settings.check_against_corpus(huge, train)
    assert "\n" not in str(err.value) and "max_steps" in str(err.value)
    config.max_steps = 1000  # the loop stops there: accepted
    settings.check_against_corpus(settings.resolve(config), train)


def test_a_shorter_last_call_runs_its_steps_on_the_same_program():
    """A device-input call of n < S steps (a run's last) is the S-step program run to n:
    one compilation, the state after exactly n steps (each `update.train_step` on its own
    `batch_at`), zeros in the metrics past n."""
    from w2v_jax.model import output_layers
    from w2v_jax.step import runners, update

    corpus = zipf_corpus(seed=3)
    device_corpus = on_device.make_corpus(*corpus, sample=0.02)
    spec = on_device.make_spec(corpus[0], corpus[2], sample=0.02, batch_size=16, window=3)
    cfg = update.StepConfig(model="skipgram", loss="neg", k=3, share="row", optimizer="adagrad")
    aux = output_layers.constants_for("neg", corpus[2])
    key = on_device.data_key(1)
    runner = runners.JitRunner(cfg, steps_per_call=4, device_spec=spec)
    fresh = lambda: update.init_state(jax.random.PRNGKey(0), V, 8, cfg)  # noqa: E731

    feed, _ = on_device.feed_for_call(device_corpus, key, 0, 4, spec)
    state, full = runner.step_call(fresh(), feed, aux, [0.2, 0.2, 0.1, 0.1])
    assert int(state.step) == 4 and full["loss"].shape == (4,)
    short_feed, _ = on_device.feed_for_call(device_corpus, key, 4, 3, spec)
    state, short = runner.step_call(state, short_feed, aux, [0.1, 0.05, 0.05])
    assert runner._call._cache_size() == 1  # the 3-step call compiled nothing new
    assert int(state.step) == 7
    np.testing.assert_array_equal(short["loss"][3:], 0.0)
    assert np.all(np.asarray(short["loss"][:3]) > 0)

    step = jax.jit(update.train_step, static_argnames="cfg")
    expected = fresh()
    for s, lr in enumerate([0.2, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05]):
        batch = on_device.batch_at(feed if s < 4 else short_feed, s, spec)
        expected, metrics = step(expected, batch, aux, lr, cfg=cfg)
        got = (full if s < 4 else short)["loss"][s % 4]
        np.testing.assert_allclose(got, metrics["loss"], rtol=1e-6)
    for name, table in expected.params.items():
        np.testing.assert_allclose(state.params[name], table, rtol=1e-5, atol=1e-7)
