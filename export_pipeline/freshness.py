"""Freshness for analysts: `dx_export_freshness` in their catalog, also when exports fail.

The analysts' catalog (``analytics.py``) never opens the warehouse (its lock would block runs),
so after every batch, successful or failed, the pipeline rewrites one small Parquet file with
each dataset's last good state and current failure, computed from the ledger
(``sql/warehouse/select_export_freshness.sql``), and swaps it in atomically. The catalog's view
(``sql/freshness/create_view_export_freshness.sql``) reads that file, so a failing dataset shows
up there even when no lake publish runs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import duckdb

from export_pipeline.sqlfiles import read_sql
from export_pipeline.warehouse import run_sql

log = logging.getLogger(__name__)

FRESHNESS_DIR = "freshness"
FRESHNESS_FILE = "export_freshness.parquet"


def freshness_path(data_dir: Path) -> Path:
    return data_dir / FRESHNESS_DIR / FRESHNESS_FILE


def write_freshness(con: duckdb.DuckDBPyConnection, data_dir: Path) -> None:
    """Rewrite the freshness file from the ledger; best effort (it never fails a batch)."""
    target = freshness_path(data_dir)
    tmp = target.with_name(f".{FRESHNESS_FILE}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        path = str(tmp).replace("'", "''")
        query = read_sql("warehouse", "select_export_freshness.sql")
        run_sql(con, f"COPY ({query}) TO '{path}' (FORMAT parquet)")
        os.replace(tmp, target)
    except (OSError, duckdb.Error) as exc:
        log.warning("could not write the freshness file %s: %s", target, exc)
        tmp.unlink(missing_ok=True)


def view_statements(data_dir: Path) -> list[str]:
    """The catalog's ``dx_export_freshness`` view, once the first batch wrote its file."""
    target = freshness_path(data_dir)
    if not target.exists():
        return []
    escaped = str(target.resolve()).replace("'", "''")
    source = f"read_parquet('{escaped}')"
    return [
        read_sql("freshness", "create_view_export_freshness.sql").format(freshness_source=source)
    ]
