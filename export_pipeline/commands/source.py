"""`export-pipeline source views` and `export-pipeline source check`: connecting a producer."""

from __future__ import annotations

import argparse
import json

from export_pipeline.config import Settings


def _source_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The subcommands of the existing `source` group (defined in cli.py)."""
    source = sub.choices["source"]
    return next(a for a in source._actions if isinstance(a, argparse._SubParsersAction))


def register(sub: argparse._SubParsersAction) -> None:
    from export_pipeline.source_views import DEFAULT_ROLE, DEFAULT_SCHEMA, PROFILES

    source_sub = _source_subparsers(sub)
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


def cmd_source_views(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline.source_views import view_script

    print(view_script(args.profile, args.schema, args.role), end="")
    return 0


def cmd_source_check(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline.cli import _json_default, _source_dsn
    from export_pipeline.source_check import check_source, render_report

    report = check_source(_source_dsn(settings), settings)
    if args.json:
        print(json.dumps(report.as_dict(), default=_json_default, indent=2))
    else:
        print(render_report(report))
    return 1 if report.blocking else 0
