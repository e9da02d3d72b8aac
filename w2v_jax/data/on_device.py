"""The host pipeline's sampling, in JAX on the device: the one module of `data/` not in NumPy.

The encoded corpus lives on the device (`DeviceCorpus`). Once per epoch `subsample` draws
word2vec's frequent-word subsampling and compacts the kept words (`Epoch`); every step then
gathers its rows from that epoch with `batch_at`, drawing its dynamic windows from
``fold_in(key, step)``. A jitted call of S sub-steps therefore needs nothing from the host but
learning rates, and the batch of a step is a pure function of (data key, step): a run resumes
exactly from its step counter, which implies the epoch.

It reproduces the distribution of `input_pipeline.iterate_batches` (layout "grouped"):

* subsampling before windowing: a token of word w is kept with `windows.keep_probabilities`,
  one float32 uniform per token per epoch, and window distances count kept words;
* each centre's effective window b is uniform in 1..W (``dynamic_window``), else W;
* windows never cross a sentence (the corpus's, cut to ``corpus.max_sentence_length``
  when it was loaded);
* every epoch visits each kept centre about once: exactly T·B/M times in expectation.

Differences from the host, none of which changes the distribution of (centre, context)
pairs: a kept centre without any valid context is a row with an all-zero mask (padding, no
loss) instead of no row, and an epoch is exactly T = round(E[M] / B) steps (`make_spec`),
not the ceil of its own kept count, so a step is always 1/T of an epoch.

Row order: B streams. Step t of epoch e takes, in stream b, the kept word at position
(o_e + floor(b·M/B) + t) mod M, with o_e a random offset drawn per epoch. The B rows of a step
are therefore M/B kept words apart, so two rows of one step share a window only when
B > M / (2W), while a per-epoch permutation would put neighbouring windows into the same
step by chance (about B²·(2W + 1)/M overlapping pairs of rows per step); and each stream
walks the text in order, like one of word2vec C's threads starting at ``file_size·id /
threads``. The random offset makes the coverage unbiased: for every (b, t) the position is
uniform over the M kept words, so each kept word is visited T·B/M times in expectation
whatever the stream boundaries.

Typical use (what `trainer` does in ``input.mode='device'``)::

  corpus = on_device.make_corpus(ids, offsets, counts, sample=1e-3)  # device arrays
  spec = on_device.make_spec(ids, counts, sample=1e-3, batch_size=B, window=5)
  for call in on_device.calls(corpus, key, spec, start=step, stop=epochs * T, steps_per_call=S):
      state, metrics = run(state, call.feed, aux, lrs, call.num_steps)  # `runners.call_steps`

The negatives come from the noise table of the step's ``aux`` (on the device already),
drawn by `update.train_step` from ``fold_in(state.key, step)``. Device memory is about
40·N bytes at its peak (`device_bytes`); `check_fits` refuses a corpus that would not fit
with one line that names ``input.mode='host'``.

Padding, as on the host (`input_pipeline.Batch`): an empty slot holds the id V (so does
the centre of a step of an epoch that kept nothing). Index arithmetic is int32 and exact up
to N = 2^31 − 2 tokens (`make_corpus` refuses more; `row_positions`, `context_positions`).

Shape letters: N tokens, V vocabulary, M kept tokens of an epoch (dynamic, ≤ N), B rows per
step, W window, C context slots (2W, or W when left-only), T steps per epoch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from w2v_jax import errors
from w2v_jax.data import input_pipeline, windows
from w2v_jax.parallel import budget

_EPOCH_STREAM = 0  # fold_in(key, this) then fold_in(·, epoch): subsampling and offset
_STEP_STREAM = 1  # fold_in(key, this) then fold_in(·, step): the step's windows
_DATA_STREAM = 0x5EED_DA7A  # data_key(seed) = fold_in(PRNGKey(seed), this)


class DeviceCorpus(NamedTuple):
    """The corpus as device arrays (a pytree; pass it to jitted functions as an argument)."""

    ids: jax.Array  # int32 [N] token ids, OOV removed
    sentence: jax.Array  # int32 [N] index of each token's sentence piece, non-decreasing
    keep_prob: jax.Array  # float32 [V] subsampling keep probabilities (1 where no sample)


class Epoch(NamedTuple):
    """One epoch's subsampled corpus, compacted: the kept words first, in corpus order."""

    index: jax.Array  # int32 [] the epoch
    ids: jax.Array  # int32 [N] ids of the M kept tokens, then V (padding)
    sentence: jax.Array  # int32 [N] their sentence pieces, then -1 (matches no centre)
    num_kept: jax.Array  # int32 [] M
    offset: jax.Array  # int32 [] o, the streams' random start, in [0, max(M, 1))


class Feed(NamedTuple):
    """What a jitted call of steps reads: the data key and the epochs its steps fall in."""

    key: jax.Array  # uint32 [2] the data key (`data_key`)
    first: Epoch  # the epoch of the call's first step
    last: Epoch  # the epoch of its last step (the same arrays when it stays in one epoch)


@dataclasses.dataclass(frozen=True)
class Spec:
    """Static shape of the device batches (hashable: a jit static argument)."""

    batch_size: int  # B rows per step
    window: int  # W, the maximum window
    steps_per_epoch: int  # T
    vocab_size: int  # V: the id of a padding slot and of a padding row's centre
    dynamic_window: bool = True  # b uniform in 1..W per centre (word2vec); else b = W
    left_only: bool = False  # contexts are only the previous words (C = W)

    @property
    def slots(self) -> int:
        """C, the context slots of a row."""
        return self.window if self.left_only else 2 * self.window


def data_key(seed: int) -> jax.Array:
    """The data stream's key for a run seed (apart from the parameters' and negatives')."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), _DATA_STREAM)


def make_corpus(
    ids: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    *,
    sample: float,
) -> DeviceCorpus:
    """Puts a corpus on the default device.

    Args:
        ids: int[N] token ids; offsets: int[S + 1] sentence bounds; counts: int[V] the
            vocabulary counts that set the keep probabilities (as `iterate_batches`).
        sample: subsampling threshold t (0 keeps every word).
    """
    plan = windows.make_plan(ids, offsets, counts, window=1, sample=sample, seed=0)
    if plan.ids.shape[0] >= 2**31 - 1:
        raise errors.ConfigError(
            f"input.mode='device' indexes tokens with int32: {plan.ids.shape[0]:,} tokens "
            f"reach its limit of {2**31 - 2:,}; use input.mode='host'"
        )
    keep_prob = plan.keep_prob
    if keep_prob is None:
        keep_prob = np.ones(len(counts), np.float32)
    sentence = np.repeat(np.arange(plan.pieces.shape[0] - 1, dtype=np.int32), np.diff(plan.pieces))
    return DeviceCorpus(*jax.device_put((plan.ids, sentence, keep_prob)))


def expected_kept(ids: np.ndarray, counts: np.ndarray, sample: float) -> float:
    """E[M]: the expected number of kept tokens of an epoch, in float64 on the host."""
    keep_prob = windows.keep_probabilities(counts, sample).astype(np.float32)
    per_word = np.bincount(np.asarray(ids), minlength=len(counts)).astype(np.float64)
    return float(per_word @ keep_prob.astype(np.float64))


def make_spec(
    ids: np.ndarray,
    counts: np.ndarray,
    *,
    sample: float,
    batch_size: int,
    window: int,
    dynamic_window: bool = True,
    left_only: bool = False,
) -> Spec:
    """The batches' `Spec`, with T = round(E[M] / B) steps per epoch (at least 1) and
    V = len(counts)."""
    if batch_size < 1 or window < 1:
        raise ValueError(f"need batch_size, window >= 1; got {batch_size}, {window}")
    steps = max(1, round(expected_kept(ids, counts, sample) / batch_size))
    return Spec(batch_size, window, steps, len(counts), dynamic_window, left_only)


def subsample(corpus: DeviceCorpus, key: jax.Array, epoch) -> Epoch:
    """Draws an epoch's subsampling and compacts the kept words, on the device (jittable).

    Token i is kept when a float32 uniform u_i < keep_prob[ids[i]], as `windows.draw`. The
    cost is O(N) once per epoch; ``jnp.nonzero`` with a static size keeps the shapes fixed.

    Args:
        corpus: the `DeviceCorpus`.
        key: the data key (`data_key`).
        epoch: int32 [] the epoch (may be traced).
    """
    epoch = jnp.asarray(epoch, jnp.int32)
    keep_key, offset_key = jax.random.split(
        jax.random.fold_in(jax.random.fold_in(key, _EPOCH_STREAM), epoch)
    )
    n = corpus.ids.shape[0]
    u = jax.random.uniform(keep_key, (n,), jnp.float32)  # [N]
    keep = u < corpus.keep_prob[corpus.ids]  # [N]
    (where,) = jnp.nonzero(keep, size=n, fill_value=0)  # [N]
    num = jnp.sum(keep, dtype=jnp.int32)
    real = jnp.arange(n, dtype=jnp.int32) < num  # [N]
    ids = jnp.where(real, corpus.ids[where], corpus.keep_prob.shape[0])  # V after the kept
    sentence = jnp.where(real, corpus.sentence[where], -1)
    offset = jax.random.randint(offset_key, (), 0, jnp.maximum(num, 1), dtype=jnp.int32)
    return Epoch(epoch, ids, sentence, num, offset)


_subsample = jax.jit(subsample)


def add_mod(a, b, m):
    """(a + b) mod m for 0 <= a, b < m, in int32 with no intermediate above m.

    a + b itself would wrap past 2^31 − 1 once m > 2^30; this subtracts m − b instead.
    """
    return a - jnp.where(a >= m - b, m - b, -b)


def scaled_floor(b, m, n: int):
    """floor(b·m / n) for 0 <= b < n and 0 <= m < 2^31, exact in int32 (jittable).

    b·m overflows int32 (and float32 rounds it), so this is b·(m // n) + floor(b·r / n)
    with r = m mod n. For n <= 2^16 the second term is one uint32 product (b·r < 2^32);
    beyond, binary long multiplication over the bits of b, whose every intermediate stays
    below n or below the result, for any static n < 2^31.

    Args:
        b: int32 [...] the row indices, in [0, n).
        m: int32 [] the numerator's scale (M kept tokens).
        n: the static divisor (B rows).
    """
    b, m = jnp.asarray(b, jnp.int32), jnp.asarray(m, jnp.int32)
    r = m % n
    if n <= 1 << 16:  # b·r < n² <= 2^32: one exact uint32 product (every batch size used)
        product = b.astype(jnp.uint32) * r.astype(jnp.uint32)
        return b * (m // n) + (product // jnp.uint32(n)).astype(jnp.int32)
    quotient = jnp.zeros_like(b)  # invariant: quotient·n + rest = (b's bits so far)·r
    rest = jnp.zeros_like(b)
    for bit in reversed(range(max(n - 1, 1).bit_length())):
        wrap = rest >= n - rest  # double
        rest = rest - jnp.where(wrap, n - rest, -rest)
        quotient = 2 * quotient + wrap
        add = jnp.where((b >> bit) & 1 == 1, r, 0)  # then add r where the bit is set
        wrap = rest >= n - add
        rest = rest - jnp.where(wrap, n - add, -add)
        quotient = quotient + wrap
    return b * (m // n) + quotient


def row_positions(step, num_kept, offset, steps_per_epoch: int, batch_size: int) -> jax.Array:
    """int32 [B] positions of a step's centres in its epoch's kept words (jittable).

    Row b takes (o + floor(b·M/B) + step mod T) mod M, exactly for any M < 2^31 and
    B < 2^31 (`scaled_floor`, `add_mod`); M = 0 gives position 0 (a padding row).

    Args:
        step: int32 [] the global step; num_kept: int32 [] M; offset: int32 [] o in
            [0, max(M, 1)); steps_per_epoch: T; batch_size: B.
    """
    step = jnp.asarray(step, jnp.int32)
    size = jnp.maximum(jnp.asarray(num_kept, jnp.int32), 1)
    rows = jnp.arange(batch_size, dtype=jnp.int32)  # [B]
    starts = scaled_floor(rows, size, batch_size)  # [B] in [0, M)
    first_row = add_mod(jnp.asarray(offset, jnp.int32), (step % steps_per_epoch) % size, size)
    return add_mod(first_row, starts, size)


def context_positions(centre, distance, n: int) -> tuple[jax.Array, jax.Array]:
    """(positions, inside): centre + distance where that lies in [0, n), else the centre.

    Decided before adding, so nothing passes 2^31 − 1 for a centre near it. Broadcasts
    centre [B, 1] and distance [1, C] to [B, C]; ``inside`` is bool.
    """
    inside = (distance >= -centre) & (distance <= (n - 1) - centre)
    return centre + jnp.where(inside, distance, 0), inside


def _slot_offsets(spec: Spec) -> np.ndarray:
    """int32 [C] signed distance of each slot: -1..-W (left), then +1..+W (right)."""
    left = -np.arange(1, spec.window + 1, dtype=np.int32)
    return left if spec.left_only else np.concatenate([left, -left])


def batch_at(feed: Feed, step, spec: Spec) -> input_pipeline.Batch:
    """The batch of global step ``step``: B rows of C slots, fixed shape (jittable).

    The step's epoch (step // T) must be ``feed.first`` or ``feed.last``. Row b is the kept
    word at (o + floor(b·M/B) + step % T) mod M of that epoch; its window b_r is drawn from
    ``fold_in(fold_in(key, 1), step)``; slot k < W holds the kept word k + 1 to the left,
    slot W + k the word k + 1 to the right, valid when within b_r and in the same sentence.

    Returns:
        `input_pipeline.Batch`: centres int32 [B], contexts int32 [B, C] (V where invalid),
        mask float32 [B, C]. No slot is the centre itself; a row with no valid slot is
        padding (its centre is still the kept word, or V when the epoch kept nothing).
    """
    step = jnp.asarray(step, jnp.int32)
    t_epoch = spec.steps_per_epoch
    in_first = feed.first.index == step // t_epoch  # [] bool

    def pick(a, b):
        return jnp.where(in_first, a, b)

    num = pick(feed.first.num_kept, feed.last.num_kept)
    offset = pick(feed.first.offset, feed.last.offset)
    centre = row_positions(step, num, offset, t_epoch, spec.batch_size)  # [B]
    distance = jnp.asarray(_slot_offsets(spec))  # [C]
    n = feed.first.ids.shape[0]
    around = jnp.concatenate([jnp.zeros(1, jnp.int32), distance])  # [1 + C], the centre first
    where, inside = context_positions(centre[:, None], around[None, :], n)  # [B, 1 + C]
    ids = pick(feed.first.ids[where], feed.last.ids[where])  # [B, 1 + C]
    sentence = pick(feed.first.sentence[where], feed.last.sentence[where])
    span_key = jax.random.fold_in(jax.random.fold_in(feed.key, _STEP_STREAM), step)
    if spec.dynamic_window:
        span = jax.random.randint(span_key, (spec.batch_size,), 1, spec.window + 1)  # [B]
    else:
        span = jnp.full((spec.batch_size,), spec.window, jnp.int32)
    centre_sentence = sentence[:, :1]  # [B, 1]; -1 only when the epoch kept nothing
    valid = (
        inside[:, 1:]
        & (sentence[:, 1:] == centre_sentence)
        & (centre_sentence >= 0)
        & (jnp.abs(distance)[None, :] <= span[:, None])
    )  # [B, C]
    contexts = jnp.where(valid, ids[:, 1:], spec.vocab_size)
    return input_pipeline.Batch(ids[:, 0], contexts, valid.astype(jnp.float32))


def draw_batch(corpus: DeviceCorpus, key: jax.Array, step, spec: Spec) -> input_pipeline.Batch:
    """`batch_at` of one step straight from the corpus (jittable; subsamples its epoch).

    Pure in (corpus, key, step): for tests and one-off draws. Training reuses an epoch's
    `subsample` across its steps (`feed_for_call`).
    """
    epoch = subsample(corpus, key, jnp.asarray(step, jnp.int32) // spec.steps_per_epoch)
    return batch_at(Feed(key, epoch, epoch), step, spec)


def feed_for_call(
    corpus: DeviceCorpus,
    key: jax.Array,
    step: int,
    num_steps: int,
    spec: Spec,
    cache: dict[int, Epoch] | None = None,
) -> tuple[Feed, dict[int, Epoch]]:
    """The `Feed` of a call running steps [step, step + num_steps), on the host.

    Subsamples the epochs those steps fall in, reusing those of ``cache`` (epoch → `Epoch`,
    as returned by the previous call); at most two epochs are held, so the device keeps at
    most two compacted copies of the corpus.

    Returns:
        (feed, the new cache to pass to the next call).
    """
    t_epoch = spec.steps_per_epoch
    if not 1 <= num_steps <= t_epoch:
        raise ValueError(f"a call of {num_steps} steps must lie in 1..T={t_epoch} steps")
    cache = cache or {}
    first, last = step // t_epoch, (step + num_steps - 1) // t_epoch
    epochs = {e: cache[e] if e in cache else _subsample(corpus, key, e) for e in (first, last)}
    return Feed(key, epochs[first], epochs[last]), epochs


class Call(NamedTuple):
    """One jitted call of a run: its feed and the steps it runs."""

    feed: Feed
    first_step: int  # the global step of its first sub-step
    num_steps: int  # S sub-steps; fewer in a run's last call


def calls(
    corpus: DeviceCorpus,
    key: jax.Array,
    spec: Spec,
    *,
    start: int,
    stop: int,
    steps_per_call: int,
) -> Iterator[Call]:
    """The calls of steps [start, stop), ``steps_per_call`` steps each (the last may be
    shorter), with their feeds; resuming at ``start`` reproduces a run's later batches."""
    cache = None
    for first in range(start, stop, steps_per_call):
        num = min(steps_per_call, stop - first)
        feed, cache = feed_for_call(corpus, key, first, num, spec, cache)
        yield Call(feed, first, num)


def tokens_done(step: int, num_tokens: int, spec: Spec) -> int:
    """Raw corpus tokens consumed after ``step`` steps, exactly ``step·N // T``.

    Each step is 1/T of an epoch of N raw tokens (the definition of the device epoch), so
    this is what `input_pipeline.Item.tokens` counts, computed on the host without reading
    anything back: word2vec's learning-rate decay uses tokens_done / (epochs·N).
    """
    return int(step) * int(num_tokens) // spec.steps_per_epoch  # Python ints: never wraps


def device_bytes(num_tokens: int, vocab_size: int) -> int:
    """Device memory the pipeline needs at its peak, in bytes: about 40·N + 4·V.

    The corpus (ids and sentence pieces, 8N), two compacted epochs (16N) and the temporaries
    of `subsample` (uniforms, gathered keep probabilities, mask, positions: about 16N), plus
    the keep probabilities (4V). The noise table belongs to the step's ``aux``.
    """
    return 40 * int(num_tokens) + 4 * int(vocab_size)


def check_fits(
    num_tokens: int,
    vocab_size: int,
    *,
    reserved_bytes: int = 0,
    cap_bytes: int = 0,
    device=None,
) -> int:
    """Raises a one-line ValueError when the device pipeline would not fit; else its bytes.

    Args:
        num_tokens, vocab_size: N and V of the corpus.
        reserved_bytes: what else must live on the device (tables, optimiser state).
        cap_bytes: the memory to assume (> 0 overrides the device's own figure, which is
            ``memory_stats()`` where the backend gives it, else the host's available memory).
        device: the device (default the first).
    """
    device = device or jax.devices()[0]
    need = device_bytes(num_tokens, vocab_size)
    free, source = budget.free_bytes(device, cap_bytes)
    if free is not None and need + reserved_bytes > free:
        raise errors.ResourceError(
            f"input.mode='device': the corpus of {num_tokens:,} tokens needs "
            f"~{need / 2**30:.2f} GiB on {device.platform} beside "
            f"{reserved_bytes / 2**30:.2f} GiB of tables, but {free / 2**30:.2f} GiB is free "
            f"({source}); use input.mode='host'"
        )
    return need
