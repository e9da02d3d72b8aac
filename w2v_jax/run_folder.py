"""A run folder: the one owner of its files, written during a run and read back after.

Files (all written atomically with `files`, except the appended metrics):

  config.json     the config: a new run's once every check passed, a resumed run's once
                  its first checkpoint committed (`write_config`)
  .w2v_jax.json   the marker: what wrote the folder (`run.claim`; a run's lock beside it)
  metrics.jsonl   one JSON object per logged step (`MetricsLog`, `read_metrics`)
  tensorboard/    the same rows as TensorBoard event files, if asked (`run.tensorboard`)
  checkpoint/     the train state's committed steps and their metadata, with the manifest
                  (`checkpoint.store`)
  vectors.txt, vectors.bin, vocab.tsv   the exports at the end (`export`)

What a checkpoint may be resumed by (its manifest) is `resume`'s concern.

The analysis scripts of ``experiments/`` (PMI shift, gradient bias) start from a run
folder read back by `load_run`.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
from typing import NamedTuple

import jax
import ml_collections
import numpy as np
from absl import logging

from w2v_jax import errors, files, settings
from w2v_jax.checkpoint import store
from w2v_jax.configs import default
from w2v_jax.data import sources, vocab
from w2v_jax.evaluation import keyed_vectors
from w2v_jax.model import word2vec
from w2v_jax.run import tensorboard
from w2v_jax.step import update


class Run(NamedTuple):
    config: ml_collections.ConfigDict  # as stored in config.json, over today's defaults
    settings: settings.Settings  # the config, resolved
    data: sources.Data  # the corpus, its held-out text and (synthetic) the truth
    state: update.TrainState  # host arrays, as the last checkpoint saved them


def _merge(base: dict, stored: dict) -> dict:
    out = dict(base)
    for key, value in stored.items():
        nested = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _merge(base[key], value) if nested else value
    return out


# Fields added with a default other than what runs made before them did: their value there.
_ADDED = {"vectors": "input"}  # runs before config.vectors exported their input vectors


def read_config(run_dir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The run's ``config.json`` over today's defaults: a field added since the run was
    made takes its default, which keeps the behaviour the run had (or, for a field whose
    default is not that behaviour, `_ADDED`'s value)."""
    path = pathlib.Path(run_dir) / CONFIG
    if not path.is_file():
        raise errors.RunFolderError(
            f"{run_dir} is not a w2v_jax run folder (no {CONFIG}); pass the --workdir of a run"
        )
    stored = {**_ADDED, **json.loads(path.read_text())}
    return ml_collections.ConfigDict(_merge(default.get_config().to_dict(), stored))


CONFIG = "config.json"
METRICS = "metrics.jsonl"
EXPORTS = ("vectors.txt", "vectors.bin", "vocab.tsv")


def prepare(workdir: str | os.PathLike) -> pathlib.Path:
    """Creates ``workdir`` if needed; one-line `errors.RunFolderError` for an empty name,
    a file, or a folder that cannot be created. Whether it may be written, and by whom,
    is `run.claim`'s to say (its lock is the folder's first write)."""
    if not str(workdir).strip():
        raise errors.RunFolderError(
            "--workdir is empty; pass a folder for the run (new or a run's)"
        )
    workdir = pathlib.Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise errors.RunFolderError(
            f"--workdir={workdir} is a file; pass a folder (new or a run's)"
        )
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        parent = next(p for p in workdir.parents if p.exists())
        raise errors.RunFolderError(
            f"--workdir={workdir} cannot be created: {parent} is a file, not a folder"
        ) from None
    except OSError as e:
        raise errors.RunFolderError(
            f"--workdir={workdir} cannot be created ({e.strerror})"
        ) from None
    return workdir


def not_writable(workdir, error: OSError) -> errors.RunFolderError:
    """The one line for a ``--workdir`` that cannot be written."""
    return errors.RunFolderError(
        f"--workdir={workdir} is not writable ({error.strerror}); pass a folder you can write to"
    )


def write_config(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> None:
    """Writes ``config.json``: the first write of a run, after every check passed."""
    try:
        files.write_atomic(
            pathlib.Path(workdir) / CONFIG, config.to_json_best_effort(indent=2) + "\n"
        )
    except OSError as e:
        raise not_writable(workdir, e) from None


class MetricsLog:
    """Appends one JSON object per logged step to ``metrics.jsonl``.

    On resume, rows written after the checkpoint's step (by the run that was stopped) are
    dropped first, and a last line cut short by a crash, so the file reads as one
    uninterrupted run. ``events=True`` (``config.tensorboard``) writes every row to
    TensorBoard event files as well (`run.tensorboard`); `close` closes them.
    """

    def __init__(self, workdir: str | os.PathLike, resume_step: int = 0, events: bool = False):
        self.path = pathlib.Path(workdir) / METRICS
        if self.path.exists():
            keep = [r for r in files.read_jsonl(self.path) if r.get("step", 0) <= resume_step]
            files.write_jsonl(self.path, keep)
        self.events = tensorboard.Writer(workdir, resume_step) if events else None

    def write(self, step: int, row: dict) -> None:
        files.append_jsonl(self.path, {"step": int(step), **row})
        if self.events is not None:
            self.events.write(step, row)

    def close(self) -> None:
        if self.events is not None:
            self.events.close()


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """The rows of ``workdir/metrics.jsonl`` (a last line cut short is dropped)."""
    return files.read_jsonl(pathlib.Path(workdir) / METRICS)


def export(workdir: str | os.PathLike, v: vocab.Vocab, vectors) -> list[pathlib.Path]:
    """Writes ``vectors.txt``, ``vectors.bin`` (word2vec formats) and ``vocab.tsv``:
    ``vectors`` [V, D] are the run's word vectors (`output_layers.word_vectors`)."""
    workdir = pathlib.Path(workdir)
    vectors = np.asarray(vectors, dtype=np.float32)
    paths = [workdir / name for name in EXPORTS]
    keyed_vectors.save_word2vec_text(paths[0], v.words, vectors)
    keyed_vectors.save_word2vec_binary(paths[1], v.words, vectors)
    v.save(paths[2])
    logging.info("exported %d x %d vectors to %s", *vectors.shape, workdir)
    return paths


_SUMMARY_KEYS = (  # (metric, label, format) of the final summary, when present
    ("train/loss", "train loss", "{:.4f}"),
    ("eval/heldout_loss", "held-out loss", "{:.4f}"),
    ("eval/heldout_ppl", "held-out perplexity", "{:.2f}"),
    ("eval/kl_truth", "KL to the truth", "{:.4f}"),
    ("eval/analogy/total", "analogy", "{:.2%}"),
    ("train/words_per_s", "words/s", "{:,.0f}"),
)


def summary(workdir: str | os.PathLike, result: dict) -> str:
    """A few lines for the end of a run: key metrics, the files, the next command."""
    workdir = pathlib.Path(workdir)
    shown = [
        f"{label} {fmt.format(result[key])}"
        for key, label, fmt in _SUMMARY_KEYS
        if isinstance(result.get(key), (int, float))
    ]
    shown += [
        f"{key.split('/')[-2]} {result[key]:.3f}"
        for key in result
        if key.startswith("eval/similarity/") and key.endswith("/spearman")
        and isinstance(result[key], float)
    ]  # fmt: skip
    lines = [f"run finished at step {result.get('step', '?')}: " + ", ".join(shown)]
    names = [n for n in (*EXPORTS, METRICS, store.FOLDER, CONFIG) if (workdir / n).exists()]
    lines.append(f"files in {workdir}: {', '.join(names)}")
    if (workdir / EXPORTS[1]).exists():
        lines.append(
            "next: python -m w2v_jax.evaluation.evaluate "
            f"--vectors={workdir / EXPORTS[1]} --neighbours=<word> "
            "[--analogies=questions-words.txt] [--similarity=wordsim353.tsv]"
        )
    return "\n".join(lines)


def load_run(run_dir: str | os.PathLike) -> Run:
    """The config, the data (from the corpus cache) and the checkpointed state of a run."""
    config = read_config(run_dir)
    path = store.folder_in(run_dir)
    if store.latest(path) is None:
        raise FileNotFoundError(f"{path} holds no checkpoint; the run has not saved one yet")
    run = settings.resolve(config)
    dataset = sources.load(run.corpus)
    state, _ = store.load(path, state_template(config, len(dataset.train.vocab)))
    return Run(config, run, dataset, state)


def state_template(config, vocab_size: int) -> update.TrainState:
    """The shapes and dtypes of the run's train state (`jax.eval_shape`: no allocation)."""
    ctx = None
    if config.model == "lbl" and config.lbl.context_matrices:
        slots = config.window if config.left_only else 2 * config.window
        kind = config.lbl.context_matrices
        ctx = jax.eval_shape(lambda: word2vec.context_matrices(slots, config.dim, kind))
    init = functools.partial(
        update.init_state,
        jax.random.PRNGKey(0),
        vocab_size,
        config.dim,
        settings.step_config(config),
        settings.uses_bias(config),
    )
    return jax.eval_shape(lambda ctx: init(ctx_matrices=ctx), ctx)
