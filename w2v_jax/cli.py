"""What every command line shares: one-line errors, quiet logs, interrupts.

`run(main)` replaces ``absl.app.run(main)`` in ``w2v_jax.main``, the evaluation CLI and
``experiments/*.py``: a mistake of use (`errors.UserError`) or an ``OSError`` ends with one
line ``error: ...`` and exit status 1 (a program may choose another), running out of
memory anyway with one line keeping the sizes (`out_of_memory`), an interrupt
(`interrupt.Interrupted`) with its line and status 130 or 143; anything else is a bug and
keeps its traceback. ``--verbose`` or ``W2V_VERBOSE=1`` shows every traceback and absl's
log prefix. Log lines are the bare message (``warning: `` before warnings), without JAX's
TPU probe. docs/reliability.md, "One-line errors, and tracebacks for bugs".
"""

from __future__ import annotations

import logging as std_logging
import os
import re
import sys
from collections.abc import Callable, Sequence

from absl import app, flags, logging

from w2v_jax import errors, interrupt

# Exceptions that are mistakes of use or conditions, not bugs: one line, no traceback.
# Not ValueError: JAX's shape and sharding errors are ValueErrors, and they are bugs.
USER_ERRORS = (errors.UserError, OSError)


def verbose() -> bool:
    """Whether ``--verbose`` was given or ``W2V_VERBOSE`` is set (1, true, yes)."""
    if os.environ.get("W2V_VERBOSE", "").lower() in ("1", "true", "yes"):
        return True
    return "verbose" in flags.FLAGS and flags.FLAGS.is_parsed() and flags.FLAGS.verbose


def one_line(error: BaseException) -> str:
    """The error's message on one line (whitespace runs become one space)."""
    return " ".join(str(error).split()) or type(error).__name__


def _flag_error(error: BaseException, argv: Sequence[str]) -> str:
    """A one-line message for a flag-parsing failure, naming the flag and the fix."""
    text = str(error).replace("\\'", "'").replace("\\n", "\n")
    if isinstance(error, (AttributeError, KeyError)):  # ml_collections: unknown field
        key = re.search(r"'([^'\\]+)'", text)
        key = key.group(1) if key else "?"
        given = [a.split("=")[0] for a in argv if re.search(rf"\.{re.escape(key)}(=|$)", a)]
        hint = re.search(r'Did you mean "([^"]+)"', text)
        hint = f' (did you mean "{hint.group(1)}"?)' if hint else ""
        name = given[0] if given else key
        return (
            f"unknown config field {name}{hint}; the fields are listed in "
            "w2v_jax/configs/default.py"
        )
    if isinstance(error, OSError) and "config file" in text:
        missing = re.search(r"No such file or directory: '([^']+)'", text)
        if missing:
            return f"--config={missing.group(1)}: no such file; pass w2v_jax/configs/<name>.py"
        return f"--config: cannot load it: {one_line(error)}"
    return one_line(error)


def _not_python(error: SyntaxError) -> str:
    """A one-line message for a ``--config`` file that is not Python."""
    where = f"{error.filename}, line {error.lineno}" if error.lineno else error.filename
    return (
        f"--config={error.filename}: not a Python config file ({where}: {error.msg}); pass "
        "w2v_jax/configs/<name>.py or a file whose get_config() returns a ConfigDict"
    )


def parse_flags(argv: Sequence[str], exit_code: int = 1, prefix: str = "error") -> list[str]:
    """absl's flag parser, but every failure is one line ``prefix: ...`` on stderr and
    ``exit_code``."""
    try:
        return flags.FLAGS(argv)
    except SyntaxError as e:  # --config= a file that is not Python (flags parse it)
        if verbose():
            raise
        sys.stderr.write(f"{prefix}: {_not_python(e)}\n")
        sys.exit(exit_code)
    except (flags.Error, AttributeError, KeyError, OSError, ValueError) as e:
        if verbose():
            raise
        sys.stderr.write(f"{prefix}: {_flag_error(e, argv)} (see --helpshort)\n")
        sys.exit(exit_code)


class _PlainFormatter(std_logging.Formatter):
    def format(self, record: std_logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= std_logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


class _NoTpuProbe(std_logging.Filter):
    """Drops JAX's INFO line about the TPU backend it could not open on a CPU/GPU host."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Unable to initialize backend")


def quiet_logs() -> None:
    """INFO logs as bare messages, without the TPU probe (unless verbose)."""
    logging.set_verbosity(logging.INFO)
    std_logging.getLogger("jax._src.xla_bridge").addFilter(_NoTpuProbe())
    if not verbose():
        logging.get_absl_handler().setFormatter(_PlainFormatter())


def load_config(config_flag) -> object:
    """The value of a ``config_flags`` flag; a config file that failed to load raises
    OSError (one line) here, where it is first used."""
    try:
        config = config_flag.value
        config.lock()
    except OSError as e:
        raise OSError(_flag_error(e, [])) from None
    return config


def out_of_memory(error: BaseException) -> str | None:
    """One line for an allocation that failed though the config passed the memory checks
    (``MemoryError``: NumPy on the host; XLA's ``RESOURCE_EXHAUSTED``: a device or XLA:CPU),
    keeping the sizes the message names; None for any other error."""
    text = " ".join(str(error).split())
    if isinstance(error, MemoryError):
        where = "host"
    elif "RESOURCE_EXHAUSTED" in text or "Out of memory" in text:
        where = "device"
    else:
        return None
    sizes = re.findall(r"\d[\d.,]*\s*(?:[KMGTP]i?B|bytes)\b|shape \([^)]*\)", text)
    what = ", ".join(dict.fromkeys(sizes)) or text[:200]
    return (
        f"out of {where} memory ({what}); lower config.dim, config.batch_size, "
        "config.window or corpus.max_vocab_size, or use more devices (parallel.model_axis "
        "with parallel.shard_vocab=True)"
    )


def run(main: Callable[[list[str]], None], *, error_code: int = 1, prefix: str = "error") -> None:
    """``absl.app.run(main)`` with one-line errors (see the module doc)."""
    if "verbose" not in flags.FLAGS:  # defined here: importing this module adds no flag
        flags.DEFINE_boolean(
            "verbose", False, "Show tracebacks and absl's log prefix (also: W2V_VERBOSE=1)."
        )

    def guarded(argv: list[str]) -> None:
        quiet_logs()
        try:
            main(argv)
        except interrupt.Interrupted as e:
            if verbose():
                raise
            sys.stderr.write(f"{e.message}\n")
            sys.exit(e.exit_code)
        except USER_ERRORS as e:
            if verbose():
                raise
            sys.stderr.write(f"{prefix}: {one_line(e)}\n")
            sys.exit(error_code)
        except Exception as e:  # a bug keeps its traceback, unless memory ran out
            message = out_of_memory(e)
            if message is None or verbose():
                raise
            sys.stderr.write(f"{prefix}: {message}\n")
            sys.exit(error_code)

    app.run(guarded, flags_parser=lambda argv: parse_flags(argv, error_code, prefix))
