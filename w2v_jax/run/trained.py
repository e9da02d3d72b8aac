"""A finished run as a Flax NNX module: ``w2v_jax.load(run_dir)`` (docs/evaluation.md,
"In a Flax model").

Shape letters: V vocabulary size, D embedding dim.

`load` returns a `Word2Vec` module whose ``embed`` (`nnx.Embed` [V, D]) holds the run's
exported word vectors (``vectors.bin``: input plus output vectors by default, the input
vectors with ``config.vectors="input"``) in the order of ``vocab``, ready to be the
embedding layer of a downstream Flax model. The model's own tables come from the run's
final checkpoint, which holds the same step: ``inputs`` (`nnx.Embed` [V, D], ``in_embed``),
``output`` (`nnx.Embed` [V, D]; ``output.attend(h)`` gives the scores h·u_w [..., V]) and
``output_bias`` (`nnx.Param` [V]); for hierarchical softmax ``nodes`` (`nnx.Embed`
[V-1, D], indexed by node, word2vec's ``points``) and no ``output``. Without a checkpoint
only the exported vectors load (with a warning). The training step itself stays on plain
pytrees (docs/architecture.md says why).
"""

from __future__ import annotations

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from w2v_jax import errors, run_folder
from w2v_jax.checkpoint import store
from w2v_jax.data import vocab as vocab_lib
from w2v_jax.evaluation import keyed_vectors
from w2v_jax.model import output_layers


def _embed(table: np.ndarray) -> nnx.Embed:
    """An `nnx.Embed` holding ``table`` [N, D] (float32)."""
    table = np.asarray(table, np.float32)
    return nnx.Embed(
        *table.shape,
        embedding_init=lambda key, shape, dtype: jnp.asarray(table, dtype),
        rngs=nnx.Rngs(0),  # unused: the table is given
    )


class Word2Vec(nnx.Module):
    """A trained word2vec model's tables (see the module doc).

    Attributes:
      vocab: [V] the words, most frequent first; word id = position.
      loss: the run's ``loss.name`` (which output layer the tables belong to).
      embed: `nnx.Embed` [V, D], the exported word vectors.
      inputs: `nnx.Embed` [V, D], the input vectors (None without a checkpoint).
      output: `nnx.Embed` [V, D], the output vectors (None for ``hs`` or without them).
      output_bias: `nnx.Param` [V] (None unless the run trained biases).
      nodes: `nnx.Embed` [V-1, D], hierarchical softmax's inner nodes (None otherwise).
    """

    def __init__(
        self,
        vocab: tuple[str, ...],
        loss: str,
        vectors: np.ndarray,
        inputs: np.ndarray | None = None,
        output: np.ndarray | None = None,
        output_bias: np.ndarray | None = None,
        nodes: np.ndarray | None = None,
    ):
        if np.shape(vectors)[0] != len(vocab):
            raise ValueError(f"{len(vocab)} words but {np.shape(vectors)[0]} vectors")
        self.vocab = tuple(vocab)
        self.loss = loss
        self.embed = _embed(vectors)
        self.inputs = None if inputs is None else _embed(inputs)
        self.output = None if output is None else _embed(output)
        self.output_bias = None if output_bias is None else nnx.Param(jnp.asarray(output_bias))
        self.nodes = None if nodes is None else _embed(nodes)

    def __call__(self, ids: jax.Array) -> jax.Array:
        """The word vectors [..., D] of word ids [...]."""
        return self.embed(ids)


def load(run_dir: str | os.PathLike) -> Word2Vec:
    """The finished run in ``run_dir`` as a `Word2Vec` NNX module.

    Raises:
      errors.RunFolderError: ``run_dir`` is not a run folder, or its run has no exported
        vectors (not finished, or ``config.export=False``), or its checkpoint does not
        hold the exported vectors' step (one line each).
    """
    run_dir = pathlib.Path(run_dir)
    config = run_folder.read_config(run_dir)  # one line if it is not a run folder
    vectors_path, vocab_path = run_dir / run_folder.EXPORTS[1], run_dir / run_folder.EXPORTS[2]
    if not (vectors_path.is_file() and vocab_path.is_file()):
        raise errors.RunFolderError(
            f"{run_dir} has no exported vectors ({vectors_path.name}, {vocab_path.name}): "
            "its run has not finished (rerun its command to finish it) or ran with "
            "--config.export=False"
        )
    kv = keyed_vectors.load_word2vec(vectors_path, binary=True)
    words = vocab_lib.Vocab.load(vocab_path).words
    if tuple(kv.words) != tuple(words):
        raise errors.RunFolderError(
            f"{run_dir}: {vectors_path.name} and {vocab_path.name} list other words; "
            "rerun the run's command to export them again"
        )
    layer = output_layers.get(config.loss.name)
    params = _final_params(run_dir, config, len(words), kv.vectors)
    if params is None:
        return Word2Vec(words, layer.name, kv.vectors)
    table = np.asarray(params[layer.table])
    return Word2Vec(
        words,
        layer.name,
        kv.vectors,
        inputs=np.asarray(params["in_embed"]),
        output=None if layer.tree else table,
        output_bias=params.get("out_bias"),
        nodes=table if layer.tree else None,
    )


def _final_params(run_dir: pathlib.Path, config, vocab_size: int, exported) -> dict | None:
    """The parameters of the run's newest committed checkpoint (host arrays), checked to
    hold the exported vectors; None when the checkpoint is gone."""
    found = store.latest(store.folder_in(run_dir))
    if found is None:
        logging.warning("%s holds no checkpoint: loading the exported vectors only", run_dir)
        return None
    template = run_folder.state_template(config, vocab_size)
    params = store.read(found, store.read_meta(found), template).params
    words = output_layers.word_vectors(params, config.loss.name, config.vectors)
    if not np.array_equal(words, exported):
        raise errors.RunFolderError(
            f"{found} is not the step its exported vectors were written at (the run went "
            "on after its export?); rerun the run's command to export them again"
        )
    return params
