"""`export-pipeline status`: per dataset, rows, watermark, last batch, lag and dead letters."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from export_pipeline import terminal
from export_pipeline.commands.common import CliError, json_default, source_dsn
from export_pipeline.config import Settings
from export_pipeline.contract import DATASETS, Dataset

HELP_ORDER = 2


def register(sub: argparse._SubParsersAction) -> None:
    status = sub.add_parser("status", help="per dataset: watermark, rows, last batch, dead letters")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)


def dataset_status(settings: Settings) -> list[dict]:
    """Per dataset: rows, watermark, last batch, last success, dead letters, lag against the SLA.

    Every dataset gets its line: one whose relation is missing or unreadable, or whose table
    the warehouse lacks, carries the error (``error``) instead of stopping the others. Each line
    also says whether the micro-batch window is held back on the source now, and why.
    """
    from export_pipeline import extract, source_session
    from export_pipeline.warehouse import WarehouseBusyError, open_warehouse

    path = settings.warehouse_path
    if not path.exists():
        raise CliError(f"no warehouse at {path} yet: run `export-pipeline run` first")
    try:
        with (
            open_warehouse(path, read_only=True, lock_timeout_seconds=30) as con,
            extract.connect(source_dsn(settings)) as src,
        ):
            horizon = source_session.read_horizon(src)
            out = []
            for ds in DATASETS:
                row = _dataset_line(ds, con, src, settings)
                row["window_held_back"] = horizon.held_back
                row["window_blind_spot"] = horizon.blind_spot
                row["source_is_standby"] = horizon.standby
                out.append(row)
            return out
    except WarehouseBusyError as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:  # the source is down or refuses us: say so on one line
        from export_pipeline.batch import is_transient, scrub

        if not (is_transient(exc) or source_session.is_source_error(exc)):
            raise
        raise CliError(f"source unreachable: {scrub(str(exc), settings.source_dsn)}") from None


def _dataset_line(ds: Dataset, con: Any, src: Any, settings: Settings) -> dict:
    """One dataset's status; an error of its own (missing relation, ...) goes on its line."""
    import duckdb

    from export_pipeline import extract, source_session
    from export_pipeline.batch import scrub
    from export_pipeline.reconcile import lag_check
    from export_pipeline.sqlfiles import read_sql
    from export_pipeline.warehouse import fetch_dicts

    try:
        (health,) = fetch_dicts(
            con, read_sql("warehouse", "select_dataset_health.sql"), {"d": ds.name}
        )
    except duckdb.Error as exc:  # a ledger of an earlier release, before its first new run
        health = dict.fromkeys(
            ("watermark", "last_batch_status", "last_batch_at", "last_batch_error")
            + ("last_success_at", "failing_since", "last_window_note")
            + ("open_dead_letters", "exhausted_dead_letters")
        )
        health["open_dead_letters"] = health["exhausted_dead_letters"] = 0
        ledger_error: str | None = (
            f"cannot read the ledger ({' '.join(str(exc).split())[:200]}); a warehouse of an "
            "earlier release is upgraded by its next `export-pipeline run`"
        )
    else:
        ledger_error = None
    line: dict[str, Any] = {
        "dataset": ds.name,
        "rows": None,
        "watermark": health["watermark"],
        "last_batch_status": health["last_batch_status"],
        "last_batch_at": health["last_batch_at"],
        "last_batch_error": health["last_batch_error"],
        "last_success_at": health["last_success_at"],
        "failing_since": health["failing_since"],
        "last_window_note": health["last_window_note"],
        "open_dead_letters": health["open_dead_letters"],
        "exhausted_dead_letters": health["exhausted_dead_letters"],
        "lag_seconds": None,
        "source_relative_lag_seconds": None,
        "seconds_since_last_successful_batch": None,
        "sla_seconds": settings.lag_sla_seconds,
        "sla_breached": True,
        "error": ledger_error,
    }
    if ledger_error:
        return line
    try:
        ((line["rows"],),) = con.execute(f'SELECT count(*) FROM "{ds.name}"').fetchall()
        from export_pipeline.relations import source_dataset

        read = source_dataset(ds, settings)  # the relation configured for ds
        source_session.check_readable(
            src, read.source_table, [c.source_name for c in read.source_columns], ds.name
        )
        extract.check_source_schema(src, read)
        lag = lag_check(ds, src, con, settings, datetime.now(UTC).date())
    except Exception as exc:
        from export_pipeline.batch import is_transient

        if is_transient(exc) and not source_session.is_source_error(exc):
            raise
        src.rollback()  # an error aborts the source transaction: start a guarded new one
        source_session.guard(src)
        line["error"] = " ".join(scrub(str(exc), settings.source_dsn).split())
        return line
    line["lag_seconds"] = lag.details["lag_seconds"]
    line["source_relative_lag_seconds"] = lag.details["source_relative_lag_seconds"]
    line["seconds_since_last_successful_batch"] = lag.details["seconds_since_last_successful_batch"]
    line["sla_breached"] = not lag.passed
    return line


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Exits 3 when a dataset breaches the lag SLA or has exhausted dead letters (usable from
    cron or a monitor)."""
    rows = dataset_status(settings)
    breached = [r["dataset"] for r in rows if r["sla_breached"] and not r["error"]]
    failing = [r["dataset"] for r in rows if r["error"]]
    if args.json:
        print(json.dumps(rows, default=json_default, indent=2))
    else:
        sla_s = f"{settings.lag_sla_seconds:g}s"
        print(f"warehouse: {settings.warehouse_path}   lag SLA: {sla_s}")
        print(
            f"  {'dataset':<24} {'rows':>10} {'watermark':<26} {'last batch':<10} "
            f"{'behind s':>8} {'age s':>8} {'SLA':<8} {'open DL':>7} {'exhausted':>9}"
        )
        for r in rows:
            watermark = r["watermark"].isoformat(timespec="seconds") if r["watermark"] else "-"
            rows_text = f"{r['rows']:>10,}" if r["rows"] is not None else f"{'-':>10}"
            age = f"{r['lag_seconds']:.0f}" if r["lag_seconds"] is not None else "-"
            behind_s = r["source_relative_lag_seconds"]
            behind = f"{max(behind_s, 0):.0f}" if behind_s is not None else "-"
            sla = "ERROR" if r["error"] else "BREACHED" if r["sla_breached"] else "ok"
            print(
                f"  {r['dataset']:<24} {rows_text} {watermark:<26} "
                f"{r['last_batch_status'] or '-':<10} {behind:>8} {age:>8} "
                f"{sla:<8} {r['open_dead_letters']:>7,} "
                f"{r['exhausted_dead_letters']:>9,}"
            )
            if r["error"]:
                print(f"    error: {r['error']}")
            elif r["sla_breached"]:
                print(f"    SLA breached: {_breach_reason(r, settings.lag_sla_seconds)}")
            if r["last_batch_status"] == "failed" and r["last_batch_error"]:
                since = r["failing_since"].isoformat(timespec="seconds")
                good = r["last_success_at"]
                good = good.isoformat(timespec="seconds") if good else "never"
                print(f"    failing since {since} (last success {good}): {r['last_batch_error']}")
        print(
            f"  SLA: ok while the warehouse is within {sla_s} of the source's newest row "
            f"(behind s) and a batch succeeded within {sla_s}; age s is how old the newest "
            "exported row is (a quiet source ages without breaching)"
        )
        if rows and rows[0]["window_held_back"]:
            print(f"window held back: {rows[0]['window_held_back']}")
        if rows and rows[0]["window_blind_spot"]:
            print(f"WARNING: {rows[0]['window_blind_spot']}")
    exhausted = [
        f"{r['dataset']} {r['exhausted_dead_letters']:,}"
        for r in rows
        if r["exhausted_dead_letters"]
    ]
    problems = [f"cannot check: {', '.join(failing)}"] if failing else []
    if breached:
        problems.append(f"lag SLA breached for: {', '.join(breached)}")
    if exhausted:
        problems.append(
            f"dead letters exhausted: {', '.join(exhausted)} "
            "(`export-pipeline dead-letter list --status exhausted`)"
        )
    if problems:
        print(f"export-pipeline: {'; '.join(problems)}", file=sys.stderr)
        return terminal.ExitCode.ATTENTION
    if not args.json:
        print(f"ok: {len(rows)} datasets within the lag SLA, no dead letters exhausted")
    return terminal.ExitCode.OK


def _breach_reason(row: dict, sla: float) -> str:
    """Which half of the SLA a dataset's line breaches, in seconds."""
    behind = row["source_relative_lag_seconds"]
    since = row["seconds_since_last_successful_batch"]
    reasons = []
    if behind is None and row["rows"] == 0:
        reasons.append("nothing exported yet while the source has rows")
    elif behind is not None and behind > sla:
        reasons.append(f"the warehouse is {behind:.0f}s behind the source's newest row")
    if since is None:
        reasons.append("no batch has succeeded yet")
    elif since > sla:
        reasons.append(f"the last successful batch was {since:.0f}s ago")
    return "; ".join(reasons) or "see `status --json`"
