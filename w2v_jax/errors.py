"""The mistakes of use: one `UserError` family, which every command line prints as one line.

A `UserError` says what the user gave (a flag or config field exactly as typed, a path)
and how to fix it; library code raises the subclass that names where the mistake is.
`cli.run` prints it as ``error: ...`` with no traceback; every other exception, JAX's own
``ValueError`` and ``TypeError`` included, is a bug and keeps its traceback. `UserError`
subclasses ``ValueError`` (and `DivergenceError` ``FloatingPointError``) so that callers
catching those keep working (docs/reliability.md, "One family of mistakes").

`choice`, `at_least`, `positive` and `boolean` are the range checks of config fields
(`settings`, and `distributed` before JAX starts), each a one-line `ConfigError`.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake of use: one line naming what was given and the fix."""


class ConfigError(UserError):
    """A config field or command-line flag has a value this program cannot run."""


class CorpusError(UserError):
    """The corpus is missing, unreadable or cannot train this config."""


class RunFolderError(UserError):
    """``--workdir`` or what it holds (its checkpoint, its files) cannot be used."""


class EvaluationFileError(UserError):
    """An evaluation file (analogies, similarities, vectors) is missing or malformed."""


class ResourceError(UserError):
    """What the config asks for cannot fit in memory, or peers cannot be reached."""


class DivergenceError(UserError, FloatingPointError):
    """Training diverged: a NaN or infinite loss or state, or a loss above the limit."""


def choice(name: str, value, allowed) -> None:
    """`ConfigError` unless ``value`` (of ``--config.<name>``) is one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(f"--config.{name}={value!r} is not allowed; use one of {list(allowed)}")


def at_least(name: str, value, low, *, integer: bool = False) -> None:
    """`ConfigError` unless ``value`` is a number (an integer if ``integer``) >= ``low``."""
    kinds = int if integer else (int, float)
    if not isinstance(value, kinds) or isinstance(value, bool) or not value >= low:
        what = "an integer" if integer else "a number"
        raise ConfigError(f"--config.{name}={value!r} must be {what} >= {low}")


def positive(name: str, value, usual=None) -> None:
    """`ConfigError` unless ``value`` is a number > 0 (``usual``: a value to suggest)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        hint = "" if usual is None else f" (e.g. {usual})"
        raise ConfigError(f"--config.{name}={value!r} must be > 0{hint}")


def boolean(name: str, value) -> None:
    """`ConfigError` unless ``value`` is True or False."""
    if not isinstance(value, bool):
        raise ConfigError(f"--config.{name}={value!r} must be True or False")
