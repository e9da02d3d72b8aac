"""The trainer's periodic evaluation: what can be measured on the current parameters.

Always: the held-out loss under the training objective (fixed negatives, so successive
evaluations are comparable). On English corpora: analogy accuracy and word-similarity
correlations of the input vectors, when the evaluation files are found.
Every key is prefixed ``eval/``.
"""

from __future__ import annotations

import functools
import os
import pathlib

import jax
import numpy as np
from absl import logging

from w2v_jax import data, evaluate, keyed_vectors, train

_KEYS = ("analogy/total", "analogy/semantic", "analogy/syntactic", "analogy/coverage")


def _default_file(name: str) -> str:
    root = os.environ.get("W2V_DATA_DIR", "")
    path = pathlib.Path(root) / name
    return str(path) if root and path.is_file() else ""


class Evaluator:
    """Built once per run; call it with host parameters to get ``eval/*`` metrics."""

    def __init__(self, dataset: data.Data, config, cfg: train.StepConfig, aux):
        self.config, self.cfg, self.aux = config, cfg, aux
        self.dataset = dataset
        self.batches = []
        if dataset.heldout is not None and len(dataset.heldout.ids) > 1:
            self.batches = data.heldout_batches(
                config, dataset.heldout, config.eval.heldout_batches
            )
        self.loss_fn = jax.jit(functools.partial(train.eval_loss, cfg=cfg))
        self.analogies = self.similarity = None
        if dataset.english:
            self.analogies = config.eval.analogies or _default_file("questions-words.txt")
            self.similarity = [p for p in config.eval.similarity.split(",") if p] or [
                p for p in [_default_file("wordsim353.tsv")] if p
            ]

    def heldout_loss(self, params) -> dict:
        if not self.batches:
            return {}
        key = jax.random.PRNGKey(12345)  # the same negatives at every evaluation
        total = count = 0.0
        for i, batch in enumerate(self.batches):
            t, c = self.loss_fn(params, batch, self.aux, jax.random.fold_in(key, i))
            total, count = total + float(t), count + float(c)
        return {"eval/heldout_loss": total / max(count, 1.0)}

    def vectors(self, params) -> dict:
        if not (self.analogies or self.similarity):
            return {}
        kv = keyed_vectors.create(
            self.dataset.train.vocab.words, np.asarray(params["in_embed"], np.float32)
        )
        try:
            metrics = evaluate.evaluate_vectors(
                kv,
                analogies_path=self.analogies or None,
                similarity_paths=self.similarity,
                restrict_vocab=self.config.eval.restrict_vocab,
            )
        except (OSError, ValueError) as e:  # a broken evaluation file must not stop training
            logging.warning("vector evaluation skipped: %s", e)
            return {}
        keep = {k: v for k, v in metrics.items() if k in _KEYS or k.endswith("/spearman")}
        return {f"eval/{k}": v for k, v in keep.items() if v is not None}

    def __call__(self, params) -> dict:
        return {**self.heldout_loss(params), **self.vectors(params)}
