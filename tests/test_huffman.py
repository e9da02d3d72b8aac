"""Tests for w2v_jax.model.huffman: optimality, tree structure and word2vec C's conventions."""

import heapq

import numpy as np
import pytest

from w2v_jax.model import huffman


def huffman_cost(counts) -> int:
    """The optimal sum_w count_w * length_w: the sum of all merge weights (heapq)."""
    heap = [int(c) for c in counts]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


def word2vec_c_tree(sorted_counts) -> tuple[list, list]:
    """A line-by-line port of word2vec.c's CreateBinaryTree (counts sorted descending)."""
    vocab_size = len(sorted_counts)
    count = [int(c) for c in sorted_counts] + [int(1e15)] * (vocab_size - 1)
    binary = [0] * (2 * vocab_size - 1)
    parent_node = [0] * (2 * vocab_size - 1)
    pos1, pos2 = vocab_size - 1, vocab_size
    for a in range(vocab_size - 1):
        if pos1 >= 0 and count[pos1] < count[pos2]:
            min1i, pos1 = pos1, pos1 - 1
        else:
            min1i, pos2 = pos2, pos2 + 1
        if pos1 >= 0 and count[pos1] < count[pos2]:
            min2i, pos1 = pos1, pos1 - 1
        else:
            min2i, pos2 = pos2, pos2 + 1
        count[vocab_size + a] = count[min1i] + count[min2i]
        parent_node[min1i] = vocab_size + a
        parent_node[min2i] = vocab_size + a
        binary[min2i] = 1
    codes, points = [], []
    for a in range(vocab_size):
        b, code, point = a, [], []
        while True:
            code.append(binary[b])
            point.append(b)
            b = parent_node[b]
            if b == vocab_size * 2 - 2:
                break
        i = len(code)
        vocab_code, vocab_point = [0] * i, [0] * (i + 1)
        vocab_point[0] = vocab_size - 2
        for b in range(i):
            vocab_code[i - b - 1] = code[b]
            vocab_point[i - b] = point[b] - vocab_size
        codes.append(vocab_code)
        points.append(vocab_point[:i])  # vocab_point[i] is the leaf itself, unused
    return codes, points


def paths(tree: huffman.HuffmanTree) -> list[tuple[tuple[int, int], ...]]:
    """Each word's root-first path as a tuple of (point, code) pairs."""
    return [
        tuple(zip(tree.points[w, :n].tolist(), tree.codes[w, :n].tolist(), strict=True))
        for w, n in enumerate(tree.lengths)
    ]


def _zipf(num, seed=0):
    rng = np.random.default_rng(seed)
    return rng.permutation(np.floor(1e5 / np.arange(1, num + 1) ** 1.1).astype(np.int64) + 1)


COUNT_CASES = {
    "v2": np.array([5, 3]),
    "v2_tie": np.array([4, 4]),
    "v3": np.array([1, 2, 3]),
    "equal8": np.full(8, 7),
    "with_zeros": np.array([0, 5, 0, 1, 9, 0, 2]),
    "fibonacci": np.array([1, 1, 2, 3, 5, 8, 13, 21, 34, 55]),
    "random_ties": np.random.default_rng(1).integers(1, 6, size=200),
    "zipf": _zipf(1000),
}


@pytest.fixture(params=list(COUNT_CASES), scope="module")
def counts_and_tree(request):
    counts = COUNT_CASES[request.param]
    return counts, huffman.build_huffman(counts)


def test_layout_dtypes_and_padding(counts_and_tree):
    counts, tree = counts_and_tree
    num = counts.shape[0]
    depth = int(tree.lengths.max())
    assert tree.codes.shape == tree.points.shape == tree.mask.shape == (num, depth)
    assert tree.codes.dtype == np.int8 and tree.points.dtype == np.int32
    assert tree.mask.dtype == np.float32 and tree.lengths.dtype == np.int32
    assert np.all(tree.lengths >= 1)
    np.testing.assert_array_equal(tree.mask.sum(axis=1), tree.lengths)
    valid = np.arange(depth)[None, :] < tree.lengths[:, None]
    np.testing.assert_array_equal(tree.mask, valid.astype(np.float32))
    # padding: code 0, mask 0 and point V - 1, one past the inner nodes (never node 0)
    assert np.all(tree.codes[~valid] == 0) and np.all(tree.points[~valid] == num - 1)
    assert np.all(np.isin(tree.codes[valid], [0, 1]))


def test_optimal_weighted_code_length(counts_and_tree):
    counts, tree = counts_and_tree
    assert int(np.dot(counts, tree.lengths)) == huffman_cost(counts)


def test_matches_word2vec_c(counts_and_tree):
    counts, tree = counts_and_tree
    order = np.argsort(-counts, kind="stable")  # the documented tie-break: by id
    codes, points = word2vec_c_tree(counts[order])
    for position, word in enumerate(order):
        n = tree.lengths[word]
        assert tree.codes[word, :n].tolist() == codes[position]
        assert tree.points[word, :n].tolist() == points[position]


def test_is_a_full_binary_tree_with_a_common_root(counts_and_tree):
    counts, tree = counts_and_tree
    num = counts.shape[0]
    assert np.all(tree.points[:, 0] == num - 2)  # every path starts at the root
    word_paths = paths(tree)
    assert len(set(word_paths)) == num
    # Prefix-free: in sorted order a path that prefixes any other prefixes its successor.
    ordered = sorted(word_paths)
    for a, b in zip(ordered[:-1], ordered[1:], strict=True):
        assert b[: len(a)] != a, f"{a} is a prefix of {b}"
    # Each branch (point, code) leads to one place: the same next inner node on every
    # path through it, or a single leaf. So the (point, code) pairs identify the leaf.
    child = {}
    for word, path in enumerate(word_paths):
        for (point, code), step in zip(path, [*path[1:], None], strict=True):
            target = ("leaf", word) if step is None else ("node", step[0])
            assert child.setdefault((point, code), target) == target
    # Every inner node 0..V-2 is used, with both branches: 2(V-1) edges for V leaves.
    assert set(child) == {(p, c) for p in range(num - 1) for c in (0, 1)}
    assert sorted(w for kind, w in child.values() if kind == "leaf") == list(range(num))


def test_code_one_is_the_heavier_branch(counts_and_tree):
    counts, tree = counts_and_tree
    weight = {}
    for word, path in enumerate(paths(tree)):
        for edge in path:
            weight[edge] = weight.get(edge, 0) + int(counts[word])
    for point in range(counts.shape[0] - 1):
        assert weight[(point, 1)] >= weight[(point, 0)]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_leaf_probabilities_sum_to_one(counts_and_tree):
    counts, tree = counts_and_tree
    rng = np.random.default_rng(0)
    num, dim = counts.shape[0], 8
    node_embed = rng.normal(size=(num - 1, dim))  # [V-1, D]
    h = rng.normal(size=(dim,))  # [D]
    padded = np.concatenate([node_embed, np.zeros((1, dim))])  # point V - 1 (padding) reads 0
    scores = padded[tree.points] @ h  # [V, L]
    signs = 1.0 - 2.0 * tree.codes  # [V, L]: code 0 takes sigmoid(x), code 1 sigmoid(-x)
    log_p = np.sum(tree.mask * np.log(sigmoid(signs * scores)), axis=1)  # [V]
    np.testing.assert_allclose(np.exp(log_p).sum(), 1.0, rtol=1e-12)


def test_two_words():
    tree = huffman.build_huffman([5, 3])
    np.testing.assert_array_equal(tree.codes, [[1], [0]])  # the rarer word takes code 0
    np.testing.assert_array_equal(tree.points, [[0], [0]])
    np.testing.assert_array_equal(tree.lengths, [1, 1])
    np.testing.assert_array_equal(tree.mask, [[1.0], [1.0]])


def test_ties_are_deterministic_and_balanced():
    first, second = huffman.build_huffman(np.full(16, 3)), huffman.build_huffman(np.full(16, 3))
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.lengths, np.full(16, 4))


def test_float_counts():
    tree = huffman.build_huffman(np.array([0.5, 2.5, 1.0]))
    np.testing.assert_array_equal(tree.lengths, [2, 1, 2])


@pytest.mark.parametrize(
    ("counts", "error", "match"),
    [
        ([], ValueError, "at least 2 words"),
        ([7], ValueError, "at least 2 words"),
        ([3, -1, 2], ValueError, "counts must be non-negative"),
        ([[1, 2], [3, 4]], ValueError, "counts must have rank 1"),
        ([1.0, np.nan], ValueError, "counts must be finite"),
        (["a", "b"], TypeError, "counts must be integer or float"),
    ],
)
def test_rejects_bad_input(counts, error, match):
    with pytest.raises(error, match=match):
        huffman.build_huffman(counts)
