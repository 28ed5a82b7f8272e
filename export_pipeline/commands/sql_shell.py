"""`export-pipeline sql`: an interactive SQL shell on the analysts' catalog (`make sql`).

It runs the project's own DuckDB (the Python package pinned in ``uv.lock``, the version that
wrote the catalog), so it always reads it: a DuckDB CLI of another release may not (1.5.x cannot
open files written by 2.0). The catalog is opened read-only: the shell never blocks a run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export_pipeline.config import Settings

HELP = """\
Statements end with ';' and may span lines. Dot commands:
  .tables   the views (the five datasets and the convenience views)
  .reopen   reconnect, to see the newest publish (a connection is one consistent snapshot)
  .help     this text
  .quit     leave (or Ctrl-D)"""


def register(sub: argparse._SubParsersAction) -> None:
    shell = sub.add_parser(
        "sql",
        help="interactive SQL shell on analytics.duckdb with the project's DuckDB (read-only)",
        description=__doc__,
    )
    shell.add_argument(
        "-c", "--command", metavar="SQL", help="run these statements, print, and exit"
    )
    shell.set_defaults(func=cmd_sql)


def _catalog(settings: Settings) -> Path:
    from export_pipeline import analytics
    from export_pipeline.commands.common import CliError

    path = analytics.analytics_path(settings.data_dir)
    if not path.exists():
        raise CliError(
            f"no analytics catalog at {path} yet: run `export-pipeline run` or "
            "`export-pipeline publish` first"
        )
    return path


def _connect(path: Path):
    import duckdb

    return duckdb.connect(str(path), read_only=True)


def run_statements(con, text: str, out=sys.stdout) -> bool:
    """Run every statement of ``text``, printing results; False when one failed."""
    import duckdb

    try:
        statements = con.extract_statements(text)
    except duckdb.Error as exc:
        print(f"Error: {' '.join(str(exc).split())}", file=out)
        return False
    ok = True
    for statement in statements:
        try:
            relation = con.sql(statement.query)
        except duckdb.Error as exc:
            print(f"Error: {' '.join(str(exc).split())}", file=out)
            ok = False
            continue
        if relation is not None:
            print(relation, file=out, end="")
    return ok


def cmd_sql(args: argparse.Namespace, settings: Settings) -> int:
    import duckdb

    from export_pipeline.terminal import ExitCode

    path = _catalog(settings)
    con = _connect(path)
    try:
        if args.command is not None:
            return ExitCode.OK if run_statements(con, args.command) else ExitCode.FAILED
        if not sys.stdin.isatty():  # statements piped in
            return ExitCode.OK if run_statements(con, sys.stdin.read()) else ExitCode.FAILED
        print(f"DuckDB {duckdb.__version__} (the project's) on {path}, read-only.")
        print(HELP)
        return _repl(con, path)
    finally:
        con.close()


def _repl(con, path: Path) -> int:
    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:  # pragma: no cover - not on every platform
        pass
    buffer: list[str] = []
    while True:
        try:
            line = input("D " if not buffer else "> ")
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print()
            buffer = []
            continue
        command = line.strip()
        if not buffer and command.startswith("."):
            if command in (".quit", ".exit"):
                return 0
            if command == ".help":
                print(HELP)
            elif command == ".tables":
                run_statements(con, "SHOW TABLES")
            elif command == ".reopen":
                con.close()
                con = _connect(path)
                print(f"reopened {path}")
            else:
                print(f"unknown command {command}; .help lists them")
            continue
        buffer.append(line)
        if command.endswith(";"):
            run_statements(con, "\n".join(buffer))
            buffer = []
