"""What the CLI shows a person: exit codes, the log file, progress lines and argument types.

The terminal gets one summary line per dataset and one verdict line per command; stack traces go
to the log file (``$EXPORT_DATA_DIR/logs/export_pipeline.log``) and to Dagster's run records,
and to the terminal only with ``--verbose``. Long steps (seeding, backfills) report progress on
stderr through the ``export_pipeline.progress`` logger, which plain modules may use without
knowing about the terminal.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from enum import IntEnum
from importlib.metadata import PackageNotFoundError, version
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import NoReturn


class ExitCode(IntEnum):
    """What every `export-pipeline` command's exit status means (README, `--help`)."""

    OK = 0
    #: An unexpected internal error: one line on the terminal, the stack in the log file.
    INTERNAL_ERROR = 1
    #: Failed: bad usage or setting (nothing ran; argparse's own code), a dataset failed, the
    #: source or the warehouse unavailable.
    FAILED = 2
    #: Done, but an operator is needed: lag SLA breached or dead letters exhausted.
    ATTENTION = 3


EXIT_CODES_HELP = """\
exit codes:
  0  ok
  1  unexpected internal error (one line here, the stack trace in the log file)
  2  failed: bad usage or setting (nothing ran), a dataset failed, source or warehouse unavailable
  3  done, but needs an operator: lag SLA breached or dead letters exhausted
  130 interrupted (Ctrl-C)

Stack traces go to $EXPORT_DATA_DIR/logs/export_pipeline.log and Dagster's run records; add
--verbose to see them here too. Settings: the project's .env under the environment (README)."""

#: Logger for progress lines of long steps; the CLI shows them on stderr.
PROGRESS_LOGGER = "export_pipeline.progress"

_state: dict = {"verbose": False, "log_path": None, "handlers": []}


def package_version() -> str:
    try:
        return version("export-pipeline")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree, not installed
        return "unknown"


def verbose() -> bool:
    return bool(_state["verbose"])


def log_path() -> Path | None:
    path = _state["log_path"]
    return path if isinstance(path, Path) else None


def start(data_dir: Path, *, verbose: bool) -> Path | None:
    """Send log records to ``data_dir/logs/export_pipeline.log`` and progress lines to stderr."""
    _state["verbose"] = verbose
    root = logging.getLogger()
    progress = logging.getLogger(PROGRESS_LOGGER)
    for logger, old in _state["handlers"]:  # a second start in one process (tests) replaces
        logger.removeHandler(old)
        old.close()
    _state["handlers"] = []
    root.setLevel(logging.INFO)
    path = data_dir / "logs" / "export_pipeline.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = RotatingFileHandler(
            path, maxBytes=10_000_000, backupCount=3, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        _state["handlers"].append((root, handler))
        _state["log_path"] = path
    except OSError:  # a read-only data directory: the terminal still gets its lines
        _state["log_path"] = None
    progress.setLevel(logging.INFO)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter("  ... %(message)s"))
    progress.addHandler(stderr)
    _state["handlers"].append((progress, stderr))
    if verbose:
        console = logging.StreamHandler(sys.stderr)
        console.setLevel(logging.INFO)
        console.addFilter(lambda record: not record.name.startswith(PROGRESS_LOGGER))
        root.addHandler(console)
        _state["handlers"].append((root, console))
    return log_path()


def progress(message: str) -> None:
    logging.getLogger(PROGRESS_LOGGER).info(message)


def one_line(text: str, limit: int = 240) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def scrub(text: str) -> str:
    """``text`` without the source DSN's password, wherever a driver put it."""
    from export_pipeline.batch import scrub as scrub_dsn
    from export_pipeline.config import environment

    return scrub_dsn(text, environment().get("EXPORT_SOURCE_DSN"))


def log_error(summary: str, stack: str) -> None:
    """A failure's stack, in the log file (and on the terminal with ``--verbose``), scrubbed."""
    logging.getLogger("export_pipeline").error("%s\n%s", scrub(summary), scrub(stack.rstrip()))


def unexpected(exc: BaseException) -> int:
    """An unexpected exception: its stack to the log, one line to stderr; exit code 1."""
    stack = "".join(traceback.format_exception(exc))
    log_error(f"unexpected error: {exc!r}", stack)
    where = log_path()
    hint = f" (stack trace in {where})" if where else ""
    if verbose():
        print(scrub(stack), file=sys.stderr, end="")
    message = one_line(scrub(str(exc)))
    print(
        f"export-pipeline: internal error: {type(exc).__name__}: {message}{hint}", file=sys.stderr
    )
    return ExitCode.INTERNAL_ERROR


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number above 0")
    return value


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} must be {minimum} or more")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    return _whole_number(text, 0)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are one line (exit 2, as argparse's own)."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.FAILED, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
