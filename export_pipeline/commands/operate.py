"""`export-pipeline reconcile` and `export-pipeline dead-letter ...`: operators' commands."""

from __future__ import annotations

import argparse
import json
from datetime import date

from export_pipeline.commands import dead_letter_list
from export_pipeline.config import Settings
from export_pipeline.contract import dataset


def register(sub: argparse._SubParsersAction) -> None:
    from export_pipeline.cli import _day, dataset_name

    reconcile = sub.add_parser(
        "reconcile",
        help="compare source and warehouse per UTC day, repair drift; non-zero if checks fail",
    )
    when = reconcile.add_mutually_exclusive_group()
    when.add_argument("--date", type=_day, help="one UTC day (YYYY-MM-DD)")
    when.add_argument("--start", type=_day, help="first day of a range (with --end)")
    reconcile.add_argument("--end", type=_day, help="last day of the range (inclusive)")
    reconcile.add_argument(
        "--no-repair", action="store_true", help="only report; do not re-extract drifted buckets"
    )
    reconcile.set_defaults(func=cmd_reconcile)

    letters = sub.add_parser("dead-letter", help="list, replay or resolve dead letters")
    letters_sub = letters.add_subparsers(dest="dead_letter_command", required=True)
    listing = letters_sub.add_parser("list", help="dead letters, newest first, a page at a time")
    dead_letter_list.add_arguments(listing)
    listing.set_defaults(func=dead_letter_list.cmd_dead_letter_list)
    replay = letters_sub.add_parser("replay", help="re-read from the source and re-validate now")
    target = replay.add_mutually_exclusive_group(required=True)
    target.add_argument("--id", help="one dead letter")
    target.add_argument(
        "--dataset", type=dataset_name, help="every open or exhausted letter of a dataset"
    )
    replay.set_defaults(func=cmd_dead_letter_replay)
    resolve = letters_sub.add_parser(
        "resolve", help="close a letter: an operator's decision (again: the note is appended)"
    )
    resolve.add_argument("--id", required=True, help="the dead letter id")
    resolve.add_argument("--note", required=True, help="why (recorded with the letter)")
    resolve.set_defaults(func=cmd_dead_letter_resolve)


def _days(args: argparse.Namespace) -> tuple[date, date] | None:
    from export_pipeline.cli import CliError

    if args.date:
        return args.date, args.date
    if args.start or args.end:
        if not (args.start and args.end):
            raise CliError("--start and --end go together")
        if args.end < args.start:
            raise CliError(f"--end {args.end} is before --start {args.start}")
        return args.start, args.end
    return None


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline.cli import CliError, launch
    from export_pipeline.defs.operations import (
        RECONCILE_END_TAG,
        RECONCILE_REPAIR_TAG,
        RECONCILE_START_TAG,
    )
    from export_pipeline.reconcile import trailing_days
    from export_pipeline.warehouse import fetch_dicts, open_warehouse

    days = _days(args)
    if days is None:
        trailing = trailing_days(settings.reconcile_days)
        days = (trailing[0], trailing[-1])
    tags = {
        RECONCILE_START_TAG: days[0].isoformat(),
        RECONCILE_END_TAG: days[1].isoformat(),
        RECONCILE_REPAIR_TAG: "false" if args.no_repair else "true",
    }
    print(f"reconciling {days[0]} .. {days[1]}{' (no repair)' if args.no_repair else ''} ...")
    success, run_id, _ledger = launch("reconcile_job", tags=tags)
    with open_warehouse(settings.warehouse_path, lock_timeout_seconds=60) as con:
        results = fetch_dicts(
            con,
            "SELECT dataset, day, org_id, check_name, observed, expected, passed, details "
            "FROM dx_reconciliation_results WHERE run_id = $run_id "
            "ORDER BY dataset, check_name, day, org_id",
            {"run_id": run_id},
        )
    if not results:
        raise CliError(f"reconciliation run {run_id} recorded no results; see the Dagster logs")
    print(f"  {'dataset':<24} {'check':<20} {'results':>7} {'failing':>7} {'repaired days':>13}")
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["dataset"], r["check_name"]), []).append(r)
    for (name, check), rows in groups.items():
        failing = [r for r in rows if not r["passed"]]
        repaired = [r for r in rows if "repaired" in json.loads(r["details"] or "{}")]
        print(f"  {name:<24} {check:<20} {len(rows):>7} {len(failing):>7} {len(repaired):>13}")
        for r in failing[:5]:
            print(
                f"    FAILED {r['day']} {r['org_id'] or ''} observed {r['observed']} "
                f"expected {r['expected']}"
            )
    failing_total = sum(not r["passed"] for r in results)
    if failing_total or not success:
        raise CliError(f"{failing_total} reconciliation checks still fail (run {run_id})")
    print(f"all {len(results)} checks passed (run {run_id})")
    return 0


def cmd_dead_letter_replay(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline.cli import CliError, _source_dsn
    from export_pipeline.dead_letters import letter, retry_dead_letters
    from export_pipeline.warehouse import open_warehouse, run_sql

    dsn = _source_dsn(settings)
    with open_warehouse(settings.warehouse_path, lock_timeout_seconds=60) as con:
        if args.id:
            found = letter(con, args.id)
            if found is None:
                raise CliError(f"no dead letter with id {args.id}")
            targets = {found["dataset"]: [found["record_key"]]}
        else:
            ds = dataset(args.dataset)
            keys = run_sql(
                con,
                "SELECT DISTINCT record_key::VARCHAR FROM dx_dead_letter WHERE dataset = $d "
                "AND status <> 'resolved'",
                {"d": ds.name},
            )
            targets = {ds.name: [k for (k,) in keys]}
        for name, letter_keys in targets.items():
            outcome = retry_dead_letters(
                dataset(name), source_dsn=dsn, con=con, settings=settings, keys=letter_keys
            )
            print(
                f"{name}: replayed {outcome.retried}: {outcome.resolved} resolved, "
                f"{outcome.still_open} still open, {outcome.exhausted} exhausted"
            )
            from export_pipeline import lake

            lake.sync(con, lake.lake_for(settings), (dataset(name),))  # rows now loaded
    return 0


def cmd_dead_letter_resolve(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline.cli import CliError
    from export_pipeline.dead_letters import resolve
    from export_pipeline.warehouse import open_warehouse

    with open_warehouse(settings.warehouse_path, lock_timeout_seconds=60) as con:
        if not resolve(con, args.id, args.note):
            raise CliError(f"no dead letter with id {args.id}")
    print(f"dead letter {args.id} resolved: {args.note}")
    return 0
