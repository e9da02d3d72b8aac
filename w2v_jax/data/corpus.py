"""Corpora: named data sets or your own text -> token ids, sentence offsets and a vocab.

Shape letters: N tokens, S sentences, V vocabulary size.

Named corpora live in the data directory (`data_dir`, else $W2V_DATA_DIR, else
~/.cache/w2v_jax): "text8" (text8.zip or the unpacked text8), "text8-head"
(text8-head.txt.gz), "wiki-60m" (wiki-60m.txt.gz) and "ptb" (ptb.{train,valid,test}.txt).
Any other string or path names a UTF-8 text file (plain, .gz or .zip) or a directory of
them (see `readers`).

Splits. ptb has its own "train", "valid" and "test" files. Every other corpus is split by
position: "heldout" is the last `heldout_fraction` of its tokens (default 1%, rounded up;
text8 keeps 170,053 tokens apart), "train" is everything before them, and "all" is the
whole text. The held-out split is encoded with the vocabulary of the train split, so its
words and counts never reach training.

Sentences. A line is a sentence, so a text8-style file is one long line; ptb appends "<eos>"
to every line. Out-of-vocabulary tokens are removed first, as word2vec C does, and then
every line is cut into sentences of at most `max_sentence_length` tokens (gensim's 10,000).
A line left empty by the removal is dropped, so every sentence has at least one token.

Cache. The encoded corpus (ids.npy, offsets.npy, vocab.tsv, meta.json) is kept under
`cache_dir`, by default $XDG_CACHE_HOME/w2v_jax/cache (~/.cache/w2v_jax/cache); never in
the data directory, which may be shared. The key hashes each source file's path, size
and modification time (reading content to hash it would cost as much as the load it
saves) with every setting that changes the result. Entries are written to a temporary
directory and renamed into place, so a crash never leaves half a cache; an entry that
fails its checks is rebuilt. ids are memory-mapped.
The cache itself is `corpus_cache`.
"""

import math
import os
import pathlib
import time
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
from absl import logging

from w2v_jax.data import cache, readers, vocab

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
TEXT8_CHECK = readers.ZipCheck(
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
        "heldout" is encoded with the vocabulary of "train" (via `encode_corpus`).
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
    settings = {"vocab": cache.vocab_digest(vocab)}
    return _load(name_or_path, split, vocab, settings, options._asdict())


def download_text8(dest_dir: str | os.PathLike) -> pathlib.Path:
    """Downloads text8.zip (31 MB) into `dest_dir`, verifies it, and returns its path.

    Never called implicitly: only `load_corpus("text8", download=True)` or a user does.
    """
    path = pathlib.Path(dest_dir).expanduser() / "text8.zip"
    return readers.download(TEXT8_URL, path, TEXT8_CHECK)


def _load(name_or_path, split, given_vocab, settings, options) -> Corpus:
    """The corpus for `split`, from the cache or built (with `given_vocab` if any)."""
    max_sentence_length, fraction = options["max_sentence_length"], options["heldout_fraction"]
    if max_sentence_length < 1:
        raise ValueError(f"max_sentence_length must be >= 1, got {max_sentence_length}")
    if not 0 <= fraction < 1:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {fraction}")
    data_dir, lowercase = options["data_dir"], options["lowercase"]
    path, label, is_ptb = _resolve(name_or_path, split, data_dir, options["download"])
    positional = split in ("train", "heldout") and not is_ptb
    eos_token = EOS if (is_ptb if options["eos"] is None else options["eos"]) else None
    key = cache.make_key(
        path,
        split=split,
        heldout_fraction=fraction if positional else None,
        lowercase=lowercase,
        eos=eos_token,
        max_sentence_length=max_sentence_length,
        **settings,
    )

    def build(out):
        start = time.perf_counter()
        tokens = readers.read_tokens(
            path, eos=eos_token, lowercase=lowercase, chunk_bytes=options["chunk_bytes"]
        )
        n = tokens.num_tokens
        k = math.ceil(n * fraction) if positional else 0
        if split == "heldout" and k == 0:
            raise ValueError(f"{path}: heldout_fraction=0 leaves no held-out tokens")
        if k >= n:
            raise ValueError(
                f"{path}: heldout_fraction={fraction} of {n} tokens "
                "leaves nothing to train on; lower heldout_fraction"
            )
        lo, hi = (n - k, n) if split == "heldout" else (0, n - k)
        v = given_vocab
        if v is None:
            counts = readers.count_ids(tokens, lo, hi).tolist()
            seen = {w: c for w, c in zip(tokens.table, counts, strict=True) if c}
            try:
                v = vocab.Vocab.from_counts(seen, **settings)
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
        ids, offsets = readers.encode(tokens, v.words, lo, hi, max_sentence_length, out)
        logging.info(
            "encoded %s (%s): N=%d S=%d V=%d in %.1fs",
            path,
            split,
            len(ids),
            len(offsets) - 1,
            len(v),
            time.perf_counter() - start,
        )
        return Corpus(ids, offsets, v)

    root = None
    if options["use_cache"]:
        root = cache.root(options["cache_dir"], lambda: _default_cache_dirs(data_dir))
    if root is None:
        return build(lambda n: np.empty(n, np.int32))
    entry = cache.entry_path(root, label, split, key)
    found = cache.read(entry, key, given_vocab)
    return Corpus(*(found or cache.write(entry, key, given_vocab, build)))


def _check_split(name_or_path, split) -> None:
    splits = PTB_SPLITS if name_or_path == "ptb" else TEXT_SPLITS
    if split not in splits:
        raise ValueError(f"{name_or_path!r} has splits {', '.join(splits)}; got split={split!r}")


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


def _default_cache_dirs(data_dir) -> Iterable[pathlib.Path]:
    """Where the cache goes without a `cache_dir`: the user cache, never the data directory
    (a shared, read-only-by-intent corpus folder must not be written to)."""
    del data_dir
    return (user_cache_dir() / "cache",)
