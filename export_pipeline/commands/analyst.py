"""Analysts' commands: `publish` (bring the lake up to date), `query`, `contract docs`."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import date, datetime
from decimal import Decimal

from export_pipeline.config import Settings


def register(sub: argparse._SubParsersAction) -> None:
    publish = sub.add_parser(
        "publish",
        help="bring the Delta lake up to date with the warehouse, compare them whole, and "
        "refresh analytics.duckdb",
    )
    publish.add_argument(
        "--rebuild", action="store_true", help="rewrite every lake table from the warehouse"
    )
    publish.set_defaults(func=cmd_publish)

    query = sub.add_parser("query", help="run a read-only SQL query over the lake's views")
    query.add_argument("sql", help='e.g. "SELECT * FROM runs_per_day ORDER BY day"')
    query.add_argument("--format", choices=("table", "csv", "json"), default="table")
    query.add_argument(
        "--version",
        action="append",
        type=_dataset_version,
        metavar="DATASET=N",
        help="read an older Delta version of a dataset (time travel; repeatable)",
    )
    query.set_defaults(func=cmd_query)

    contract = sub.add_parser("contract", help="the export contract as documents")
    contract_sub = contract.add_subparsers(dest="contract_command", required=True)
    docs = contract_sub.add_parser("docs", help="generate docs/contract_v1.md from the code")
    docs.add_argument(
        "--check", action="store_true", help="fail if the committed file differs from the code"
    )
    docs.set_defaults(func=cmd_contract_docs)


def _dataset_version(text: str) -> tuple[str, int]:
    from export_pipeline.commands.common import dataset_name

    name, sep, number = text.partition("=")
    if not sep or not number.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected DATASET=VERSION, e.g. runs=3")
    return dataset_name(name.strip()), int(number)


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    import duckdb

    from export_pipeline import analytics, lake
    from export_pipeline.commands.common import CliError
    from export_pipeline.contract import DATASETS
    from export_pipeline.warehouse import open_warehouse

    if not settings.warehouse_path.exists():
        raise CliError(f"no warehouse at {settings.warehouse_path} yet: run `export-pipeline run`")
    target = lake.lake_for(settings)
    failed = []
    try:
        with open_warehouse(settings.warehouse_path) as con:
            if args.rebuild:
                for ds in DATASETS:
                    lake.request_rewrite(con, ds)
            print(f"{'dataset':<24} {'version':>7} {'commit':<9} {'rows':>9}  check")
            for ds in DATASETS:
                synced = lake.sync(con, target, (ds,))
                check = lake.check_table(con, target, ds)
                if not check.passed:
                    failed.append(ds.name)
                kind = (synced[0].kind if synced else None) or "-"
                version = "-" if check.version is None else str(check.version)
                print(
                    f"{ds.name:<24} {version:>7} {kind:<9} {check.lake_rows:>9,}  "
                    f"{'ok' if check.passed else 'MISMATCH'}"
                )
    except duckdb.IOException as exc:
        first = str(exc).splitlines()[0]
        raise CliError(f"warehouse {settings.warehouse_path} is busy: {first}") from None
    catalog = analytics.refresh_catalog(settings.data_dir, lake=target)
    print(f"lake:      {target.root}")
    if catalog.path is not None:
        print(f"analytics: {analytics.analytics_path(settings.data_dir)} -> {catalog.path.name}")
    if failed:
        raise CliError(f"lake does not match the warehouse for: {', '.join(failed)}")
    return 0


def _plain(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def cmd_query(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline.analytics import QueryError, run_query
    from export_pipeline.commands.common import CliError
    from export_pipeline.lake import lake_for

    try:
        names, rows = run_query(
            settings.data_dir,
            args.sql,
            lake=lake_for(settings),
            versions=dict(args.version or []),
        )
    except QueryError as exc:
        raise CliError(str(exc)) from None
    if args.format == "json":
        records = [{n: _plain(v) for n, v in zip(names, row, strict=True)} for row in rows]
        print(json.dumps(records, indent=2))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([["" if v is None else _plain(v) for v in row] for row in rows])
    else:
        print(_table(names, rows))
    return 0


def _table(names: list[str], rows: list[tuple]) -> str:
    cells = [["NULL" if v is None else str(_plain(v)) for v in row] for row in rows]
    widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]

    def line(values: list[str]) -> str:
        return " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out = [line(names), "-+-".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def cmd_contract_docs(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline.commands.common import CliError
    from export_pipeline.contract_docs import DICTIONARY_PATH, render_dictionary

    text = render_dictionary()
    if args.check:
        committed = DICTIONARY_PATH.read_text(encoding="utf-8") if DICTIONARY_PATH.exists() else ""
        if committed != text:
            raise CliError(
                f"{DICTIONARY_PATH.name} differs from contract.py: "
                "run `export-pipeline contract docs` and commit it"
            )
        print(f"{DICTIONARY_PATH} is up to date")
        return 0
    DICTIONARY_PATH.parent.mkdir(parents=True, exist_ok=True)
    DICTIONARY_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {DICTIONARY_PATH}")
    return 0
