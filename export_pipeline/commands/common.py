"""Helpers the subcommands share: the one-line error, argument types, the source DSN to read or
write, JSON output, and the run report. Imported by :mod:`export_pipeline.commands` modules and
by :mod:`export_pipeline.cli`; it imports neither.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import date, datetime
from urllib.parse import urlsplit

from export_pipeline import terminal
from export_pipeline.config import Settings


class CliError(RuntimeError):
    """A failure to report as one line and a non-zero exit."""


def source_dsn(settings: Settings) -> str:
    """The source to read, as a read-only, named, time-bounded session (source_session)."""
    if settings.source_dsn:
        return settings.source_session_dsn(settings.source_dsn)
    from export_pipeline.source import embedded_postgres

    return settings.source_session_dsn(embedded_postgres())


#: The flag that lets `source init|seed` and `demo` write to EXPORT_SOURCE_DSN's database.
OWN_DATABASE_FLAG = "--i-own-this-database"


def writable_source_dsn(args: argparse.Namespace, settings: Settings) -> str:
    """The database `source init|seed` and `demo` may create tables in and empty.

    The embedded PostgreSQL they start, never EXPORT_SOURCE_DSN (someone's production database)
    unless ``--i-own-this-database`` names its database. Checked before anything is touched.
    """
    owned = getattr(args, "own_database", None)
    if not settings.source_dsn:
        if owned:
            raise CliError(
                f"{OWN_DATABASE_FLAG} {owned} given, but EXPORT_SOURCE_DSN is not set: "
                "this command would use the embedded PostgreSQL; drop the flag"
            )
        from export_pipeline.source import embedded_postgres

        return embedded_postgres()
    database = urlsplit(settings.source_dsn).path.strip("/")
    if owned != database:
        told = f"{OWN_DATABASE_FLAG} names {owned!r}, not {database!r}; " if owned else ""
        raise CliError(
            f"refusing to create, empty or seed tables in EXPORT_SOURCE_DSN's database "
            f"{database!r}: {told}`{args.command}` writes only to the embedded PostgreSQL it "
            f"starts (unset EXPORT_SOURCE_DSN), or to a database you own, named with "
            f"{OWN_DATABASE_FLAG} {database}"
        )
    return settings.source_dsn


def own_database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        OWN_DATABASE_FLAG,
        dest="own_database",
        metavar="DBNAME",
        help="write to EXPORT_SOURCE_DSN's database (it must be named DBNAME); by default only "
        "the embedded PostgreSQL is written to",
    )


def utc_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def dataset_name(text: str) -> str:
    """argparse type: a contract dataset name."""
    from export_pipeline.contract import dataset

    try:
        return dataset(text).name
    except KeyError as exc:
        raise argparse.ArgumentTypeError(str(exc.args[0])) from None


def org_uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an org uuid") from None


def json_default(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def report_run(label: str, success: bool, run_id: str, rows: list[dict]) -> int:
    """One line per dataset and the verdict (its exit code): :mod:`export_pipeline.runreport`."""
    from export_pipeline import runreport

    report = runreport.build(label, run_id, success, rows, Settings.from_env().warehouse_path)
    runreport.print_lines(report)
    code, verdict = runreport.verdict(report, success)
    if code == terminal.ExitCode.FAILED:
        raise CliError(verdict)
    print(verdict, file=sys.stderr if code else sys.stdout)
    return code
