"""Analysts' access: DuckDB catalogs of views over the lake, which never block the pipeline.

``$EXPORT_DATA_DIR/analytics.duckdb`` is a symlink to the newest catalog
``analytics/catalog-<stamp>.duckdb``: a small DuckDB file holding only views, one per contract
dataset over one *published version* of the lake (immutable paths), plus the convenience views of
``sql/analytics/``. The pipeline writes a catalog once, when it is created, and never again:

- an analyst who opens ``analytics.duckdb`` (and keeps it open for hours) never holds a lock the
  pipeline needs, and the pipeline never needs to write a file an analyst holds;
- every query on that connection reads one complete version of each dataset: never half a
  batch, never a failure because a run is writing. Reopening the file shows the newest data.

Why not views over ``lake/<dataset>`` directly: a DuckDB glob walks the partition directories one
by one, each time through the symlink, so a swap during the walk could mix two versions; and a
DuckDB view cannot choose its files at query time (table functions take constants only). Pinning
versions per catalog is what gives each reader a consistent snapshot.

A new catalog is written only when the lake versions or the view definitions (the contract, the
SQL files) changed. Old catalogs and lake versions are collected once superseded for a grace
period and no longer held open by anyone (DuckDB holds a file lock on an open database).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from export_pipeline import freshness, publish
from export_pipeline.contract import DATASETS, Dataset
from export_pipeline.extract import quote_ident
from export_pipeline.sqlfiles import SQL_ROOT
from export_pipeline.warehouse import run_sql

ANALYTICS_FILE = "analytics.duckdb"
CATALOG_DIR = "analytics"


@dataclass(frozen=True)
class CatalogResult:
    path: Path
    created: bool
    removed_catalogs: int
    removed_versions: int


def analytics_path(data_dir: Path) -> Path:
    return data_dir / ANALYTICS_FILE


def convenience_views() -> list[tuple[str, str]]:
    """(file name, SQL) of the convenience views, in file-name order."""
    files = sorted(SQL_ROOT.glob("analytics/*.sql"))
    return [(p.name, p.read_text(encoding="utf-8")) for p in files]


def view_statements(versions: dict[str, Path | None], datasets: Sequence[Dataset]) -> list[str]:
    """CREATE VIEW statements: one per dataset over the given version, then the conveniences."""
    statements = [
        f"CREATE OR REPLACE VIEW {quote_ident(ds.name)} AS "
        f"{publish.lake_select_sql(ds, versions.get(ds.name))}"
        for ds in datasets
    ]
    return statements + [sql for _, sql in convenience_views()]


def create_views(
    con: duckdb.DuckDBPyConnection,
    versions: dict[str, Path | None],
    datasets: Sequence[Dataset] = DATASETS,
) -> None:
    for statement in view_statements(versions, datasets):
        run_sql(con, statement)


def current_versions(
    data_dir: Path, datasets: Sequence[Dataset] = DATASETS
) -> dict[str, Path | None]:
    """Each dataset's published version directory, resolved now."""
    return {ds.name: publish.current_version_dir(data_dir, ds) for ds in datasets}


def is_held(path: Path) -> bool:
    """Whether some process has the DuckDB file open (DuckDB locks it, shared or exclusive).

    Uses POSIX record locks like DuckDB does; this process's own connections are not seen.
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases the probe lock
    return False


def _spec(versions: dict[str, Path | None], statements: list[str]) -> dict:
    return {
        "versions": {k: (str(v) if v else None) for k, v in sorted(versions.items())},
        "views_sha256": hashlib.sha256("\n".join(statements).encode()).hexdigest(),
    }


def _current_catalog(data_dir: Path) -> Path | None:
    link = analytics_path(data_dir)
    if not link.is_symlink():
        return None
    target = (link.parent / os.readlink(link)).resolve()
    return target if target.is_file() else None


def _sidecar(catalog: Path) -> Path:
    return catalog.with_suffix(".json")


def refresh_catalog(
    data_dir: Path,
    *,
    datasets: Sequence[Dataset] = DATASETS,
    grace_seconds: float = publish.DEFAULT_GRACE_SECONDS,
    now: datetime | None = None,
) -> CatalogResult:
    """Point ``analytics.duckdb`` at a catalog of the current lake, then collect garbage.

    Writes a new catalog only when the lake versions or the view definitions changed.
    """
    with publish.lake_lock(data_dir):
        versions = current_versions(data_dir, datasets)
        statements = view_statements(versions, datasets) + freshness.view_statements(data_dir)
        spec = _spec(versions, statements)
        current = _current_catalog(data_dir)
        created = False
        if current is None or _read_spec(current) != spec:
            current = _write_catalog(data_dir, statements, spec)
            created = True
        removed_catalogs, keep = _collect_catalogs(data_dir, current, grace_seconds, now)
        removed_versions = publish.collect_garbage(
            data_dir, tuple(datasets), keep=keep, grace_seconds=grace_seconds, now=now
        )
    return CatalogResult(current, created, removed_catalogs, len(removed_versions))


def _read_spec(catalog: Path) -> dict | None:
    try:
        return json.loads(_sidecar(catalog).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_catalog(data_dir: Path, statements: list[str], spec: dict) -> Path:
    directory = data_dir / CATALOG_DIR
    directory.mkdir(parents=True, exist_ok=True)
    for orphan in directory.glob("*.tmp*"):  # left by a crashed refresh (we hold the lock)
        orphan.unlink(missing_ok=True)
    name = f"catalog-{publish.new_version_name()[1:]}"
    final = directory / f"{name}.duckdb"
    tmp = directory / f"{name}.tmp.duckdb"
    con = duckdb.connect(str(tmp))
    try:
        for statement in statements:
            run_sql(con, statement)
        run_sql(con, "CHECKPOINT")
    finally:
        con.close()
    sidecar_tmp = directory / f"{name}.tmp.json"
    sidecar_tmp.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    os.replace(sidecar_tmp, _sidecar(final))
    os.replace(tmp, final)
    link = analytics_path(data_dir)
    tmp_link = data_dir / f".{ANALYTICS_FILE}.{uuid.uuid4().hex}.tmp"
    os.symlink(final.relative_to(data_dir), tmp_link)
    os.replace(tmp_link, link)
    return final


def _collect_catalogs(
    data_dir: Path, current: Path, grace_seconds: float, now: datetime | None
) -> tuple[int, set[Path]]:
    """Remove superseded catalogs nobody holds; return (removed, versions still referenced)."""
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=grace_seconds)
    catalogs = sorted((data_dir / CATALOG_DIR).glob("catalog-*.duckdb"))
    catalogs = [c for c in catalogs if ".tmp" not in c.name]
    keep: set[Path] = set()
    removed = 0
    for catalog, successor in zip(catalogs, [*catalogs[1:], None], strict=True):
        superseded_at = None
        if successor is not None:
            superseded_at = publish.version_time("v" + successor.stem.removeprefix("catalog-"))
        expired = superseded_at is not None and superseded_at <= cutoff
        if catalog.resolve() != current and expired and not is_held(catalog):
            for path in (catalog, _sidecar(catalog), Path(f"{catalog}.wal")):
                path.unlink(missing_ok=True)
            removed += 1
            continue
        spec = _read_spec(catalog) or {}
        keep |= {Path(v) for v in spec.get("versions", {}).values() if v}
    return removed, keep


# --- queries --------------------------------------------------------------------------------

#: Statement types an analyst query may run.
_READ_ONLY = {"SELECT", "EXPLAIN", "PRAGMA"}


class QueryError(ValueError):
    """The query is not a read-only query, or DuckDB rejected it."""


def connect_snapshot(data_dir: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the analysts' views over the lake as published now.

    Takes no lock on any file, so it never waits for, nor blocks, the pipeline or an analyst.
    """
    con = duckdb.connect()
    create_views(con, current_versions(data_dir))
    for statement in freshness.view_statements(data_dir):
        run_sql(con, statement)
    return con


def run_query(data_dir: Path, sql: str) -> tuple[list[str], list[tuple]]:
    """Run one read-only statement against the current lake; (column names, rows)."""
    con = connect_snapshot(data_dir)
    try:
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise QueryError(str(exc).splitlines()[0]) from None
        if len(statements) != 1:
            raise QueryError(f"expected exactly one statement, got {len(statements)}")
        kind = statements[0].type.name
        if kind not in _READ_ONLY:
            raise QueryError(f"only read-only queries are allowed (got a {kind} statement)")
        try:
            cur = con.execute(sql)
            names = [d[0] for d in cur.description or []]
            return names, cur.fetchall()
        except duckdb.Error as exc:
            raise QueryError(" ".join(str(exc).split())) from None
    finally:
        con.close()
