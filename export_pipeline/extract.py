"""Extract stage: stream a dataset's contract columns out of PostgreSQL as Arrow record batches.

Reads go through ADBC, which streams the result of a parameter-free query with binary COPY in
bounded memory (a query with bind parameters comes back as one batch). So the window's values are
bound to session settings first (`sql/extract/set_window.sql`) and read back by the query.
Only the contract's columns are projected: operational extras are never selected.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa

from export_pipeline import source_session
from export_pipeline.contract import Dataset, LogicalType
from export_pipeline.contract_types import TYPES
from export_pipeline.sqlfiles import read_sql
from export_pipeline.validate import SchemaMismatchError

#: PostgreSQL types (information_schema.data_type) each contract type may be read from.
ACCEPTED_SOURCE_TYPES: dict[LogicalType, frozenset[str]] = {
    name: spec.source_types for name, spec in TYPES.items()
}

#: Separator of out-of-scope values in the session setting (a control character no value holds).
_SCOPE_SEPARATOR = "\x1f"


@dataclass(frozen=True)
class Window:
    """Cursor window ``(start, end]``; ``start=None`` means from the beginning.

    ``org_id`` narrows it to one tenant (backfills of one org).
    """

    start: datetime | None
    end: datetime
    org_id: str | None = None

    @classmethod
    def days(cls, first: date, last: date, org_id: str | None = None) -> Window:
        """UTC days ``first`` to ``last`` inclusive: cursors in ``[first 00:00, last+1 00:00)``."""
        tick = timedelta(microseconds=1)
        start = datetime.combine(first, time.min, tzinfo=UTC)
        end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)
        return cls(start=start - tick, end=end - tick, org_id=org_id)


@dataclass(frozen=True)
class KeySet:
    """Rows selected by primary key, whatever their cursor (repair, dead-letter retries).

    ``keys`` are JSON objects of contract key columns, e.g. ``{"run_id": "..."}``.
    """

    keys: tuple[str, ...]


#: PostgreSQL types to read a key column from JSON as.
_PG_KEY_TYPES: dict[LogicalType, str] = {name: spec.postgres for name, spec in TYPES.items()}


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_table(qualified: str) -> str:
    return ".".join(quote_ident(part) for part in qualified.split("."))


class _IdleConnections(threading.local):
    """Per thread: the source connection each DSN last returned, kept open for the next batch."""

    def __init__(self) -> None:
        self.by_dsn: dict[str, adbc.Connection] = {}


_idle = _IdleConnections()
#: Connections a forked child inherited: never used nor closed there (closing would end the
#: parent's session on the shared socket), and kept referenced so they are never collected.
_inherited: list[adbc.Connection] = []


def _forget_inherited() -> None:
    _inherited.extend(_idle.by_dsn.values())
    _idle.by_dsn.clear()


os.register_at_fork(after_in_child=_forget_inherited)

#: Idle connections kept per thread: one per source DSN, for the few sources a process reads.
_MAX_IDLE = 4


def _close_quietly(conn: adbc.Connection) -> None:
    try:
        conn.close()
    except Exception:  # already broken: nothing left to release
        pass


def _alive(conn: adbc.Connection) -> bool:
    """Alive, and its new transaction guarded read-only (one round trip for both)."""
    try:
        source_session.guard(conn)
        return True
    except Exception:
        return False


@contextmanager
def connect(dsn: str) -> Iterator[adbc.Connection]:
    """A source connection, reused by the next batch of the same thread.

    Connecting costs ~60 ms (the driver reads PostgreSQL's type catalogue), a third of a small
    micro-batch per dataset. Between batches the connection is rolled back, so it holds no
    snapshot or lock on the source; a connection that broke (source restarted, backend killed)
    is closed and replaced, and one that saw an error is never reused.

    Every session is read-only, RLS-strict, named and bounded by timeouts
    (:mod:`export_pipeline.source_session`); each use starts with a guarded transaction.
    """
    conn = _idle.by_dsn.pop(dsn, None)
    if conn is not None and not _alive(conn):
        _close_quietly(conn)
        conn = None
    if conn is None:
        conn = source_session.connect_interruptibly(adbc.connect, source_session.session_uri(dsn))
        try:
            source_session.guard(conn)
        except BaseException:
            _close_quietly(conn)
            raise
    try:
        yield conn
        conn.rollback()
    except BaseException:
        _close_quietly(conn)
        raise
    previous = _idle.by_dsn.pop(dsn, None)  # a nested use of the same DSN returned first
    if previous is not None:
        _close_quietly(previous)
    _idle.by_dsn[dsn] = conn
    while len(_idle.by_dsn) > _MAX_IDLE:  # the least recently used source goes
        _close_quietly(_idle.by_dsn.pop(next(iter(_idle.by_dsn))))


def close_idle_connections() -> None:
    """Close this thread's idle source connections (also done at exit)."""
    while _idle.by_dsn:
        _close_quietly(_idle.by_dsn.popitem()[1])


atexit.register(close_idle_connections)


def source_now(conn: adbc.Connection) -> datetime:
    with conn.cursor() as cur:
        cur.execute(read_sql("extract", "select_source_now.sql"))
        (now,) = cur.fetchone()
    return now


def check_source_schema(conn: adbc.Connection, ds: Dataset) -> None:
    """Fail with a message naming the column when the source no longer fits the contract."""
    schema, table = ds.source_table.split(".")
    with conn.cursor() as cur:
        cur.execute(read_sql("extract", "select_source_columns.sql"), parameters=(schema, table))
        found = dict(cur.fetchall())
    if not found:
        raise SchemaMismatchError(f"{ds.name}: source table {ds.source_table} does not exist")
    problems = []
    for col in ds.source_columns:
        pg_type = found.get(col.source_name)
        if pg_type is None:
            problems.append(f"column {col.source_name!r} is missing")
        elif pg_type not in ACCEPTED_SOURCE_TYPES[col.type]:
            problems.append(
                f"column {col.source_name!r} is {pg_type}, the contract needs {col.type}"
            )
    if problems:
        raise SchemaMismatchError(
            f"{ds.name}: source {ds.source_table} does not fit the contract: " + "; ".join(problems)
        )


def _projection(ds: Dataset, alias: str = "") -> str:
    """The contract columns, renamed; uuids stay binary (16 bytes, Arrow's ``arrow.uuid``)."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(
        f"{prefix}{quote_ident(c.source_name)} AS {quote_ident(c.name)}" for c in ds.source_columns
    )


def _scope_filter(ds: Dataset, alias: str = "") -> str:
    """SQL excluding the out-of-scope values; the setting is read once (see select_window.sql)."""
    if len(ds.out_of_scope) > 1:
        raise NotImplementedError(f"{ds.name}: at most one out-of-scope rule is supported")
    prefix = f"{alias}." if alias else ""
    for column, _values in ds.out_of_scope:
        col = prefix + quote_ident(ds.column(column).source_name)
        return (
            f"AND ({col} IS NULL OR NOT {col} = ANY ((SELECT string_to_array("
            f"current_setting('export_pipeline.out_of_scope'), E'\\x1f'))::text[]))"
        )
    return ""


def keys_query(ds: Dataset) -> str:
    """The parameter-free key-set query of a dataset, built from contract identifiers only."""
    key_columns = ", ".join(
        f"{quote_ident(c)} {_PG_KEY_TYPES[ds.column(c).type]}" for c in ds.primary_key
    )
    key_join = " AND ".join(
        f"t.{quote_ident(ds.column(c).source_name)} = k.{quote_ident(c)}" for c in ds.primary_key
    )
    return read_sql("extract", "select_keys.sql").format(
        projection=_projection(ds, "t"),
        source_table=quote_table(ds.source_table),
        key_columns=key_columns,
        key_join=key_join,
        scope_filter=_scope_filter(ds, "t"),
    )


def window_query(ds: Dataset, by_org: bool = False) -> str:
    """The parameter-free window query of a dataset, built from contract identifiers only.

    ``by_org`` adds the one-organisation filter (bound by ``set_window.sql``); it is left out
    otherwise, so the planner sees a plain cursor range it can serve from the cursor index.
    """
    org = quote_ident(ds.column("org_id").source_name)
    org_filter = (
        f"AND {org} = (SELECT current_setting('export_pipeline.org_id')::uuid)" if by_org else ""
    )
    return read_sql("extract", "select_window.sql").format(
        projection=_projection(ds),
        source_table=quote_table(ds.source_table),
        cursor=quote_ident(ds.column(ds.cursor).source_name),
        org_filter=org_filter,
        scope_filter=_scope_filter(ds),
    )


def bind_window(cur: adbc.Cursor, ds: Dataset, window: Window) -> None:
    out_of_scope = _SCOPE_SEPARATOR.join(v for _c, values in ds.out_of_scope for v in values)
    cur.execute(
        read_sql("extract", "set_window.sql"),
        parameters=(
            "-infinity" if window.start is None else window.start.isoformat(),
            window.end.isoformat(),
            out_of_scope,
            window.org_id or "",
        ),
    )
    cur.fetchall()


def extract_window(
    conn: adbc.Connection, ds: Dataset, window: Window | KeySet, batch_size: int
) -> Iterator[pa.RecordBatch]:
    """Stream the dataset's in-scope rows in the window (or key set), ``batch_size`` at most."""
    with conn.cursor() as cur:
        if isinstance(window, KeySet):
            bind_window(cur, ds, Window(start=None, end=datetime.max.replace(tzinfo=UTC)))
            cur.execute(
                read_sql("extract", "set_keys.sql"),
                parameters=("[" + ",".join(window.keys) + "]",),
            )
            cur.fetchall()
            cur.execute(keys_query(ds))
        else:
            bind_window(cur, ds, window)
            cur.execute(window_query(ds, by_org=window.org_id is not None))
        reader = cur.fetch_record_batch()
        for batch in reader:
            for offset in range(0, batch.num_rows, batch_size):
                yield batch.slice(offset, batch_size)


def count_in_scope(conn: adbc.Connection, ds: Dataset, window: Window | None = None) -> int:
    """Rows the extract would read for ``window`` (all time by default), counted in the source."""
    window = window or Window(start=None, end=datetime.max.replace(tzinfo=UTC))
    with conn.cursor() as cur:
        bind_window(cur, ds, window)
        query = window_query(ds, by_org=window.org_id is not None)
        cur.execute(f"SELECT count(*) FROM ({query}) AS in_scope")
        (count,) = cur.fetchone()
    return int(count)


def source_max_cursor(conn: adbc.Connection, ds: Dataset) -> datetime | None:
    """The latest finite cursor among the dataset's in-scope source rows."""
    query = read_sql("extract", "select_max_cursor.sql").format(
        cursor=quote_ident(ds.column(ds.cursor).source_name),
        source_table=quote_table(ds.source_table),
        scope_filter=_scope_filter(ds),
    )
    with conn.cursor() as cur:
        bind_window(cur, ds, Window(start=None, end=datetime.max.replace(tzinfo=UTC)))
        cur.execute(query)
        (latest,) = cur.fetchone()
    return latest


_DONE = object()


def prefetch(
    batches: Iterator[pa.RecordBatch],
    depth: int = 2,
    cancel: Callable[[], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Read ``batches`` in a background thread, at most ``depth`` ahead of the consumer.

    The source streams (ADBC releases the GIL) while the caller validates and loads the
    previous batch. Errors surface in the caller; if the caller stops early, the reader stops.
    If the reader is stuck in the source (a lock wait, a slow query) when the caller stops
    (an error, Ctrl-C, SIGTERM), ``cancel`` cancels the statement instead of waiting for it.
    """
    chunks: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        chunks.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            chunks.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            chunks.put(exc)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    reader = threading.Thread(target=produce, name="extract-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            item = chunks.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        waited = 0
        while reader.is_alive():
            try:
                chunks.get(timeout=0.1)
            except queue.Empty:
                pass
            reader.join(timeout=0.1)
            waited += 1
            if waited == 5 and cancel is not None:
                try:
                    cancel()
                except Exception:  # nothing to cancel, or the connection is gone
                    pass
