"""`export-pipeline`: the command line.

This module only builds the parser and runs one command: the subcommands live in
:mod:`export_pipeline.commands` (each module's ``register`` adds its own), the helpers they share
in :mod:`export_pipeline.commands.common`, and runs through Dagster in
:mod:`export_pipeline.launcher`. Nothing imports from here but the entry point.

Every subcommand exits non-zero with a one-line error on failure. Runs go through Dagster (the
same job a schedule launches) and are recorded in the instance under ``DAGSTER_HOME``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from collections.abc import Sequence

from export_pipeline import terminal
from export_pipeline.commands.common import CliError
from export_pipeline.config import ConfigError, Settings, environment

# --- entry point ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = terminal.ArgumentParser(
        prog="export-pipeline",
        description="Export data-engine-x PostgreSQL into the DuckDB warehouse (contract v1).",
        epilog=terminal.EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {terminal.package_version()}"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="also show logs and stack traces on the terminal"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for register in _command_modules():
        register(sub)
    return parser


def _command_modules() -> list:
    """``register`` functions of the modules in ``export_pipeline/commands/``, in ``--help``
    order: a module's ``HELP_ORDER`` (the everyday commands first), then by name."""
    import importlib
    import pkgutil

    from export_pipeline import commands

    modules = [
        importlib.import_module(f"{commands.__name__}.{info.name}")
        for info in pkgutil.iter_modules(commands.__path__)
    ]
    modules = [m for m in modules if hasattr(m, "register")]
    modules.sort(key=lambda m: (getattr(m, "HELP_ORDER", 100), m.__name__))
    return [m.register for m in modules]


def _stop_on_sigterm() -> None:
    """SIGTERM stops a command the way Ctrl-C does: the batch in flight rolls back (watermark
    unmoved), DuckDB's lock is released, and Dagster records the run as failed."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code is one of :class:`terminal.ExitCode` (``--help``)."""
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    _stop_on_sigterm()
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv  # accepted after the subcommand too
    args = build_parser().parse_args([a for a in argv if a != "--verbose"])
    from export_pipeline.faults import check_crash_setting
    from export_pipeline.warehouse import WarehouseBusyError

    try:
        settings = Settings.from_env()
        terminal.start(settings.data_dir, verbose=verbose)
        check_crash_setting()
        return args.func(args, settings)
    except (ConfigError, CliError, WarehouseBusyError) as exc:
        print(f"export-pipeline: error: {terminal.one_line(str(exc), 2000)}", file=sys.stderr)
        return terminal.ExitCode.FAILED
    except KeyboardInterrupt:
        print("export-pipeline: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # The source (or the warehouse's file) unavailable, in a command that reads it directly
        # (`dead-letter replay`, `source init`, ...): one line, the DSN's password scrubbed.
        from export_pipeline.batch import is_transient, scrub
        from export_pipeline.source_session import is_source_error

        if not (is_transient(exc) or is_source_error(exc)):
            return terminal.unexpected(exc)
        one_line = " ".join(scrub(str(exc), environment().get("EXPORT_SOURCE_DSN")).split())
        print(f"export-pipeline: error: {one_line}", file=sys.stderr)
        return terminal.ExitCode.FAILED


if __name__ == "__main__":
    # Under `python -m`, this file is `__main__`; run the package module's main so that errors
    # raised by export_pipeline.commands (export_pipeline.cli.CliError) are the ones caught.
    from export_pipeline.cli import main as package_main

    sys.exit(package_main())
