"""What every command line shares: one-line errors, quiet logs, interrupts.

`run(main)` replaces ``absl.app.run(main)`` in ``w2v_jax.main``, the evaluation CLI and
``experiments/*.py``:

* an ordinary mistake (a bad flag, an unknown ``--config.*`` field, a missing config,
  corpus or evaluation file, an unusable ``--workdir``, no network for a download, a
  diverged run) ends with one line ``error: ...`` on stderr and exit status 1 (a
  program may choose another);
* an interrupt (`interrupt.Interrupted`: Ctrl-C or SIGTERM, after the trainer saved its
  checkpoint) ends with its one-line message and status 130 (SIGINT) or 143 (SIGTERM);
* anything else is a bug and keeps its traceback. ``--verbose`` or ``W2V_VERBOSE=1``
  shows the traceback of every error, and the absl prefix on every log line.

Log lines are the bare message (``warning: `` before warnings), without JAX's
"Unable to initialize backend 'tpu'" probe on machines without a TPU.
"""

from __future__ import annotations

import logging as std_logging
import os
import re
import sys
from collections.abc import Callable, Sequence

from absl import app, flags, logging

from w2v_jax import interrupt

# Exceptions that are ordinary mistakes or conditions, not bugs: one line, no traceback.
USER_ERRORS = (ValueError, OSError, FloatingPointError)


def define_flags() -> None:
    """Defines ``--verbose`` (once; `run` calls it, so importing this module adds no flag)."""
    if "verbose" not in flags.FLAGS:
        flags.DEFINE_boolean(
            "verbose", False, "Show tracebacks and absl's log prefix (also: W2V_VERBOSE=1)."
        )


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


def parse_flags(argv: Sequence[str], exit_code: int = 1) -> list[str]:
    """absl's flag parser, but every failure is one line on stderr and ``exit_code``."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, OSError, ValueError) as e:
        if verbose():
            raise
        sys.stderr.write(f"error: {_flag_error(e, argv)} (see --helpshort)\n")
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


def run(main: Callable[[list[str]], None], *, error_code: int = 1, prefix: str = "error") -> None:
    """``absl.app.run(main)`` with one-line errors (see the module doc)."""
    define_flags()

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

    app.run(guarded, flags_parser=lambda argv: parse_flags(argv, error_code))
