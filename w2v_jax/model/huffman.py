"""The Huffman tree of hierarchical softmax, built on the host as padded NumPy arrays.

Each word w has a path of ``lengths[w]`` inner nodes from the root down to its leaf.
At depth l the path visits inner node ``points[w, l]`` (a row of the ``node_embed[V-1, D]``
table) and takes branch ``codes[w, l]``; the hierarchical-softmax loss is

  -sum_l mask[w, l] * log sigmoid((1 - 2 * codes[w, l]) * h . node_embed[points[w, l]])

so code 0 is the branch with probability sigmoid(x), as in word2vec C (Mikolov et al.,
2013) and gensim. Arrays are padded to L = max code length, so the device sees fixed
shapes; padded slots have code 0, mask 0 and point V - 1, one past the inner nodes, so a
gather of ``node_embed`` there reads zeros (``mode="fill"``) and a scatter drops it
(``mode="drop"``) instead of piling onto node 0.

Shape letters: V vocabulary size, L maximum code length (tree depth).
"""

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from absl import logging

from w2v_jax.model import sampling


class HuffmanTree(NamedTuple):
    """word2vec's ``codes``/``points`` for every word, padded to the tree depth L."""

    codes: np.ndarray  # int8 [V, L], 0/1: the branch taken at each node, root first
    points: np.ndarray  # int32 [V, L], inner-node ids in [0, V-2], root (V-2) first; V-1 pads
    mask: np.ndarray  # float32 [V, L], 1 on the lengths[w] valid slots, 0 on padding
    lengths: np.ndarray  # int32 [V], code length of each word, in [1, L]


def _merge(sorted_counts: list) -> tuple[list, list]:
    """word2vec C's two-queue Huffman merge on counts sorted in descending order.

    Nodes 0..V-1 are the leaves (in sorted order), node V + a is the a-th merge, so the
    root is 2V - 2. The leaf queue is read from its smallest end, the queue of merged
    nodes in creation order (their weights never decrease), so each merge is O(1). On a
    tie the merged node is taken before the leaf, as in word2vec C.

    Returns:
      parent: [2V - 1] list, parent node of each node (-1 for the root).
      binary: [2V - 1] list, 1 if the node was the second (heavier) child of its merge.
    """
    num = len(sorted_counts)
    weight = sorted_counts + [None] * (num - 1)
    parent = [-1] * (2 * num - 1)
    binary = [0] * (2 * num - 1)
    leaf, inner = num - 1, num  # next leaf (smallest remaining), next merged node
    for a in range(num, 2 * num - 1):
        children = []
        for _ in range(2):
            if leaf >= 0 and (inner == a or weight[leaf] < weight[inner]):
                children.append(leaf)
                leaf -= 1
            else:
                children.append(inner)
                inner += 1
        first, second = children
        weight[a] = weight[first] + weight[second]
        parent[first] = a
        parent[second] = a
        binary[second] = 1
    return parent, binary


def _depths(parent: np.ndarray, root: int) -> np.ndarray:
    """Depth of every node below the root, by pointer doubling: O(V log L), vectorised."""
    ancestor = np.where(parent < 0, root, parent)  # the root is its own ancestor
    hops = (parent >= 0).astype(np.int64)  # invariant: hops[n] = distance n -> ancestor[n]
    while np.any(ancestor != root):
        hops = hops + hops[ancestor]
        ancestor = ancestor[ancestor]
    return hops


def build_huffman(counts: npt.ArrayLike) -> HuffmanTree:
    """Builds word2vec's Huffman tree for hierarchical softmax.

    Words are sorted by descending count (ties by ascending id, so the tree is
    deterministic) and merged with word2vec C's two-queue method: O(V log V) for the
    sort, then O(V) in a Python loop; paths are read off level by level in O(V L)
    NumPy (its build time at V = 1M: docs/performance.md). The code lengths are optimal:
    sum_w counts[w] * lengths[w] is the minimum over all binary trees. The arrays are
    [V, L]: integer counts from N tokens bound L by about 1.44 log2(N), but adversarial
    (Fibonacci-like) counts make L ~ V.

    Args:
      counts: [V] non-negative word counts (int or float), V >= 2. Indexed by word id;
        need not be sorted.

    Returns:
      A :class:`HuffmanTree`; row w of each array belongs to word id w. Inner nodes are
      numbered 0..V-2 in merge order, so the root is V - 2 and ``points[w, 0] == V - 2``
      for every w. Slots past a word's length hold point V - 1 (no inner node), code 0
      and mask 0.

    Raises:
      ValueError: counts of wrong rank, fewer than 2 words, negative or non-finite.
      TypeError: non-numeric counts.

    References:
      Huffman, "A method for the construction of minimum-redundancy codes", 1952.
      Morin and Bengio, "Hierarchical probabilistic neural network language model", 2005.
      Mikolov et al., "Distributed representations of words and phrases and their
      compositionality", NeurIPS 2013 (word2vec C, ``CreateBinaryTree``).
    """
    counts = sampling.as_counts(counts, min_words=2, purpose=" for a Huffman tree", positive=False)
    num = counts.shape[0]
    order = np.argsort(-counts, kind="stable")  # [V] word id at each sorted position
    parent, binary = _merge(counts[order].tolist())
    parent = np.asarray(parent, dtype=np.int64)  # [2V - 1]
    binary = np.asarray(binary, dtype=np.int8)  # [2V - 1]
    root = 2 * num - 2
    depth = _depths(parent, root)  # [2V - 1], 0 at the root
    lengths = depth[:num].astype(np.int32)  # [V] per sorted leaf
    max_length = int(lengths.max())

    # Walk all leaves up to the root together. The edge into node n sits at slot
    # depth[n] - 1 of the root-first path, so each step writes straight to its slot,
    # in the row of the leaf's word id.
    codes = np.zeros((num, max_length), dtype=np.int8)
    points = np.full((num, max_length), num - 1, dtype=np.int32)  # V - 1: padding
    flat_codes, flat_points = codes.reshape(-1), points.reshape(-1)
    row = order.astype(np.int64) * max_length  # [active] flat offset of each word's row
    node = np.arange(num)  # [active] current node of each walking leaf
    while node.size:
        slot = row + depth[node] - 1
        flat_codes[slot] = binary[node]
        flat_points[slot] = parent[node] - num
        node = parent[node]
        walking = node != root
        row, node = row[walking], node[walking]

    word_lengths = np.empty(num, dtype=np.int32)
    word_lengths[order] = lengths
    mask = (np.arange(max_length)[None, :] < word_lengths[:, None]).astype(np.float32)
    total = counts.sum()
    mean_length = float(np.dot(counts, word_lengths) / total) if total > 0 else float("nan")
    logging.info(
        "Huffman tree: V=%d, depth L=%d, count-weighted code length %.2f",
        num,
        max_length,
        mean_length,
    )
    return HuffmanTree(codes=codes, points=points, mask=mask, lengths=word_lengths)
