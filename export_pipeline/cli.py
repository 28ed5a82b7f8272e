"""`export-pipeline`: the command line.

Every subcommand exits non-zero with a one-line error on failure. Runs go through Dagster (the
same job a schedule launches) and are recorded in the instance under ``DAGSTER_HOME``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import sys
import threading
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from export_pipeline import terminal
from export_pipeline.config import (
    ConfigError,
    Settings,
    ensure_dagster_home,
    environment,
    redact_dsn,
)
from export_pipeline.contract import DATASETS, Dataset

if TYPE_CHECKING:
    import dagster as dg


class CliError(RuntimeError):
    """A failure to report as one line and a non-zero exit."""


def _ensure_dagster_home() -> Path:
    """DAGSTER_HOME, absolute (:func:`config.ensure_dagster_home`: the project's ``dagster_home/``
    by default, a relative value under the project root), created, and exported for Dagster."""
    home = ensure_dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@contextmanager
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    """The Dagster instance under DAGSTER_HOME, its storage created under an exclusive file lock.

    On a new DAGSTER_HOME the first open creates the sqlite tables; two commands started at once
    (a manual run during the first scheduled one) would both create them, and one would crash
    with ``table ... already exists``. Opening is serialised; using the instance is not.
    """
    home = _ensure_dagster_home()
    import dagster as dg

    with open(home / ".instance.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            instance = dg.DagsterInstance.get()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    with instance:
        yield instance


def _source_dsn(settings: Settings) -> str:
    """The source to read, as a read-only, named, time-bounded session (source_session)."""
    if settings.source_dsn:
        return settings.source_session_dsn(settings.source_dsn)
    from export_pipeline.source import embedded_postgres

    return settings.source_session_dsn(embedded_postgres())


#: The flag that lets `source init|seed` and `demo` write to EXPORT_SOURCE_DSN's database.
OWN_DATABASE_FLAG = "--i-own-this-database"


def _writable_source_dsn(args: argparse.Namespace, settings: Settings) -> str:
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


# --- source ---------------------------------------------------------------------------------


def cmd_source_init(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline.source import create_source_schema

    dsn = _writable_source_dsn(args, settings)
    create_source_schema(dsn)
    print(f"source schema ready in {redact_dsn(dsn)}")
    return 0


def cmd_source_seed(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline.source import create_source_schema, seed_source

    dsn = _writable_source_dsn(args, settings)
    create_source_schema(dsn)
    report = seed_source(
        dsn, scale=args.scale, days=args.days, violations=args.violations, seed=args.seed
    )
    for table, rows in report.rows.items():
        print(f"  {table:<28} {rows:>10,} rows")
    if report.violations:
        total = sum(sum(kinds.values()) for kinds in report.violations.values())
        print(f"  planted contract violations: {total}")
    return 0


# --- run ------------------------------------------------------------------------------------


def launch(
    job_name: str,
    *,
    partition_key: str | None = None,
    tags: dict[str, str] | None = None,
    datasets: Sequence[str] | None = None,
    log_level: str = "WARNING",
) -> tuple[bool, str, list[dict]]:
    """Run a job of the code location in this process, recorded in the Dagster instance as a run
    of workspace.yaml's code location, as the schedule's are (:func:`_execute_as_location_run`).

    Returns (success, run id, the ledger rows the run wrote).
    """
    from export_pipeline.defs.liveness import reap_dead_runs

    # The instance records every event; the console shows only what is asked for, and nothing
    # unless --verbose (a failure is reported by runreport, its stack logged).
    console = {"log_level": log_level if terminal.verbose() else "CRITICAL"}
    with dagster_instance() as instance:
        for dead in reap_dead_runs(instance):
            print(f"marked run {dead} failed: its process is gone (killed or crashed)")
        success, run_id = _execute_as_location_run(
            instance,
            job_name,
            run_config={"loggers": {"console": {"config": console}}},
            tags=tags or {},
            partition_key=partition_key,
            assets=list(datasets or []),
        )
    return success, run_id, _ledger_for_run(run_id)


def _execute_as_location_run(
    instance: dg.DagsterInstance,
    job_name: str,
    *,
    run_config: dict[str, Any],
    tags: dict[str, str],
    partition_key: str | None,
    assets: Sequence[str],
) -> tuple[bool, str]:
    """Create the run as the webserver creates a launched one, then execute it in this process.

    The UI places a run by its code-location origin (``remote_job_origin``): the Overview
    timeline drops a run without one, and the job's page, the Runs list and "Re-execute" use it.
    A run of ``execute_in_process`` has none. So the run is created with the origin of the code
    location workspace.yaml describes (the one `make ui` serves: location
    ``export_pipeline.definitions``, repository ``__repository__``), built without starting a
    gRPC server, and with the job as that code location loads it (same snapshot); it then runs
    here with the job's own executor (in-process), as a run worker would. Ctrl-C or SIGTERM
    still mark it failed.

    Dagster's private API, confined to this function; checked against Dagster 1.13.27.
    """
    import dagster as dg
    from dagster._core.execution.api import execute_run
    from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
    from dagster._core.workspace.load import location_origins_from_yaml_paths
    from dagster._grpc.server import LoadedRepositories

    from export_pipeline.config import PROJECT_ROOT

    (location,) = location_origins_from_yaml_paths([str(PROJECT_ROOT / "workspace.yaml")])
    # What the code server of that location does to load it (dagster/_grpc/server.py).
    loaded = LoadedRepositories(
        location.loadable_target_origin,
        container_image=None,
        entry_point=["dagster"],
        container_context={},
        code_location_name=location.location_name,
    )
    ((repository_name, repository),) = loaded.reconstructables_by_name.items()
    load_data = repository.get_definition().repository_load_data
    job = repository.get_reconstructable_job(job_name).with_repository_load_data(load_data)
    asset_keys = [dg.AssetKey(name) for name in assets]
    job_def = job.get_definition()
    if partition_key:
        tags = {**job_def.get_tags_for_partition_key(partition_key, asset_keys or None), **tags}
    run = instance.create_run_for_job(
        job_def=job_def,
        run_config=run_config,
        tags={**job_def.run_tags, **tags},
        asset_selection=frozenset(asset_keys) if asset_keys else None,
        remote_job_origin=RemoteJobOrigin(
            RemoteRepositoryOrigin(location, repository_name), job_name
        ),
        job_code_origin=job.get_python_origin(),
        repository_load_data=load_data,
    )
    result = execute_run(job, run, instance)
    return result.success, run.run_id


def run_microbatch() -> tuple[bool, str, list[dict]]:
    """One micro-batch of every dataset through Dagster; (success, run id, ledger rows)."""
    today = datetime.now(UTC).date().isoformat()
    return launch("export_microbatch_job", partition_key=today)


def run_backfill_range(
    first: date, last: date, datasets: Sequence[str] | None, org_id: str | None
) -> tuple[bool, str, list[dict]]:
    """Re-extract UTC days first..last as one Dagster run over that partition range."""
    from export_pipeline.defs.assets import ORG_TAG

    tags = {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
    if org_id:
        tags[ORG_TAG] = org_id
    return launch("export_backfill_job", tags=tags, datasets=datasets, log_level="INFO")


def _ledger_for_run(run_id: str) -> list[dict]:
    from export_pipeline.warehouse import fetch_dicts, open_warehouse

    with open_warehouse(Settings.from_env().warehouse_path) as con:
        return fetch_dicts(
            con,
            "SELECT * FROM _export_batches WHERE run_id = $run_id ORDER BY started_at",
            {"run_id": run_id},
        )


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


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """Exits 2 when a dataset failed, 3 when dead letters are exhausted."""
    success, run_id, rows = run_microbatch()
    return report_run("micro-batch", success, run_id, rows)


def _day(text: str) -> date:
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


def _org(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an org uuid") from None


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    if args.end < args.start:
        raise CliError(f"--end {args.end} is before --start {args.start}")
    days = (args.end - args.start).days + 1
    print(f"backfill {args.start} .. {args.end} ({days} days), one Dagster run ...", flush=True)
    success, run_id, rows = run_backfill_range(args.start, args.end, args.dataset, args.org)
    return report_run(f"backfill {args.start} .. {args.end}", success, run_id, rows)


# --- status ---------------------------------------------------------------------------------


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
            extract.connect(_source_dsn(settings)) as src,
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
    line["sla_breached"] = not lag.passed
    return line


def _json_default(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Exits 3 when a dataset breaches the lag SLA or has exhausted dead letters (usable from
    cron or a monitor)."""
    rows = dataset_status(settings)
    breached = [r["dataset"] for r in rows if r["sla_breached"] and not r["error"]]
    failing = [r["dataset"] for r in rows if r["error"]]
    if args.json:
        print(json.dumps(rows, default=_json_default, indent=2))
    else:
        print(f"warehouse: {settings.warehouse_path}   lag SLA: {settings.lag_sla_seconds:g}s")
        print(
            f"  {'dataset':<24} {'rows':>10} {'watermark':<26} {'last batch':<10} "
            f"{'lag s':>8} {'SLA':<8} {'open DL':>7} {'exhausted':>9}"
        )
        for r in rows:
            watermark = r["watermark"].isoformat(timespec="seconds") if r["watermark"] else "-"
            rows_text = f"{r['rows']:>10,}" if r["rows"] is not None else f"{'-':>10}"
            lag = f"{r['lag_seconds']:.0f}" if r["lag_seconds"] is not None else "-"
            sla = "ERROR" if r["error"] else "BREACHED" if r["sla_breached"] else "ok"
            print(
                f"  {r['dataset']:<24} {rows_text} {watermark:<26} "
                f"{r['last_batch_status'] or '-':<10} {lag:>8} "
                f"{sla:<8} {r['open_dead_letters']:>7,} "
                f"{r['exhausted_dead_letters']:>9,}"
            )
            if r["error"]:
                print(f"    error: {r['error']}")
            if r["last_batch_status"] == "failed" and r["last_batch_error"]:
                since = r["failing_since"].isoformat(timespec="seconds")
                good = r["last_success_at"]
                good = good.isoformat(timespec="seconds") if good else "never"
                print(f"    failing since {since} (last success {good}): {r['last_batch_error']}")
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


# --- demo -----------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline import extract
    from export_pipeline.source import create_source_schema, seed_source

    dsn = _writable_source_dsn(args, settings)
    print(f"1. source: PostgreSQL at {redact_dsn(dsn)}")
    create_source_schema(dsn)
    report = seed_source(dsn, scale=args.scale, days=args.days, violations=True)
    planted = sum(sum(k.values()) for k in report.violations.values())
    print(
        f"2. seeded {sum(report.rows.values()):,} source rows over {args.days} days "
        f"(scale {args.scale}), with {planted} planted contract violations"
    )
    print("3. exporting all five datasets through Dagster (job export_microbatch_job) ...")
    success, run_id, batches = run_microbatch()
    report_run("the demo's export", success, run_id, batches)  # raises if a dataset failed
    print("4. warehouse against source (in-scope rows = warehouse rows + dead-lettered rows):")
    from export_pipeline.relations import source_dataset

    with extract.connect(settings.source_session_dsn(dsn)) as src:
        in_scope = {
            ds.name: extract.count_in_scope(src, source_dataset(ds, settings)) for ds in DATASETS
        }
    from export_pipeline.warehouse import fetch_dicts, open_warehouse

    with open_warehouse(settings.warehouse_path) as con:
        for ds in DATASETS:
            ((rows,),) = con.execute(f'SELECT count(*) FROM "{ds.name}"').fetchall()
            ((dead,),) = con.execute(
                "SELECT count(*) FROM dx_dead_letter WHERE dataset = $d AND status = 'open'",
                {"d": ds.name},
            ).fetchall()
            mark = "ok" if in_scope[ds.name] == rows + dead else "MISMATCH"
            print(
                f"  {ds.name:<24} source {in_scope[ds.name]:>8,}  warehouse {rows:>8,}  "
                f"dead-lettered {dead:>4,}  {mark}"
            )
        reasons = fetch_dicts(
            con,
            "SELECT reason, count(*) AS n FROM dx_dead_letter WHERE status = 'open' "
            "GROUP BY ALL ORDER BY n DESC",
        )
    print("5. dead letters by reason: " + ", ".join(f"{r['reason']} {r['n']}" for r in reasons))
    print(
        f"""
warehouse file:  {settings.warehouse_path}   (the pipeline's; it holds the write lock)
Delta lake:      {settings.lake_uri}/<dataset>   (one Delta table each: polars.scan_delta, deltalake)
for analysts:    make sql   (DuckDB {_duckdb_version()} shell on {settings.data_dir / "analytics.duckdb"}; never blocks a run)
query it:        .venv/bin/export-pipeline query "SELECT status, count(*) AS runs FROM dx_operation_runs_v1 GROUP BY ALL ORDER BY runs DESC"
status:          .venv/bin/export-pipeline status
reconcile:       .venv/bin/export-pipeline reconcile
Dagster UI:      make ui   (then open http://127.0.0.1:3000; run {run_id} is in its run history)"""  # noqa: E501
    )
    return 0


def _duckdb_version() -> str:
    import duckdb

    return duckdb.__version__


# --- entry point ----------------------------------------------------------------------------


def _own_database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        OWN_DATABASE_FLAG,
        dest="own_database",
        metavar="DBNAME",
        help="write to EXPORT_SOURCE_DSN's database (it must be named DBNAME); by default only "
        "the embedded PostgreSQL is written to",
    )


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

    source = sub.add_parser("source", help="the reference source database")
    source_sub = source.add_subparsers(dest="source_command", required=True)
    init = source_sub.add_parser("init", help="create the reference source schema (ops, entities)")
    _own_database_option(init)
    init.set_defaults(func=cmd_source_init)
    seed = source_sub.add_parser("seed", help="fill the source with realistic synthetic data")
    seed.add_argument(
        "--scale", type=terminal.positive_float, default=0.01, help="1 = 1M runs (default 0.01)"
    )
    seed.add_argument(
        "--days", type=terminal.positive_int, default=7, help="days of history (default 7)"
    )
    seed.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    seed.add_argument(
        "--violations", action="store_true", help="plant a small known set of contract violations"
    )
    _own_database_option(seed)
    seed.set_defaults(func=cmd_source_seed)

    run = sub.add_parser("run", help="one micro-batch of all datasets, through Dagster")
    run.set_defaults(func=cmd_run)

    backfill = sub.add_parser(
        "backfill", help="re-extract a window of UTC days, as one Dagster run (idempotent)"
    )
    backfill.add_argument("--start", type=_day, required=True, help="first day, YYYY-MM-DD")
    backfill.add_argument("--end", type=_day, required=True, help="last day (inclusive)")
    backfill.add_argument(
        "--dataset",
        action="append",
        type=dataset_name,
        metavar="NAME",
        help="a contract dataset (repeatable; default all)",
    )
    backfill.add_argument("--org", type=_org, help="only this organisation (uuid)")
    backfill.set_defaults(func=cmd_backfill)

    status = sub.add_parser("status", help="per dataset: watermark, rows, last batch, dead letters")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    demo = sub.add_parser("demo", help="seed the embedded source and export it (make demo)")
    demo.add_argument(
        "--scale", type=terminal.positive_float, default=0.01, help="seed scale (default 0.01)"
    )
    demo.add_argument(
        "--days", type=terminal.positive_int, default=7, help="days of history (default 7)"
    )
    _own_database_option(demo)
    demo.set_defaults(func=cmd_demo)

    for register in _command_modules():
        register(sub)
    return parser


def _command_modules() -> list:
    """``register`` functions of the modules in ``export_pipeline/commands/``."""
    import importlib
    import pkgutil

    from export_pipeline import commands

    registers = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "register"):
            registers.append(module.register)
    return registers


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
