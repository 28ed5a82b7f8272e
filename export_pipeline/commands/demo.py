"""`export-pipeline demo`: seed the embedded source, export it, and show what happened."""

from __future__ import annotations

import argparse

from export_pipeline import terminal
from export_pipeline.commands.common import own_database_option, report_run, writable_source_dsn
from export_pipeline.config import Settings, redact_dsn
from export_pipeline.contract import DATASETS
from export_pipeline.launcher import run_microbatch

HELP_ORDER = 3


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="seed the embedded source and export it (make demo)")
    demo.add_argument(
        "--scale", type=terminal.positive_float, default=0.01, help="seed scale (default 0.01)"
    )
    demo.add_argument(
        "--days", type=terminal.positive_int, default=7, help="days of history (default 7)"
    )
    own_database_option(demo)
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline import extract
    from export_pipeline.source import create_source_schema, seed_source

    dsn = writable_source_dsn(args, settings)
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
