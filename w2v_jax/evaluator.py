"""The trainer's periodic evaluation: what can be measured on the current parameters
(every key prefixed ``eval/``; each one's meaning: docs/evaluation.md).

* held-out text (PTB's valid split, a corpus's held-out slice, the synthetic held-out
  stream), on its first ``heldout_batches`` batches: ``heldout_loss`` (the training
  objective, fixed negatives), the exact ``heldout_nll``/``heldout_ppl`` under the full
  softmax and self-normalisation (``log_z_*``; `likelihood.heldout_nll`);
* the synthetic corpus: ``kl_truth`` and ``corr_true_logp``/``corr_true_pmi``
  (`truth_fit`), or for CBOW beyond one left context ``kl_truth_heldout``;
* English corpora: analogy accuracy and word-similarity correlations of the word vectors
  a run exports (`config.vectors`), when the evaluation files are found.

The PMI-shift and gradient-bias analyses cost more than a periodic evaluation should:
they are library functions for experiments (`analysis`), not metrics here.
"""

from __future__ import annotations

import functools
import os
import pathlib
from typing import NamedTuple

import jax
from absl import logging

from w2v_jax.data import input_pipeline, sources
from w2v_jax.evaluation import evaluate, keyed_vectors, likelihood, precision, truth_fit
from w2v_jax.model import output_layers
from w2v_jax.step import update


def _default_file(name: str) -> str:
    root = os.environ.get("W2V_DATA_DIR", "")
    path = pathlib.Path(root) / name
    return str(path) if root and path.is_file() else ""


class EvalOptions(NamedTuple):
    """What to evaluate besides the held-out text (`settings.resolve` builds it)."""

    analogies: str  # questions-words file; "" = W2V_DATA_DIR's, on English corpora
    similarity: tuple[str, ...]  # word-pair files; () = W2V_DATA_DIR's wordsim353.tsv
    restrict_vocab: int  # analogy cap, as word2vec's compute-accuracy
    heldout_batches: int  # held-out batches for the held-out loss and likelihood
    vectors: str = "input"  # which word vectors are scored and exported (`config.vectors`)


class Evaluator:
    """Built once per run; call it with host parameters to get ``eval/*`` metrics."""

    def __init__(
        self,
        dataset: sources.Data,
        options: EvalOptions,
        pipeline: input_pipeline.PipelineOptions,
        cfg: update.StepConfig,
        aux,
    ):
        self.options, self.cfg, self.aux = options, cfg, aux
        self.dataset = dataset
        self.batches = []
        heldout = dataset.heldout
        if heldout is not None and len(heldout.ids) > 1:
            self.batches = input_pipeline.heldout_batches(
                pipeline, heldout.ids, heldout.offsets, heldout.vocab.counts,
                options.heldout_batches,
            )  # fmt: skip
        # At float32 whatever cfg.matmul_precision trains at: evaluations compare.
        self.loss_fn = jax.jit(precision.full_float32(functools.partial(update.eval_loss, cfg=cfg)))
        self.target = None  # the exact conditional of the synthetic corpus, built once
        self.truth = dataset.truth
        if dataset.truth is not None:
            self.target = truth_fit.true_conditional(
                dataset.truth,
                model=cfg.model,
                window=pipeline.window,
                dynamic=pipeline.dynamic_window,
                left_only=cfg.left_only,
            )
        # Files given in the config are read now: a bad one stops the run before training.
        evaluate.check_files(options.analogies, options.similarity)
        self.analogies = self.similarity = None
        if dataset.word_benchmarks:
            self.analogies = options.analogies or _default_file("questions-words.txt")
            self.similarity = list(options.similarity) or [
                p for p in [_default_file("wordsim353.tsv")] if p
            ]

    def heldout_loss(self, params) -> dict:
        if not self.batches:
            return {}
        key = jax.random.PRNGKey(12345)  # the same negatives at every evaluation
        params, aux = jax.device_put((params, self.aux))  # once, not once per batch
        sums = [
            self.loss_fn(params, batch, aux, jax.random.fold_in(key, i))
            for i, batch in enumerate(self.batches)
        ]
        # Two arrays fetched, [batches] each; summed in batch order in float64, as before.
        totals, counts = jax.device_get(tuple(jax.numpy.stack(x) for x in zip(*sums, strict=True)))
        total = count = 0.0
        for t, c in zip(totals, counts, strict=True):
            total, count = total + float(t), count + float(c)
        return {"eval/heldout_loss": total / max(count, 1.0)}

    def heldout_likelihood(self, params) -> dict:
        if not self.batches:
            return {}
        result = likelihood.heldout_nll(
            params,
            self.batches,
            model=self.cfg.model,
            loss_name=self.cfg.loss,
            cbow_mean=self.cfg.cbow_mean,
            aux=self.aux,
            chunk_size=self.cfg.chunk_size or likelihood.DEFAULT_CHUNK,
        )
        return result.metrics()

    def ground_truth(self, params) -> dict:
        if self.target is not None:
            fit = truth_fit.fit_to_truth(params, self.target, loss_name=self.cfg.loss, aux=self.aux)
            return {
                "eval/kl_truth": fit.kl,
                "eval/corr_true_logp": fit.corr_logp,
                "eval/corr_true_pmi": fit.corr_pmi,
            }
        if self.truth is None or not self.batches:
            return {}
        kl = truth_fit.cbow_kl_heldout(
            params,
            self.batches,
            self.truth,
            loss_name=self.cfg.loss,
            cbow_mean=self.cfg.cbow_mean,
            left_only=self.cfg.left_only,
            aux=self.aux,
            model=self.cfg.model,
        )
        return {"eval/kl_truth_heldout": kl}

    def vectors(self, params) -> dict:
        if not (self.analogies or self.similarity):
            return {}
        words = output_layers.word_vectors(params, self.cfg.loss, self.options.vectors)
        kv = keyed_vectors.create(self.dataset.train.vocab.words, words)
        try:
            metrics = evaluate.evaluate_vectors(
                kv,
                analogies_path=self.analogies or None,
                similarity_paths=self.similarity,
                restrict_vocab=self.options.restrict_vocab,
            )
        except (OSError, ValueError) as e:  # a broken evaluation file must not stop training
            logging.warning("vector evaluation skipped: %s", e)
            return {}
        return {f"eval/{k}": v for k, v in evaluate.headline(metrics).items() if v is not None}

    def __call__(self, params) -> dict:
        # The tables go to the device once per evaluation, for the held-out loss and
        # likelihood; the truth fit and the vector benchmarks read the host copy.
        on_device = jax.device_put(params) if self.batches else params
        return {
            **self.heldout_loss(on_device),
            **self.heldout_likelihood(on_device),
            **self.ground_truth(params),
            **self.vectors(params),
        }
