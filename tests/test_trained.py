"""A finished run as a Flax NNX module (`w2v_jax.load`, `w2v_jax.run.trained`).

The loaded module's tables equal what the run exported (``vectors.bin`` bit for bit,
``vectors.txt`` to its printed digits, ``vocab.tsv``'s order) and what its checkpoint holds
(read back another way), for a one-device run, a hierarchical
softmax run and a run sharded over 2 simulated devices; it trains inside a downstream
Flax model; a folder without a finished run is one line.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import w2v_jax
from w2v_jax import errors, run_folder, settings, trainer
from w2v_jax.checkpoint import store
from w2v_jax.configs import default, tiny
from w2v_jax.data import vocab
from w2v_jax.evaluation import keyed_vectors
from w2v_jax.model import output_layers
from w2v_jax.run import trained
from w2v_jax.step import update

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _checkpoint_params(run_dir: pathlib.Path, devices: int = 1) -> dict:
    """The run's checkpointed parameters, read back another way than `trained.load`: by
    `run_folder.load_run` on one device, else by `store.load` on a template of tiny's."""
    if devices == 1:
        return run_folder.load_run(run_dir).state.params
    config = tiny.get_config()
    template = jax.eval_shape(
        lambda: update.init_state(
            jax.random.PRNGKey(0), 60, config.dim, settings.step_config(config)
        )
    )
    return store.load(store.folder_in(run_dir), template)[0].params


def _assert_loads_the_run(
    run_dir: pathlib.Path, devices: int = 1, summed: bool = False
) -> trained.Word2Vec:
    """``summed``: the run exported input + output vectors (``config.vectors``)."""
    module = w2v_jax.load(run_dir)
    assert isinstance(module, nnx.Module) and isinstance(module.embed, nnx.Embed)
    binary = keyed_vectors.load_word2vec(run_dir / "vectors.bin")
    text = keyed_vectors.load_word2vec(run_dir / "vectors.txt")
    assert module.vocab == vocab.Vocab.load(run_dir / "vocab.tsv").words == binary.words
    assert text.words == module.vocab
    embedding = np.asarray(module.embed.embedding[...])
    np.testing.assert_array_equal(embedding, binary.vectors)
    np.testing.assert_allclose(embedding, text.vectors, rtol=1e-5, atol=1e-6)
    ids = jnp.array([3, 0, 3])
    np.testing.assert_array_equal(module(ids), binary.vectors[[3, 0, 3]])
    params = _checkpoint_params(run_dir, devices)
    np.testing.assert_array_equal(module.inputs.embedding[...], params["in_embed"])
    if module.loss == "hs":  # no output word vectors: the input vectors are exported
        assert module.output is None and module.output_bias is None
        np.testing.assert_array_equal(module.nodes.embedding[...], params["node_embed"])
        np.testing.assert_array_equal(embedding, params["in_embed"])
    else:
        assert module.nodes is None
        np.testing.assert_array_equal(module.output.embedding[...], params["out_embed"])
        summed_vectors = params["in_embed"] + params["out_embed"]  # float32, as exported
        np.testing.assert_array_equal(embedding, summed_vectors if summed else params["in_embed"])
        if "out_bias" in params:
            np.testing.assert_array_equal(module.output_bias[...], params["out_bias"])
    return module


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["neg", "hs"])
def test_load_gives_the_exported_vectors_and_the_output_layer(tmp_path, loss):
    config = tiny.get_config()
    config.max_steps, config.loss.name = 20, loss
    config.loss.use_bias = loss == "neg"
    config.vectors = "input+output"  # tiny's is word2vec's "input"; hs has no output words
    trainer.train_and_evaluate(config, str(tmp_path))
    module = _assert_loads_the_run(tmp_path, summed=loss == "neg")
    if loss == "neg":
        assert module.output_bias is not None and module.output_bias.shape == (60,)
        assert np.abs(module.output.embedding[...]).max() > 0  # trained, not the zero init


@pytest.mark.slow
def test_load_gives_a_sharded_runs_vectors(tmp_path):
    """Trained on 2 simulated devices with the tables sharded along V: the checkpoint is
    written in pieces, and loads whole."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    flags = [
        "--config.parallel.mode=mesh", "--config.parallel.model_axis=2",
        "--config.parallel.shard_vocab=True", "--config.max_steps=20",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "w2v_jax.main", "--config=w2v_jax/configs/tiny.py",
         f"--workdir={tmp_path}", *flags],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    pieces = sorted(p.name for p in (tmp_path / "checkpoint").glob("step_*/leaf_*.npy"))
    assert any(".0-30." in name for name in pieces), pieces  # a table in halves along V
    _assert_loads_the_run(tmp_path, devices=2)


def test_a_folder_without_a_finished_run_is_one_line(tmp_path):
    with pytest.raises(errors.RunFolderError, match="is not a w2v_jax run folder"):
        w2v_jax.load(tmp_path)
    (tmp_path / run_folder.CONFIG).write_text(tiny.get_config().to_json())
    with pytest.raises(errors.RunFolderError, match=r"no exported vectors.*export=False$"):
        w2v_jax.load(tmp_path)


def test_the_loaded_embedding_trains_inside_a_downstream_model():
    """A classifier over the loaded `nnx.Embed`: one optimiser step moves exactly the rows
    of the words in the batch, and the tables it was not given stay as loaded."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(10, 4)).astype(np.float32)
    words = tuple(f"w{i}" for i in range(10))
    module = trained.Word2Vec(words, "neg", vectors, output=vectors[::-1])

    class Classifier(nnx.Module):
        def __init__(self, embed: nnx.Embed):
            self.embed, self.head = embed, nnx.Linear(4, 2, rngs=nnx.Rngs(1))

        def __call__(self, ids):
            return self.head(self.embed(ids))

    model = Classifier(module.embed)
    optimizer = nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, ids, labels):
        def loss(model):
            logits = model(ids)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value

    step(model, optimizer, jnp.array([1, 2, 2]), jnp.array([0, 1, 1]))
    after = np.asarray(module.embed.embedding[...])  # the module shares the layer
    assert np.flatnonzero(np.any(after != vectors, axis=1)).tolist() == [1, 2]
    np.testing.assert_array_equal(module.output.embedding[...], vectors[::-1])
    assert jax.tree_util.tree_leaves(nnx.state(module.output))


def test_config_vectors_of_a_run_before_it_and_a_bad_value(tmp_path):
    """A run folder written before ``config.vectors`` existed exported its input vectors:
    it reads back as "input" although today's default sums; a bad value is one line."""
    stored = default.get_config().to_dict()
    assert stored.pop("vectors") == "input+output"
    (tmp_path / run_folder.CONFIG).write_text(json.dumps(stored))
    assert run_folder.read_config(tmp_path).vectors == "input"
    (tmp_path / run_folder.CONFIG).write_text(default.get_config().to_json())
    assert run_folder.read_config(tmp_path).vectors == "input+output"
    config = default.get_config()
    config.vectors = "output"
    with pytest.raises(errors.ConfigError, match=r"^--config.vectors='output' is not allowed"):
        settings.validate(config)


def test_word_vectors_sum_the_output_words_and_skip_the_tree():
    rng = np.random.default_rng(0)
    params = {k: rng.normal(size=(5, 3)).astype(np.float32) for k in ("in_embed", "out_embed")}
    params["node_embed"] = params["out_embed"][:4]
    got = output_layers.word_vectors(params, "neg", "input+output")
    np.testing.assert_array_equal(got, params["in_embed"] + params["out_embed"])
    for loss, vectors in [("neg", "input"), ("hs", "input+output")]:
        got = output_layers.word_vectors(params, loss, vectors)
        np.testing.assert_array_equal(got, params["in_embed"])
