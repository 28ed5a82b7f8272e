"""`export-pipeline run` and `export-pipeline backfill`: runs of the export jobs through Dagster."""

from __future__ import annotations

import argparse

from export_pipeline.commands.common import (
    CliError,
    dataset_name,
    org_uuid,
    report_run,
    utc_day,
)
from export_pipeline.config import Settings
from export_pipeline.launcher import run_backfill_range, run_microbatch

#: Listed first in ``--help``: what a user runs most.
HELP_ORDER = 1


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="one micro-batch of all datasets, through Dagster")
    run.set_defaults(func=cmd_run)

    backfill = sub.add_parser(
        "backfill", help="re-extract a window of UTC days, as one Dagster run (idempotent)"
    )
    backfill.add_argument("--start", type=utc_day, required=True, help="first day, YYYY-MM-DD")
    backfill.add_argument("--end", type=utc_day, required=True, help="last day (inclusive)")
    backfill.add_argument(
        "--dataset",
        action="append",
        type=dataset_name,
        metavar="NAME",
        help="a contract dataset (repeatable; default all)",
    )
    backfill.add_argument("--org", type=org_uuid, help="only this organisation (uuid)")
    backfill.set_defaults(func=cmd_backfill)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """Exits 2 when a dataset failed, 3 when dead letters are exhausted."""
    success, run_id, rows = run_microbatch()
    return report_run("micro-batch", success, run_id, rows)


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    if args.end < args.start:
        raise CliError(f"--end {args.end} is before --start {args.start}")
    days = (args.end - args.start).days + 1
    print(f"backfill {args.start} .. {args.end} ({days} days), one Dagster run ...", flush=True)
    success, run_id, rows = run_backfill_range(args.start, args.end, args.dataset, args.org)
    return report_run(f"backfill {args.start} .. {args.end}", success, run_id, rows)
