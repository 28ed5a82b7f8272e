"""The contract as documents: the data dictionary, the released snapshot, and breaking changes.

- :func:`render_dictionary` writes ``docs/contract_v1.md`` from ``contract.py`` (never by hand).
- :func:`snapshot` is the contract's shape as JSON; ``contract_snapshots/v1.json`` holds the
  released v1 and :func:`breaking_changes` compares the code against it (contract "Schema
  Governance": v1 allows additive, nullable columns only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from export_pipeline.config import PROJECT_ROOT
from export_pipeline.contract import (
    CONTRACT_VERSION,
    DATASETS,
    FUTURE_SKEW_SECONDS,
    NUMERIC_PRECISION,
    NUMERIC_SCALE,
    Column,
    Dataset,
)
from export_pipeline.warehouse import DUCKDB_TYPES

DICTIONARY_PATH = PROJECT_ROOT / "docs" / f"contract_{CONTRACT_VERSION}.md"
SNAPSHOT_DIR = Path(__file__).resolve().parent / "contract_snapshots"


# --- snapshot and governance ----------------------------------------------------------------


def snapshot(datasets: tuple[Dataset, ...] = DATASETS) -> dict[str, Any]:
    """The parts of the contract consumers depend on, as plain JSON data."""
    return {
        "version": CONTRACT_VERSION,
        "datasets": {
            ds.name: {
                "write_mode": ds.write_mode,
                "primary_key": list(ds.primary_key),
                "unique_guards": [list(g) for g in ds.unique_guards],
                "cursor": ds.cursor,
                "partition_by": list(ds.partition_by),
                "columns": [
                    {"name": c.name, "type": c.type, "nullable": c.nullable} for c in ds.columns
                ],
            }
            for ds in datasets
        },
    }


def load_snapshot(version: str = CONTRACT_VERSION) -> dict[str, Any]:
    return json.loads((SNAPSHOT_DIR / f"{version}.json").read_text(encoding="utf-8"))


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Every change from ``old`` to ``new`` that breaks a consumer of ``old``, named.

    Breaking: a dataset or column removed or renamed, a type changed, a nullable column made
    required, a required column added, a key, guard, write mode, cursor or partitioning changed.
    Additive: a new dataset, a new nullable column.
    """
    problems: list[str] = []
    for name, before in old["datasets"].items():
        after = new["datasets"].get(name)
        if after is None:
            problems.append(f"dataset {name} removed")
            continue
        old_cols = {c["name"]: c for c in before["columns"]}
        new_cols = {c["name"]: c for c in after["columns"]}
        added = [c for c in after["columns"] if c["name"] not in old_cols]
        for col in before["columns"]:
            cname = col["name"]
            if cname not in new_cols:
                twin = next((a for a in added if a["type"] == col["type"]), None)
                hint = f" (renamed to {twin['name']}?)" if twin else ""
                problems.append(f"{name}.{cname}: column removed{hint}")
                continue
            now = new_cols[cname]
            if now["type"] != col["type"]:
                problems.append(f"{name}.{cname}: type changed from {col['type']} to {now['type']}")
            if col["nullable"] and not now["nullable"]:
                problems.append(f"{name}.{cname}: changed from nullable to required")
        for col in added:
            if not col["nullable"]:
                problems.append(f"{name}.{col['name']}: column added as required, not nullable")
        for key in ("write_mode", "primary_key", "unique_guards", "cursor", "partition_by"):
            if before[key] != after[key]:
                problems.append(f"{name}: {key} changed from {before[key]} to {after[key]}")
    return problems


# --- data dictionary ------------------------------------------------------------------------

#: Decisions taken where the contract is silent (the README's list), per topic.
_DECISIONS = (
    (
        "Watermark",
        "the window's upper bound (`source now - safety lag`), on the source's clock, never "
        "moved backwards. A lookback (default 15 min) re-reads rows committed late; re-reading "
        "is idempotent (unchanged rows are not rewritten).",
    ),
    (
        "Append-only rows that change at the source",
        "the source wins; the row is replaced and counted as `updated`.",
    ),
    (
        "Equal `record_version`, different content",
        "the stored row stays; the incoming one is dead-lettered as `version_conflict`. Lower "
        "versions are `stale` (counted, not applied).",
    ),
    (
        "Duplicate uniqueness guard held by another key",
        "the later row is dead-lettered as `uniqueness_violation`; the first one (already "
        "stored, else earliest cursor) keeps its place.",
    ),
    (
        "Numerics",
        f"`DECIMAL({NUMERIC_PRECISION},{NUMERIC_SCALE})`, rounded to {NUMERIC_SCALE} decimals; "
        "a value that does not fit is dead-lettered as `type_cast_failed`.",
    ),
    ("uuid columns", "must be PostgreSQL `uuid` in the source; `UUID` in DuckDB and Parquet."),
    (
        "Secrets",
        "JSON keys that look like secrets (`api_key`, `token`, `secret`, `password`, ...) have "
        'their value replaced with `"[REDACTED]"`, and secret-shaped values (provider keys, '
        "JWTs, `Bearer` tokens, `password=...`, URL passwords, PEM keys) are cut out of every "
        "text column and JSON string, before anything is written.",
    ),
    (
        "Dead letters",
        "keyed by (dataset, key, reason, content): re-reading the same bad row refreshes it "
        "instead of adding a second letter.",
    ),
    (
        "Out-of-scope rows",
        "rows whose `entity_type` is `job` are outside the contract and are not extracted.",
    ),
    (
        "Lake partitioning",
        "`_date` is the date of the cursor column in UTC; partition keys live in the Hive "
        "directory names, not in the Parquet files.",
    ),
)

_WRITE_SEMANTICS = {
    "append": "append-only: a new key is inserted; a known key whose content changed at the "
    "source is replaced (the source wins); identical re-reads change nothing.",
    "upsert": "upsert snapshot: a row replaces the stored one only when its `{version}` is higher; "
    "an equal version with other content is a `version_conflict` dead letter, a lower one is "
    "`stale`.",
}


def _checks(col: Column) -> list[str]:
    checks = []
    if not col.nullable:
        checks.append("required (null -> `null_required_field`)")
    if col.allowed:
        checks.append("one of " + ", ".join(f"`{v}`" for v in col.allowed))
    if col.ge is not None:
        checks.append(f">= {col.ge:g}")
    if col.le is not None:
        checks.append(f"<= {col.le:g}")
    if col.pattern:
        checks.append(f"matches `{col.pattern}`")
    if col.not_future:
        checks.append(f"not more than {FUTURE_SKEW_SECONDS // 60} min in the future")
    return checks


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_dictionary(datasets: tuple[Dataset, ...] = DATASETS) -> str:
    """``docs/contract_v1.md``: the data dictionary, generated from ``contract.py``."""
    out = [
        f"# Export Contract {CONTRACT_VERSION}: data dictionary",
        "",
        "<!-- Generated from export_pipeline/contract.py by `export-pipeline contract docs`. "
        "Do not edit by hand: a test fails when this file differs from the code. -->",
        "",
        "Every dataset below is a DuckDB table in `$EXPORT_DATA_DIR/warehouse.duckdb`, a Delta "
        "Lake table at `$EXPORT_LAKE_URI/<dataset>` (default `$EXPORT_DATA_DIR/lake/<dataset>`) "
        "and a view in `$EXPORT_DATA_DIR/analytics.duckdb`. Warehouse tables also carry "
        "`_batch_id` and `_loaded_at` (the batch that last wrote the row, and when).",
        "",
        "What a Delta reader (Spark, Polars, deltalake, DuckDB over the files) sees: the "
        "contract's columns, with `uuid` and `jsonb` as strings (canonical text; never 16-byte "
        "binary), `numeric` as `decimal(18, 6)`, `timestamptz` as UTC microsecond timestamps, "
        "and the partition columns below as real columns (`_date` is a `date`). Entity tables "
        "hold the current version of each key (a version-guarded MERGE applies each change); "
        "the analysts' views cast uuids and JSON back to their contract types.",
        "",
        "Example queries for DuckDB, Polars and pandas, and the DuckDB version that reads the "
        "catalog: [queries.md](queries.md).",
        "",
        "Rows that fail a check are not loaded: they go to `dx_dead_letter` with the reason and "
        "the names of the failed checks (e.g. `status:allowed_values`), so that nothing is lost "
        "silently and the source can be fixed.",
        "",
        "## Datasets",
        "",
        "| dataset | write semantics | primary key | cursor | lake partitioning |",
        "|---|---|---|---|---|",
    ]
    for ds in datasets:
        out.append(
            f"| [`{ds.name}`](#{ds.name}) | {ds.write_mode} | "
            f"{', '.join(f'`{k}`' for k in ds.primary_key)} | `{ds.cursor}` | "
            f"{' / '.join(f'`{k}`' for k in ds.partition_by) or '-'} |"
        )
    for ds in datasets:
        out += ["", f"## {ds.name}", "", ds.description, ""]
        out.append(
            f"- **Source**: `{ds.source_table}` (the reference table; with "
            f"`EXPORT_SOURCE_SCHEMA=<schema>`, the contract-shaped relation `<schema>.{ds.name}`: "
            "see [the data-engine-x mapping](source_mapping_data_engine_x.md))"
        )
        out.append(f"- **Write semantics**: {_write_semantics(ds)}")
        out.append(f"- **Primary key**: {', '.join(f'`{k}`' for k in ds.primary_key)}")
        for guard in ds.unique_guards:
            out.append(
                f"- **Uniqueness guard**: ({', '.join(f'`{k}`' for k in guard)}) unique; a later "
                "row holding it under another key is dead-lettered as `uniqueness_violation`"
            )
        out.append(
            f"- **Cursor**: `{ds.cursor}` (micro-batches read `(watermark - lookback, "
            "source now - safety lag]`)"
        )
        out.append(f"- **Lake partitioning**: {_partitioning(ds)}")
        for column, values in ds.out_of_scope:
            out.append(
                f"- **Out of scope**: rows with `{column}` in "
                f"{', '.join(f'`{v}`' for v in values)} are not exported"
            )
        for critical in ds.critical_fields:
            groups = " or ".join(
                "(" + ", ".join(f"`{c}`" for c in group) + ")" for group in critical.any_of
            )
            out.append(f"- **Null-rate watched**: `{critical.name}`: present when {groups}")
        for rule in ds.row_rules:
            out.append(
                f"- **Row check** `{rule.name}`: `{rule.left}` >= `{rule.right}` when both are "
                f"present. {rule.description}"
            )
        out += [
            "",
            "| column | type | DuckDB / Parquet type | nullable | checks | description |",
            "|---|---|---|---|---|---|",
        ]
        for col in ds.columns:
            source = f" Source column `{col.source}`." if col.source else ""
            out.append(
                f"| `{col.name}` | {col.type} | `{DUCKDB_TYPES[col.type]}` | "
                f"{'yes' if col.nullable else 'no'} | {_cell('; '.join(_checks(col))) or '-'} | "
                f"{_cell(col.description + source) or '-'} |"
            )
    out += [
        "",
        "## Checks and why",
        "",
        "- **Required columns non-null, closed vocabularies, ranges, patterns**: a row that "
        "breaks them cannot be interpreted by consumers; it is dead-lettered, not loaded.",
        f"- **Timestamps not in the future** (more than {FUTURE_SKEW_SECONDS // 60} min): a "
        "future cursor would move the watermark past rows not yet written.",
        "- **`export_schema_version` is the contract version**: consumers branch on it during a "
        "dual-publish window.",
        "- **Accounting identity per batch**: `extracted = inserted + updated + unchanged + "
        "stale + dead_lettered`, or the batch does not commit.",
        "- **Lake equals warehouse**: each Delta commit holds exactly the rows it was given "
        "(count and checksum of the batch, Dagster check `lake_commit_verified`), and daily the "
        "whole table's row count and checksum match the warehouse's (`lake_matches_warehouse`).",
        "- **Additive-only governance**: a test compares the contract in code with the released "
        "snapshot (`export_pipeline/contract_snapshots/v1.json`) and fails on a removed, renamed "
        "or retyped column or a nullable column made required. New nullable columns are added "
        "to existing warehouses on the next run (`ALTER TABLE ... ADD COLUMN`, old rows null).",
        "",
        "## Choices where the contract is silent",
        "",
    ]
    out += [f"- **{topic}**: {text}" for topic, text in _DECISIONS]
    return "\n".join(out) + "\n"


def _write_semantics(ds: Dataset) -> str:
    return _WRITE_SEMANTICS[ds.write_mode].format(version=ds.version_column)


def _partitioning(ds: Dataset) -> str:
    if not ds.partition_by:
        return "none"
    parts = [
        f"`{k}=<date of {ds.cursor} in UTC>`" if k == "_date" else f"`{k}=<{k}>`"
        for k in ds.partition_by
    ]
    return "/".join(parts)
