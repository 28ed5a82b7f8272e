"""The Parquet lake: each contract table published as Hive-partitioned, zstd Parquet.

Layout under ``$EXPORT_DATA_DIR/lake/``::

    <dataset>                   -> .versions/<dataset>/<version>  (a symlink, swapped atomically)
    .versions/<dataset>/<version>/_date=2024-05-01/org_id=<uuid>/part-<rows>-<hash>-0.parquet
    .staging/<dataset>-<uuid>/  a publish in progress (removed by the next publish if orphaned)
    .lock                       serialises publishers (flock)

A version directory is immutable once it is renamed into ``.versions``: unchanged partitions are
hardlinks of the previous version's files, changed partitions are new files written to staging.
``lake/<dataset>`` is then swapped with one ``os.replace`` of a temporary symlink, so a reader (or
a crash, ``kill -9`` included) sees the old version or the new one, never a half-written or mixed
partition, and no stale file ever appears in a published version.

Each partition file's name carries the partition's row count and fingerprint (the sum of DuckDB's
``hash`` over the contract columns), so the lake describes itself: a publish recomputes the
fingerprints in the warehouse and rewrites only the partitions whose fingerprint differs from the
published file name. A crashed publish therefore heals on the next one, with no ledger to drift.

Old versions are removed by :func:`collect_garbage` once superseded for a grace period and no
longer referenced by a catalog an analyst holds open (see ``analytics.py``).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from export_pipeline.contract import Dataset
from export_pipeline.extract import quote_ident
from export_pipeline.faults import crash_point
from export_pipeline.warehouse import DUCKDB_TYPES, run_sql

#: Partition key meaning "the date of the cursor column, in UTC".
DATE_KEY = "_date"
#: Old versions stay this long after being superseded, for readers mid-query.
DEFAULT_GRACE_SECONDS = 600.0

_PART_FILE = re.compile(r"^part-(\d+)-([0-9a-f]+)-(\d+)\.parquet$")
_VERSION_FORMAT = "%Y%m%dT%H%M%S.%fZ"

#: Steps of a publish, in order; a test hook can stop the process at any of them.
PublishStep = str
STEPS: tuple[PublishStep, ...] = ("copied", "staged", "renamed", "swapped")


@dataclass(frozen=True)
class PublishResult:
    dataset: str
    #: Version now published (None when the dataset has never had a row).
    version: str | None
    changed: bool
    rows: int
    partitions: int
    partitions_written: int
    partitions_linked: int
    partitions_removed: int
    #: The partitions written (the others are hard links of the previous version's files).
    written: tuple[str, ...] = ()


@dataclass(frozen=True)
class LakeCheck:
    """Lake against warehouse for one dataset: row count and checksum must both match."""

    dataset: str
    warehouse_rows: int
    lake_rows: int
    warehouse_checksum: int
    lake_checksum: int
    #: Partitions whose row count differs between warehouse and lake (quick check only).
    partitions_differing: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return (
            self.warehouse_rows == self.lake_rows
            and self.warehouse_checksum == self.lake_checksum
            and not self.partitions_differing
        )


# --- layout -------------------------------------------------------------------------------


def lake_root(data_dir: Path) -> Path:
    return data_dir / "lake"


def versions_dir(data_dir: Path, ds: Dataset) -> Path:
    return lake_root(data_dir) / ".versions" / ds.name


def staging_root(data_dir: Path) -> Path:
    return lake_root(data_dir) / ".staging"


def current_version_dir(data_dir: Path, ds: Dataset) -> Path | None:
    """The version directory ``lake/<dataset>`` points at, resolved once (None if none yet)."""
    link = lake_root(data_dir) / ds.name
    if not link.is_symlink():
        return None
    target = (link.parent / os.readlink(link)).resolve()
    return target if target.is_dir() else None


@contextmanager
def lake_lock(data_dir: Path) -> Iterator[None]:
    """Exclusive lock over publishing and garbage collection (other publishers wait)."""
    root = lake_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def new_version_name(now: datetime | None = None) -> str:
    """Sortable by creation time; the suffix keeps names unique within a microsecond."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime(_VERSION_FORMAT)
    return f"v{stamp}-{uuid.uuid4().hex[:8]}"


def version_time(name: str) -> datetime | None:
    try:
        return datetime.strptime(name[1:].split("-")[0], _VERSION_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


# --- SQL derived from the contract ----------------------------------------------------------


def file_columns(ds: Dataset) -> tuple[str, ...]:
    """Columns stored in the Parquet files: partition keys live in the directory names."""
    return tuple(c for c in ds.column_names if c not in ds.partition_by)


def _key_value_sql(ds: Dataset, key: str) -> str:
    """The value of a partition key as DuckDB writes it in a Hive path."""
    if key == DATE_KEY:
        return f"strftime(CAST(timezone('UTC', {quote_ident(ds.cursor)}) AS DATE), '%Y-%m-%d')"
    return f"CAST({quote_ident(key)} AS VARCHAR)"


def partition_sql(ds: Dataset) -> str:
    """SQL expression of a row's partition path, e.g. ``_date=2024-05-01/org_id=<uuid>``."""
    if not ds.partition_by:
        return "''"
    parts = [f"'{key}=' || {_key_value_sql(ds, key)}" for key in ds.partition_by]
    return " || '/' || ".join(parts)


def _partition_column_sql(ds: Dataset, key: str) -> str:
    if key == DATE_KEY:
        return f"CAST(timezone('UTC', {quote_ident(ds.cursor)}) AS DATE) AS {quote_ident(key)}"
    return quote_ident(key)


def row_hash_sql(ds: Dataset) -> str:
    return f"hash({', '.join(quote_ident(c) for c in ds.column_names)})"


def lake_select_sql(
    ds: Dataset, version_dir: Path | None, partitions: Collection[str] | None = None
) -> str:
    """A query over one published version of a dataset, with the contract's column types.

    Partition keys come back from the directory names with their contract types; an empty
    version (or none yet) gives a typed empty result.
    """
    columns = ", ".join(quote_ident(c) for c in ds.column_names)
    if partitions is not None and version_dir is not None:
        files = [str(f) for p in sorted(partitions) for f in (version_dir / p).glob("*.parquet")]
    else:
        files = [] if version_dir is None else [str(f) for f in version_dir.rglob("*.parquet")]
    if not files:
        typed = ", ".join(
            f"CAST(NULL AS {DUCKDB_TYPES[c.type]}) AS {quote_ident(c.name)}" for c in ds.columns
        )
        return f"SELECT {typed} LIMIT 0"
    listed = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in sorted(files)) + "]"
    if not ds.partition_by:
        return f"SELECT {columns} FROM read_parquet({listed}, union_by_name = true)"
    hive_types = ", ".join(
        f"'{key}': {'DATE' if key == DATE_KEY else DUCKDB_TYPES[ds.column(key).type]}"
        for key in ds.partition_by
    )
    return (
        f"SELECT {columns} FROM read_parquet({listed}, hive_partitioning = true, "
        f"hive_types = {{{hive_types}}}, union_by_name = true)"
    )


# --- publish --------------------------------------------------------------------------------


def _published_partitions(version_dir: Path | None) -> dict[str, str | None]:
    """Partition path -> fingerprint (``<rows>-<hash>``) of a published version.

    A partition whose files disagree on the fingerprint maps to None (it will be rewritten).
    """
    found: dict[str, set[str]] = {}
    if version_dir is None:
        return {}
    for path in version_dir.rglob("*.parquet"):
        match = _PART_FILE.match(path.name)
        partition = path.parent.relative_to(version_dir).as_posix()
        partition = "" if partition == "." else partition
        fingerprint = f"{match.group(1)}-{match.group(2)}" if match else "?"
        found.setdefault(partition, set()).add(fingerprint)
    return {
        p: (fps.pop() if len(fps) == 1 and "?" not in fps else None) for p, fps in found.items()
    }


def _warehouse_partitions(
    con: duckdb.DuckDBPyConnection, ds: Dataset, only: set[str] | None = None
) -> dict[str, tuple[int, str]]:
    """Partition -> (rows, fingerprint) of the warehouse table; ``only`` those partitions."""
    where = ""
    if only is not None:
        run_sql(con, "CREATE OR REPLACE TEMP TABLE _lake_only (partition VARCHAR)")
        if only:
            con.executemany("INSERT INTO _lake_only VALUES (?)", [[p] for p in sorted(only)])
        where = "WHERE partition IN (SELECT partition FROM _lake_only)"
    rows = run_sql(
        con,
        f"SELECT partition, count(*), sum(_hash) FROM (SELECT {partition_sql(ds)} AS partition, "
        f"{row_hash_sql(ds)} AS _hash FROM {quote_ident(ds.name)}) {where} GROUP BY ALL",
    )
    return {p: (int(n), f"{int(n)}-{int(h):x}") for p, n, h in rows}


def dirty_partitions(con: duckdb.DuckDBPyConnection, ds: Dataset) -> set[str]:
    """Partitions whose rows changed since the last publish (``'*'``: unknown, all of them)."""
    return {
        p
        for (p,) in run_sql(
            con, "SELECT partition FROM _lake_dirty WHERE dataset = $d", {"d": ds.name}
        )
    }


def _clear_dirty(con: duckdb.DuckDBPyConnection, ds: Dataset) -> None:
    run_sql(con, "DELETE FROM _lake_dirty WHERE dataset = $d", {"d": ds.name})


def _fsync(path: Path) -> None:
    """Flush a file, or a directory's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _clean_staging(data_dir: Path, ds: Dataset) -> None:
    """Remove what crashed publishes of this dataset left in staging (we hold the lock)."""
    root = staging_root(data_dir)
    if root.is_dir():
        for orphan in root.glob(f"{ds.name}-*"):
            shutil.rmtree(orphan, ignore_errors=True)


def publish_dataset(
    con: duckdb.DuckDBPyConnection,
    ds: Dataset,
    data_dir: Path,
    *,
    rebuild: bool = False,
    on_step: Callable[[PublishStep], None] | None = None,
) -> PublishResult:
    """Publish the dataset's warehouse table to the lake, rewriting only changed partitions.

    With ``rebuild`` every partition is rewritten from the warehouse. ``on_step`` is called
    after each step of :data:`STEPS` (tests use it to inject crashes).
    """

    def step(name: PublishStep) -> None:
        if on_step is not None:
            on_step(name)
        crash_point(f"publish.{name}", ds.name)

    with lake_lock(data_dir):
        return _publish_locked(con, ds, data_dir, rebuild, step)


def _publish_locked(
    con: duckdb.DuckDBPyConnection,
    ds: Dataset,
    data_dir: Path,
    rebuild: bool,
    on_step: Callable[[PublishStep], None],
) -> PublishResult:
    _clean_staging(data_dir, ds)
    current = current_version_dir(data_dir, ds)
    on_disk = _published_partitions(current)
    published = {} if rebuild else on_disk
    run_sql(con, "BEGIN TRANSACTION")
    try:
        # Only partitions the loads marked dirty (or whose files disagree) are fingerprinted
        # again; the others are the published ones, unchanged since (their files are immutable).
        dirty = dirty_partitions(con, ds) | {p for p, fp in published.items() if fp is None}
        if rebuild or current is None or "*" in dirty:
            wanted = _warehouse_partitions(con, ds)
        else:
            wanted = {
                p: (int(fp.split("-")[0]), fp)
                for p, fp in published.items()
                if p not in dirty and fp is not None
            }
            wanted |= _warehouse_partitions(con, ds, only=dirty) if dirty else {}
        changed = sorted(p for p, (_, fp) in wanted.items() if published.get(p) != fp)
        removed = sorted(set(on_disk) - set(wanted))
        rows = sum(n for n, _ in wanted.values())
        if current is not None and not changed and not removed and not rebuild:
            _clear_dirty(con, ds)
            run_sql(con, "COMMIT")
            return PublishResult(
                ds.name, current.name, False, rows, len(wanted), 0, len(wanted), 0, ()
            )
        if current is None and not wanted and not rebuild:
            _clear_dirty(con, ds)
            run_sql(con, "COMMIT")
            return PublishResult(ds.name, None, False, 0, 0, 0, 0, 0, ())
        staging = staging_root(data_dir) / f"{ds.name}-{uuid.uuid4().hex}"
        copy_dir, version_tree = staging / "copy", staging / "version"
        version_tree.mkdir(parents=True)
        if changed:
            _copy_partitions(con, ds, changed, copy_dir)
        run_sql(con, "COMMIT")
    except BaseException:
        run_sql(con, "ROLLBACK")
        raise
    on_step("copied")

    for partition in changed:
        target = version_tree / partition
        target.mkdir(parents=True, exist_ok=True)
        sources = sorted((copy_dir / partition).glob("*.parquet"))
        if not sources:
            raise RuntimeError(f"{ds.name}: COPY wrote no file for partition {partition}")
        for i, source in enumerate(sources):
            dest = target / f"part-{wanted[partition][1]}-{i}.parquet"
            os.replace(source, dest)
            _fsync(dest)
    unchanged = sorted(set(wanted) - set(changed))
    for partition in unchanged:
        assert current is not None
        target = version_tree / partition
        target.mkdir(parents=True, exist_ok=True)
        for source in (current / partition).glob("*.parquet"):
            os.link(source, target / source.name)
    shutil.rmtree(copy_dir, ignore_errors=True)
    on_step("staged")

    version = new_version_name()
    final = versions_dir(data_dir, ds) / version
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(version_tree, final)
    _fsync(final.parent)
    on_step("renamed")

    root = lake_root(data_dir)
    link = root / ds.name
    if link.exists() and not link.is_symlink():  # a plain directory put there by hand
        os.rename(link, staging / "replaced")
    tmp_link = root / f".{ds.name}.{uuid.uuid4().hex}.tmp"
    os.symlink(final.relative_to(root), tmp_link)
    os.replace(tmp_link, link)
    _fsync(root)
    shutil.rmtree(staging, ignore_errors=True)
    on_step("swapped")
    # After the swap: a crash before this line only makes the next publish re-check them.
    _clear_dirty(con, ds)
    return PublishResult(
        ds.name,
        version,
        True,
        rows,
        len(wanted),
        len(changed),
        len(unchanged),
        len(removed),
        tuple(changed),
    )


def _copy_partitions(
    con: duckdb.DuckDBPyConnection, ds: Dataset, partitions: list[str], copy_dir: Path
) -> None:
    """One partitioned COPY of the changed partitions into staging (never into the lake)."""
    run_sql(con, "CREATE OR REPLACE TEMP TABLE _lake_changed (partition VARCHAR PRIMARY KEY)")
    con.executemany("INSERT INTO _lake_changed VALUES (?)", [[p] for p in partitions])
    columns = [quote_ident(c) for c in file_columns(ds)]
    columns += [_partition_column_sql(ds, key) for key in ds.partition_by]
    order = ", ".join(quote_ident(c) for c in ds.primary_key)
    target = str(copy_dir).replace("'", "''")
    options = "FORMAT parquet, COMPRESSION zstd"
    if ds.partition_by:
        options += f", PARTITION_BY ({', '.join(quote_ident(k) for k in ds.partition_by)})"
    else:
        copy_dir.mkdir(parents=True, exist_ok=True)
        target += "/data_0.parquet"
    run_sql(
        con,
        f"COPY (SELECT {', '.join(columns)} FROM {quote_ident(ds.name)} "
        f"WHERE {partition_sql(ds)} IN (SELECT partition FROM _lake_changed) "
        f"ORDER BY {order}) TO '{target}' ({options})",
    )
    run_sql(con, "DROP TABLE _lake_changed")


# --- garbage collection ---------------------------------------------------------------------


def collect_garbage(
    data_dir: Path,
    datasets: tuple[Dataset, ...],
    *,
    keep: set[Path],
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    now: datetime | None = None,
) -> list[Path]:
    """Remove versions superseded more than ``grace_seconds`` ago and not in ``keep``.

    The caller holds :func:`lake_lock`. Returns the removed version directories.
    """
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=grace_seconds)
    removed = []
    keep = {p.resolve() for p in keep}
    for ds in datasets:
        root = versions_dir(data_dir, ds)
        if not root.is_dir():
            continue
        current = current_version_dir(data_dir, ds)
        names = sorted(p.name for p in root.iterdir() if p.is_dir())
        for name, successor in zip(names, names[1:], strict=False):
            path = (root / name).resolve()
            superseded_at = version_time(successor)
            if path == current or path in keep or superseded_at is None:
                continue
            if superseded_at <= cutoff:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


# --- check ----------------------------------------------------------------------------------


def check_lake(
    con: duckdb.DuckDBPyConnection,
    ds: Dataset,
    data_dir: Path,
    written: Collection[str] | None = None,
) -> LakeCheck:
    """Count and checksum of the warehouse table against the published version.

    With ``written`` (the partitions the last publish rewrote) the check is quick: row counts of
    every partition (the lake's from its file names), and the content checksum of the rewritten
    partitions only; the other partitions are hard links of files checked when written. Without
    it, every row of both sides is read and hashed.
    """
    if written is None:
        ((w_rows, w_sum),) = run_sql(
            con,
            f"SELECT count(*), coalesce(sum({row_hash_sql(ds)}), 0) FROM {quote_ident(ds.name)}",
        )
        lake = lake_select_sql(ds, current_version_dir(data_dir, ds))
        ((l_rows, l_sum),) = run_sql(
            con, f"SELECT count(*), coalesce(sum({row_hash_sql(ds)}), 0) FROM ({lake})"
        )
        return LakeCheck(ds.name, int(w_rows), int(l_rows), int(w_sum), int(l_sum))
    current = current_version_dir(data_dir, ds)
    lake_counts = {
        p: (int(fp.split("-")[0]) if fp else -1) for p, fp in _published_partitions(current).items()
    }
    warehouse_counts = {
        p: int(n)
        for p, n in run_sql(
            con,
            f"SELECT {partition_sql(ds)}, count(*) FROM {quote_ident(ds.name)} GROUP BY ALL",
        )
    }
    differing = tuple(
        sorted(
            p
            for p in set(lake_counts) | set(warehouse_counts)
            if lake_counts.get(p) != warehouse_counts.get(p)
        )
    )
    w_sum = sum(
        int(fp.split("-")[1], 16)
        for _, fp in _warehouse_partitions(con, ds, only=set(written)).values()
    )
    lake = lake_select_sql(ds, current, partitions=written)
    ((l_sum,),) = run_sql(con, f"SELECT coalesce(sum({row_hash_sql(ds)}), 0) FROM ({lake})")
    return LakeCheck(
        ds.name,
        sum(warehouse_counts.values()),
        sum(lake_counts.values()),
        w_sum,
        int(l_sum),
        differing,
    )
