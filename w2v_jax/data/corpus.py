"""Corpora: named data sets or your own text -> token ids, sentence offsets and a vocab.

Shape letters: N tokens, S sentences, V vocabulary size.

Named corpora ("text8", "text8-head", "wiki-60m", "ptb") live in the data directory
(`resolve_data_dir`); any other string or path names a UTF-8 text file (plain, .gz or
.zip) or a directory of them (`readers`). A line is a sentence (ptb appends "<eos>");
out-of-vocabulary tokens are removed first, as word2vec C does, then every line is cut
into sentences of at most `max_sentence_length` tokens, and a line left empty is dropped.
ptb has its own split files; every other corpus is split by position ("heldout": the last
`heldout_fraction` of the tokens, rounded up, encoded with the vocabulary of "train"; "all").
The cache (`cache.load_or_build`), the build in bounded memory (`readers`, `encoding`; a
"train" build also writes "heldout" from the same read) and pre-encoded folders: docs/data.md.
"""

import math
import os
import pathlib
import shutil
import tempfile
import time
from typing import NamedTuple

import numpy as np
from absl import logging

from w2v_jax import errors
from w2v_jax.data import cache, download, encoding, readers, vocab, windows

EOS = "<eos>"
HELDOUT_FRACTION = 0.01
PTB_SPLITS = ("train", "valid", "test")
TEXT_SPLITS = ("train", "heldout", "all")
_NAMED_FILES = {
    "text8": ("text8.zip", "text8"),
    "text8-head": ("text8-head.txt.gz",),
    "wiki-60m": ("wiki-60m.txt.gz",),
}


TEXT8_URL = "http://mattmahoney.net/dc/text8.zip"
TEXT8_CHECK = download.ZipCheck(
    size=31_344_016, member="text8", member_size=100_000_000, crc32=0x7D6BE66F
)


class Corpus(NamedTuple):
    """A tokenised corpus: in-vocabulary ids cut into sentences."""

    ids: np.ndarray  # int32 [N] vocab ids, out-of-vocabulary tokens removed; maybe a memmap
    offsets: np.ndarray  # int64 [S+1] sentence s is ids[offsets[s]:offsets[s+1]], never empty
    vocab: vocab.Vocab  # the vocabulary the ids index (for "heldout": the train split's)


def user_cache_dir() -> pathlib.Path:
    """$XDG_CACHE_HOME/w2v_jax, by default ~/.cache/w2v_jax."""
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "w2v_jax"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """`data_dir`, else $W2V_DATA_DIR, else `user_cache_dir()`."""
    value = data_dir or os.environ.get("W2V_DATA_DIR")
    return pathlib.Path(value).expanduser() if value else user_cache_dir()


class ReadOptions(NamedTuple):
    """How a corpus file is found, read and cached (everything but the vocabulary)."""

    data_dir: str | os.PathLike | None = None  # named corpora; $W2V_DATA_DIR, else the cache
    max_sentence_length: int = 10_000  # longest sentence, in in-vocabulary tokens
    cache_dir: str | os.PathLike | None = None  # default ~/.cache/w2v_jax/cache
    use_cache: bool = True  # read and write the cache
    eos: bool | None = None  # append "<eos>" to every line; default True for ptb only
    lowercase: bool = False  # lowercase the text first
    heldout_fraction: float = HELDOUT_FRACTION  # share of the tokens kept for "heldout"
    download: bool = False  # fetch text8.zip into the data directory if it is missing
    chunk_bytes: int = readers.CHUNK_BYTES  # read size; results do not depend on it
    workers: int | None = None  # tokenising processes (a directory); None: min(4, CPUs)


def load_corpus(
    name_or_path: str | os.PathLike,
    *,
    split: str = "train",
    min_count: int = 5,
    max_vocab_size: int | None = None,
    options: ReadOptions | None = None,
    **fields,
) -> Corpus:
    """Loads a corpus and builds its vocabulary from the train split (see the module doc).

    Args:
      name_or_path: "text8", "text8-head", "wiki-60m", "ptb", or a file or directory.
      split: "train", "valid" or "test" for ptb; "train", "heldout" or "all" otherwise.
        "heldout" is encoded with the vocabulary of "train" (via `encode_corpus`); with
        the cache, building "train" has written it already.
      min_count, max_vocab_size: vocabulary settings, as in `vocab.Vocab.from_counts`.
      options: how the text is read (`ReadOptions`; None = its defaults). ``**fields``
        overrides any of its fields by name:
        ``load_corpus("ptb", data_dir=d, use_cache=False)``.

    Raises:
      FileNotFoundError: the corpus is missing (the message says where to put it).
      ValueError: an empty, binary or non-UTF-8 input, or an empty vocabulary.
    """
    options = (options or ReadOptions())._replace(**fields)
    _check_split(name_or_path, split)
    if split == "heldout":
        train = load_corpus(
            name_or_path, split="train", min_count=min_count, max_vocab_size=max_vocab_size,
            options=options,
        )  # fmt: skip
        return encode_corpus(name_or_path, train.vocab, split="heldout", options=options)
    settings = dict(min_count=min_count, max_vocab_size=max_vocab_size)
    return _load(name_or_path, split, None, settings, options._asdict())


def encode_corpus(
    name_or_path: str | os.PathLike,
    vocab: vocab.Vocab,
    *,
    split: str = "heldout",
    options: ReadOptions | None = None,
    **fields,
) -> Corpus:
    """Encodes a split with a given (training) vocabulary; other words are removed.

    Takes the arguments of `load_corpus` less the vocabulary settings; the default split
    is "heldout" (pass split="valid" or "test" for ptb, "all" for a whole file). The
    result's vocab is `vocab` itself, with its (training) counts.
    """
    options = (options or ReadOptions())._replace(**fields)
    settings = {"vocab": vocab.digest()}
    return _load(name_or_path, split, vocab, settings, options._asdict())


def download_text8(dest_dir: str | os.PathLike) -> pathlib.Path:
    """Downloads text8.zip (31 MB) into `dest_dir`, verifies it, and returns its path.

    Never called implicitly: only `load_corpus("text8", download=True)` or a user does.
    """
    path = pathlib.Path(dest_dir).expanduser() / "text8.zip"
    return download.download(TEXT8_URL, path, TEXT8_CHECK)


def _load(name_or_path, split, given_vocab, settings, options) -> Corpus:
    """The corpus for `split`, from the cache or built (with `given_vocab` if any)."""
    max_sentence_length, fraction = options["max_sentence_length"], options["heldout_fraction"]
    if max_sentence_length < 1:
        raise errors.CorpusError(f"max_sentence_length must be >= 1, got {max_sentence_length}")
    if not 0 <= fraction < 1:
        raise errors.CorpusError(f"heldout_fraction must be in [0, 1), got {fraction}")
    if options["workers"] is not None and options["workers"] < 1:
        raise errors.CorpusError(
            f"workers must be >= 1 (or None: min(4, CPUs)), got {options['workers']}"
        )
    data_dir = options["data_dir"]
    path, label, is_ptb = _resolve(name_or_path, split, data_dir, options["download"])
    if path.is_dir() and (path / "ids.npy").is_file():
        return _pre_encoded(path, split, given_vocab, settings, options)
    eos = EOS if (is_ptb if options["eos"] is None else options["eos"]) else None
    source = _Source(path, label, is_ptb, eos, options)
    root = None
    if options["use_cache"]:
        root = cache.root(options["cache_dir"], lambda: [user_cache_dir() / "cache"])
    if root is None:
        with tempfile.TemporaryDirectory(prefix="w2v_jax-corpus-") as tmp:
            v = _build(source, split, given_vocab, settings, pathlib.Path(tmp), None)
            # Memory-mapped: the map keeps the data of the file deleted with the folder.
            ids = np.load(pathlib.Path(tmp) / "ids.npy", mmap_mode="r")
            return Corpus(ids, np.load(pathlib.Path(tmp) / "offsets.npy"), v)

    def heldout_entry(v: vocab.Vocab, write: cache.Build) -> None:
        heldout_key = _key(source, "heldout", {"vocab": v.digest()})
        entry = cache.entry_path(root, label, "heldout", heldout_key)
        cache.load_or_build(entry, heldout_key, v, write)

    def build(folder: pathlib.Path) -> vocab.Vocab:
        return _build(source, split, given_vocab, settings, folder, heldout_entry)

    key = _key(source, split, settings)
    entry = cache.entry_path(root, label, split, key)
    return Corpus(*cache.load_or_build(entry, key, given_vocab, build))


class _Source(NamedTuple):
    """A text corpus and how it is read."""

    path: pathlib.Path
    label: str  # the name of its cache entries
    is_ptb: bool  # ptb has split files, every other text is split by position
    eos: str | None  # appended to every line
    options: dict  # ReadOptions._asdict()


def _key(source: _Source, split: str, settings: dict) -> dict:
    """The cache key of ``split`` of ``source`` built with ``settings``."""
    positional = split in ("train", "heldout") and not source.is_ptb
    return cache.make_key(
        source.path,
        split=split,
        heldout_fraction=source.options["heldout_fraction"] if positional else None,
        lowercase=source.options["lowercase"],
        eos=source.eos,
        max_sentence_length=source.options["max_sentence_length"],
        **settings,
    )


def _split_range(path, split: str, n: int, fraction: float, positional: bool) -> tuple[int, int]:
    """The tokens [lo, hi) of ``split`` among n (see the module doc, Splits)."""
    k = math.ceil(n * fraction) if positional else 0
    if split == "heldout" and k == 0:
        raise errors.CorpusError(f"{path}: heldout_fraction=0 leaves no held-out tokens")
    if k >= n:
        raise errors.CorpusError(
            f"{path}: heldout_fraction={fraction} of {n} tokens "
            "leaves nothing to train on; lower heldout_fraction"
        )
    return (n - k, n) if split == "heldout" else (0, n - k)


def _build(source, split, given_vocab, settings, folder, heldout_entry) -> vocab.Vocab:
    """Reads the text once and writes ``split``'s ids.npy and offsets.npy into ``folder``;
    returns its vocabulary. Building "train" of a positional split also hands the
    held-out tail to ``heldout_entry(vocab, write)`` when one is given."""
    start = time.perf_counter()
    options, max_len = source.options, source.options["max_sentence_length"]
    positional = split in ("train", "heldout") and not source.is_ptb
    spill = folder / "provisional"
    try:
        tokens = readers.read_tokens(
            source.path,
            spill,
            eos=source.eos,
            lowercase=options["lowercase"],
            chunk_bytes=options["chunk_bytes"],
            workers=options["workers"] or readers.default_workers(),
        )
        n = tokens.num_tokens
        lo, hi = _split_range(source.path, split, n, options["heldout_fraction"], positional)
        counts = encoding.count(tokens, lo, hi)
        v = given_vocab
        if v is None:
            seen = {w: c for w, c in zip(tokens.table, counts.tolist(), strict=True) if c}
            try:
                v = vocab.Vocab.from_counts(seen, **settings)
            except ValueError as e:
                raise errors.CorpusError(f"{source.path}: {e}") from None
            del seen
        ids_of = encoding.remap(tokens.table, v.words)
        size = int(counts[ids_of >= 0].sum())
        num_sentences = encoding.encode(tokens, ids_of, lo, hi, max_len, folder, size)
        logging.info(
            "encoded %s (%s): N=%d S=%d V=%d in %.1fs",
            source.path, split, size, num_sentences, len(v), time.perf_counter() - start,
        )  # fmt: skip
        if heldout_entry is not None and split == "train" and positional and hi < n:

            def write_heldout(heldout: pathlib.Path) -> vocab.Vocab:
                kept = int(encoding.count(tokens, hi, n)[ids_of >= 0].sum())
                encoding.encode(tokens, ids_of, hi, n, max_len, heldout, kept)
                return v

            heldout_entry(v, write_heldout)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    return v


def _pre_encoded(path, split, given_vocab, settings, options) -> Corpus:
    """``split`` of the pre-encoded corpus folder ``path`` (see the module doc)."""
    ids, offsets, v = cache.read_encoded(path)
    if given_vocab is not None and given_vocab != v:
        raise errors.CorpusError(
            f"{path}: a pre-encoded corpus is read with its own vocab.tsv, and the vocabulary "
            f"given ({given_vocab!r}) is another; encode with {path / 'vocab.tsv'}"
        )
    unused = [k for k in ("min_count", "max_vocab_size") if settings.get(k) not in (None, 1)]
    if unused and given_vocab is None:
        logging.info("%s is pre-encoded: its vocab.tsv is used as it is (%s ignored)", path, unused)
    if not len(ids):
        raise errors.CorpusError(f"{path}: ids.npy holds no tokens; pass a non-empty corpus")
    n, fraction = len(ids), options["heldout_fraction"]
    lo, hi = _split_range(path, split, n, fraction, split in ("train", "heldout"))
    inner = offsets[(offsets > lo) & (offsets < hi)]
    bounds = np.concatenate([np.array([lo]), inner, np.array([hi])]) - lo
    offsets = windows.split_sentences(bounds, options["max_sentence_length"])
    return Corpus(ids[lo:hi], offsets, given_vocab or v)


def _check_split(name_or_path, split) -> None:
    splits = PTB_SPLITS if name_or_path == "ptb" else TEXT_SPLITS
    if split not in splits:
        raise errors.CorpusError(
            f"{name_or_path!r} has splits {', '.join(splits)}; got split={split!r}"
        )


def locate(name_or_path, split: str = "train", data_dir=None) -> pathlib.Path:
    """The file or folder that corpus ``name_or_path``'s ``split`` is read from, without
    reading or downloading it: a one-line FileNotFoundError naming what is missing and
    where to put it (a script checks its data before it trains anything)."""
    return _resolve(name_or_path, split, data_dir, download=False)[0]


def _resolve(name_or_path, split, data_dir, download) -> tuple[pathlib.Path, str, bool]:
    """(path, label, is_ptb) of a named corpus or a path; checks the split."""
    _check_split(name_or_path, split)
    name = name_or_path if isinstance(name_or_path, str) else None
    is_ptb = name == "ptb"
    if name not in _NAMED_FILES and not is_ptb:
        path = pathlib.Path(name_or_path).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: no such file or directory, and {name_or_path!r} is not a named corpus "
                f"({', '.join([*_NAMED_FILES, 'ptb'])}); pass a text file or directory"
            )
        return path, path.name, False
    root = resolve_data_dir(data_dir)
    files = (f"ptb.{split}.txt",) if is_ptb else _NAMED_FILES[name]
    for f in files:
        if (root / f).is_file():
            return root / f, name, is_ptb
    if name == "text8" and download:
        return download_text8(root), name, False
    how = "put it there, or point data_dir or $W2V_DATA_DIR at the directory that holds it"
    if name == "text8":
        how += f"; or download it: load_corpus('text8', download=True) fetches {TEXT8_URL}"
    raise FileNotFoundError(f"corpus {name!r} not found: expected {root / files[0]}; {how}")
