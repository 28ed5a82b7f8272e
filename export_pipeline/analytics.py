"""Analysts' access: DuckDB catalogs of views over pinned lake versions; never block the pipeline.

``$EXPORT_DATA_DIR/analytics.duckdb`` is a symlink to the newest catalog
``analytics/catalog-<stamp>.duckdb``: a small DuckDB file holding only views, one per contract
dataset over the data files of one *Delta version* of its lake table (``read_parquet`` over that
version's active files, Hive partitions; DuckDB's ``delta`` extension cannot be installed
offline), plus the convenience views of ``sql/analytics/``. The pipeline writes a catalog once,
when it is created, and never again:

- an analyst who opens ``analytics.duckdb`` (and keeps it open for hours) never holds a lock the
  pipeline needs, and the pipeline never needs to write a file an analyst holds;
- every query on that connection reads one committed Delta version of each dataset: never half
  a batch. A Delta commit never changes or deletes a data file an older version lists; only
  ``vacuum`` deletes them, after the retention (7 days by default) and never files of a version
  a catalog still open pins (see :func:`pinned_versions`). Reopening the file shows the newest data.

A new catalog is written only when a table's version or the view definitions changed. Old
catalogs are removed once superseded for a grace period and no longer held open by anyone
(DuckDB holds a file lock on an open database).

Time travel: :func:`connect_snapshot` and :func:`run_query` take ``versions`` (dataset -> Delta
version) to read older versions. A lake on object storage is read through Arrow datasets
(``deltalake``) in an in-memory DuckDB instead of a catalog file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from export_pipeline import freshness
from export_pipeline import lake as lake_mod
from export_pipeline.contract import DATASETS, Dataset
from export_pipeline.extract import quote_ident
from export_pipeline.sqlfiles import SQL_ROOT
from export_pipeline.warehouse import DUCKDB_TYPES, run_sql

ANALYTICS_FILE = "analytics.duckdb"
CATALOG_DIR = "analytics"
#: Superseded catalogs stay this long, for analysts mid-query, unless held open longer.
DEFAULT_GRACE_SECONDS = 600.0
_STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"


@dataclass(frozen=True)
class CatalogResult:
    path: Path | None
    created: bool
    removed_catalogs: int


def analytics_path(data_dir: Path) -> Path:
    return data_dir / ANALYTICS_FILE


def default_lake(data_dir: Path) -> lake_mod.Lake:
    return lake_mod.Lake(str(data_dir / "lake"))


def convenience_views() -> list[tuple[str, str]]:
    """(file name, SQL) of the convenience views, in file-name order."""
    files = sorted(SQL_ROOT.glob("analytics/*.sql"))
    return [(p.name, p.read_text(encoding="utf-8")) for p in files]


def view_statements(
    versions: Mapping[str, lake_mod.TableVersion], datasets: Sequence[Dataset]
) -> list[str]:
    """CREATE VIEW statements: one per dataset over its pinned files, then the conveniences."""
    statements = [
        f"CREATE OR REPLACE VIEW {quote_ident(ds.name)} AS "
        f"{lake_mod.read_sql_over_files(ds, versions[ds.name].files)}"
        for ds in datasets
    ]
    return statements + [sql for _, sql in convenience_views()]


def current_versions(
    lake: lake_mod.Lake,
    datasets: Sequence[Dataset] = DATASETS,
    versions: Mapping[str, int] | None = None,
) -> dict[str, lake_mod.TableVersion]:
    """Each dataset's Delta version (the latest, or the one asked for) and its files."""
    versions = versions or {}
    return {ds.name: lake_mod.table_version(lake, ds, versions.get(ds.name)) for ds in datasets}


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


def _spec(versions: Mapping[str, lake_mod.TableVersion], statements: list[str]) -> dict:
    return {
        "versions": {k: v.version for k, v in sorted(versions.items())},
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


@contextmanager
def _catalog_lock(data_dir: Path) -> Iterator[None]:
    directory = data_dir / CATALOG_DIR
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def refresh_catalog(
    data_dir: Path,
    *,
    lake: lake_mod.Lake | None = None,
    datasets: Sequence[Dataset] = DATASETS,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    now: datetime | None = None,
) -> CatalogResult:
    """Point ``analytics.duckdb`` at a catalog of the lake's current versions; drop old ones.

    Writes a new catalog only when a version or the view definitions changed. A lake on object
    storage gets no catalog file (DuckDB would need its httpfs extension): use
    :func:`connect_snapshot` or ``export-pipeline query``.
    """
    lake = lake or default_lake(data_dir)
    if not lake.is_local:
        return CatalogResult(None, False, 0)
    with _catalog_lock(data_dir):
        versions = current_versions(lake, datasets)
        statements = view_statements(versions, datasets) + freshness.view_statements(data_dir)
        spec = _spec(versions, statements)
        current = _current_catalog(data_dir)
        created = False
        if current is None or _read_spec(current) != spec:
            current = _write_catalog(data_dir, statements, spec)
            created = True
        removed = _collect_catalogs(data_dir, current, grace_seconds, now)
    return CatalogResult(current, created, removed)


def pinned_versions(data_dir: Path) -> dict[str, set[int]]:
    """Per dataset, the Delta versions the catalogs still on disk pin (vacuum keeps them)."""
    pinned: dict[str, set[int]] = {}
    for catalog in sorted((data_dir / CATALOG_DIR).glob("catalog-*.duckdb")):
        for name, version in ((_read_spec(catalog) or {}).get("versions") or {}).items():
            if version is not None:
                pinned.setdefault(name, set()).add(int(version))
    return pinned


def _read_spec(catalog: Path) -> dict | None:
    try:
        return json.loads(_sidecar(catalog).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _stamp(now: datetime | None = None) -> str:
    """Sortable by creation time; the suffix keeps names unique within a microsecond."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime(_STAMP_FORMAT)
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


def _stamp_time(name: str) -> datetime | None:
    try:
        return datetime.strptime(name.split("-")[0], _STAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def _write_catalog(data_dir: Path, statements: list[str], spec: dict) -> Path:
    directory = data_dir / CATALOG_DIR
    directory.mkdir(parents=True, exist_ok=True)
    for orphan in directory.glob("*.tmp*"):  # left by a crashed refresh (we hold the lock)
        orphan.unlink(missing_ok=True)
    name = f"catalog-{_stamp()}"
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
) -> int:
    """Remove superseded catalogs nobody holds; return how many."""
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=grace_seconds)
    catalogs = sorted((data_dir / CATALOG_DIR).glob("catalog-*.duckdb"))
    catalogs = [c for c in catalogs if ".tmp" not in c.name]
    removed = 0
    for catalog, successor in zip(catalogs, [*catalogs[1:], None], strict=True):
        superseded_at = None
        if successor is not None:
            superseded_at = _stamp_time(successor.stem.removeprefix("catalog-"))
        expired = superseded_at is not None and superseded_at <= cutoff
        if catalog.resolve() != current and expired and not is_held(catalog):
            for path in (catalog, _sidecar(catalog), Path(f"{catalog}.wal")):
                path.unlink(missing_ok=True)
            removed += 1
    return removed


# --- queries --------------------------------------------------------------------------------

#: Statement types an analyst query may run.
_READ_ONLY = {"SELECT", "EXPLAIN", "PRAGMA"}


class QueryError(ValueError):
    """The query is not a read-only query, or DuckDB rejected it."""


def connect_snapshot(
    data_dir: Path,
    *,
    lake: lake_mod.Lake | None = None,
    versions: Mapping[str, int] | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the analysts' views over the lake's versions (newest by default,
    or those in ``versions``: time travel).

    Takes no lock on any file, so it never waits for, nor blocks, the pipeline or an analyst.
    """
    lake = lake or default_lake(data_dir)
    con = duckdb.connect()
    if lake.is_local:
        for statement in view_statements(current_versions(lake, DATASETS, versions), DATASETS):
            run_sql(con, statement)
        for statement in freshness.view_statements(data_dir):
            run_sql(con, statement)
        return con
    for ds in DATASETS:  # object storage: the pinned versions' files, read through Polars
        table = lake_mod.open_table(lake, ds, (versions or {}).get(ds.name))
        hidden = f"_lake_{ds.name}"
        paths: list[str] = (
            []
            if table is None
            else [str(p) for p in table.get_add_actions(flatten=True).column("path").to_pylist()]
        )
        lake_mod.files_view(con, lake, ds, paths, hidden)
        columns = ", ".join(
            f"CAST({quote_ident(c.name)} AS {DUCKDB_TYPES[c.type]}) AS {quote_ident(c.name)}"
            for c in ds.columns
        )
        run_sql(con, f"CREATE VIEW {quote_ident(ds.name)} AS SELECT {columns} FROM {hidden}")
    for _, sql in convenience_views():
        run_sql(con, sql)
    for statement in freshness.view_statements(data_dir):
        run_sql(con, statement)
    return con


def run_query(
    data_dir: Path,
    sql: str,
    *,
    lake: lake_mod.Lake | None = None,
    versions: Mapping[str, int] | None = None,
) -> tuple[list[str], list[tuple]]:
    """Run one read-only statement against the lake (newest, or ``versions``); (names, rows)."""
    try:
        con = connect_snapshot(data_dir, lake=lake, versions=versions)
    except duckdb.Error:
        raise
    except Exception as exc:  # deltalake: e.g. a version that does not exist (any more)
        raise QueryError(f"cannot read the lake: {' '.join(str(exc).split())}") from None
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
