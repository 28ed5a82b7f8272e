"""`export-pipeline source ...`: the reference source (init, seed) and connecting a producer's
database (views, check)."""

from __future__ import annotations

import argparse
import json

from export_pipeline import terminal
from export_pipeline.commands.common import (
    json_default,
    own_database_option,
    source_dsn,
    writable_source_dsn,
)
from export_pipeline.config import Settings, redact_dsn

HELP_ORDER = 4


def register(sub: argparse._SubParsersAction) -> None:
    from export_pipeline.source_views import DEFAULT_ROLE, DEFAULT_SCHEMA, PROFILES

    source = sub.add_parser("source", help="the source database: reference schema, views, check")
    source_sub = source.add_subparsers(dest="source_command", required=True)
    init = source_sub.add_parser("init", help="create the reference source schema (ops, entities)")
    own_database_option(init)
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
    own_database_option(seed)
    seed.set_defaults(func=cmd_source_seed)
    views = source_sub.add_parser(
        "views",
        help="print the SQL a producer's DBA runs to create the contract views (runs nothing)",
    )
    views.add_argument("--profile", required=True, choices=sorted(PROFILES))
    views.add_argument(
        "--schema", default=DEFAULT_SCHEMA, help=f"schema of the views (default {DEFAULT_SCHEMA})"
    )
    views.add_argument(
        "--role",
        default=DEFAULT_ROLE,
        help=f"read-only login role of the exporter, granted SELECT (default {DEFAULT_ROLE})",
    )
    views.set_defaults(func=cmd_source_views)

    check = source_sub.add_parser(
        "check",
        help="per dataset: relation, columns, index use, RLS, privileges, standby, pooling; "
        "non-zero when something blocks an export",
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(func=cmd_source_check)


def cmd_source_init(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline.source import create_source_schema

    dsn = writable_source_dsn(args, settings)
    create_source_schema(dsn)
    print(f"source schema ready in {redact_dsn(dsn)}")
    return 0


def cmd_source_seed(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline.source import create_source_schema, seed_source

    dsn = writable_source_dsn(args, settings)
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


def cmd_source_views(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline.source_views import view_script

    print(view_script(args.profile, args.schema, args.role), end="")
    return 0


def cmd_source_check(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline.source_check import check_source, render_report

    report = check_source(source_dsn(settings), settings)
    if args.json:
        print(json.dumps(report.as_dict(), default=json_default, indent=2))
    else:
        print(render_report(report))
    return 1 if report.blocking else 0
