"""The reference source: an embedded PostgreSQL holding data-engine-x's operational tables.

Plain Python, no Dagster. It starts a local PostgreSQL (pgserver), creates the source schema
(``sql/source/create_schema.sql``) and fills it with deterministic, realistic data generated
inside PostgreSQL (``sql/source/seed_*.sql``), optionally with a known set of contract
violations that the pipeline must dead-letter.

DSNs are ``postgresql://`` URIs as returned by pgserver (unix socket, no password). Never log
or print a DSN: a real one may carry a password.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Connection, column, create_engine, func, select, table, text
from sqlalchemy.pool import NullPool

from export_pipeline.config import PROJECT_ROOT
from export_pipeline.sqlfiles import read_sql
from export_pipeline.terminal import PROGRESS_LOGGER

log = logging.getLogger(__name__)
#: Progress of a long seed, shown by the CLI on stderr (:mod:`export_pipeline.terminal`).
progress = logging.getLogger(PROGRESS_LOGGER)

#: The five source tables, in contract order (runs, events, companies, persons, snapshots).
SOURCE_TABLES: Final[tuple[str, ...]] = (
    "ops.operation_runs",
    "ops.operation_events",
    "entities.company_entities",
    "entities.person_entities",
    "entities.entity_snapshots",
)

#: Source tables that hold an ``entity_type`` column (and so out-of-scope ``job`` rows).
TABLES_WITH_ENTITY_TYPE: Final[frozenset[str]] = frozenset(
    {"ops.operation_runs", "ops.operation_events", "entities.entity_snapshots"}
)

#: Rows at scale 1 (events follow runs: 3-7 per run, ~5M; snapshots follow record versions).
FULL_SCALE_RUNS: Final = 1_000_000
FULL_SCALE_COMPANIES: Final = 200_000
FULL_SCALE_PERSONS: Final = 500_000

#: How many rows carry each violation kind when seeding with ``violations=True``.
VIOLATIONS_PER_KIND: Final = 2

#: Violation kinds planted per contract dataset, with the SQL file that plants them. The kind
#: names (and their order) must match the ``kinds`` array in each file.
VIOLATION_KINDS: Final[dict[str, tuple[str, ...]]] = {
    "dx_operation_runs_v1": (
        "org_id_null",
        "status_invalid",
        "attempt_count_negative",
        "ended_before_started",
        "cost_negative",
        "started_in_future",
    ),
    "dx_operation_events_v1": (
        "duplicate_run_sequence",
        "http_status_out_of_range",
        "event_sequence_negative",
    ),
    "dx_company_entities_v1": (
        "confidence_out_of_range",
        "employee_count_negative",
        "record_version_below_one",
    ),
    "dx_person_entities_v1": (
        "phone_not_e164",
        "email_malformed",
        "confidence_out_of_range",
    ),
    "dx_entity_snapshots_v1": (
        "duplicate_entity_version",
        "entity_type_invalid",
    ),
}

_VIOLATION_FILES: Final[dict[str, str]] = {
    "dx_operation_runs_v1": "seed_violations_operation_runs.sql",
    "dx_operation_events_v1": "seed_violations_operation_events.sql",
    "dx_company_entities_v1": "seed_violations_company_entities.sql",
    "dx_person_entities_v1": "seed_violations_person_entities.sql",
    "dx_entity_snapshots_v1": "seed_violations_entity_snapshots.sql",
}

#: Seed steps in dependency order (persons need companies; runs need both; events need runs).
_SEED_FILES: Final[tuple[str, ...]] = (
    "seed_company_entities.sql",
    "seed_person_entities.sql",
    "seed_operation_runs.sql",
    "seed_operation_events.sql",
    "seed_entity_snapshots.sql",
)

# pgserver handles, keyed by data directory: keeping a reference keeps each server alive.
_SERVERS: dict[Path, Any] = {}


@dataclass(frozen=True)
class SeedReport:
    """What :func:`seed_source` wrote.

    ``rows``: row count per source table (``ops.operation_runs``, ...), after violations.
    ``violations``: contract dataset name -> {violation kind: rows the pipeline must
    dead-letter for it}; empty when seeded without violations.
    ``out_of_scope``: ``job`` rows per source table (0 for the entity tables).
    ``start``/``end``: the seeded window; every generated cursor value lies in it.
    """

    rows: dict[str, int]
    violations: dict[str, dict[str, int]]
    out_of_scope: dict[str, int]
    start: datetime
    end: datetime


def default_data_dir() -> Path:
    """``<temp dir>/export_pipeline-<uid>/pgdata-<checkout>``: one embedded PostgreSQL per
    checkout (``<checkout>`` is a short hash of the project root), so two checkouts of the same
    user never seed, reset or stop each other's source.

    A temp path, not the user's cache: pgserver opens traversal permissions on every parent of
    its data directory, which under ``~/.cache`` would open the home directory to other users.
    """
    checkout = hashlib.sha256(str(PROJECT_ROOT).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"export_pipeline-{os.getuid()}" / f"pgdata-{checkout}"


def embedded_postgres(data_dir: Path | None = None) -> str:
    """Start (or reuse) an embedded PostgreSQL on ``data_dir`` and return its URI.

    The URI is a unix-socket one, e.g. ``postgresql://postgres:@/postgres?host=/tmp/...``.
    The server stops when the last process using it exits. When running as root, pgserver runs
    postgres as a ``pgserver`` user and opens traversal permissions on the data directory's
    parents: keep ``data_dir`` out of the repository.
    """
    import pgserver  # imported lazily: importing it touches the user's runtime directory

    path = (data_dir if data_dir is not None else default_data_dir()).expanduser().resolve()
    server = _SERVERS.get(path)
    if server is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(path, cleanup_mode="stop")
        _SERVERS[path] = server
    return str(server.get_uri())


def sqlalchemy_url(dsn: str) -> str:
    """Turn a ``postgresql://`` DSN into a ``postgresql+psycopg://`` SQLAlchemy URL.

    Everything after the scheme (credentials, host, database, query string such as
    ``?host=/tmp/...``) is kept as is.
    """
    scheme, sep, rest = dsn.partition("://")
    if sep and scheme == "postgresql+psycopg":
        return dsn
    if not sep or scheme not in ("postgresql", "postgres"):
        # Do not echo the DSN: it may carry a password.
        raise ValueError("expected a postgresql:// DSN")
    return f"postgresql+psycopg://{rest}"


@contextmanager
def _transaction(dsn: str) -> Iterator[Connection]:
    """One connection in one transaction; no pool is left behind."""
    engine = create_engine(sqlalchemy_url(dsn), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def _create_schema(conn: Connection) -> None:
    # A multi-statement DDL file without binds: sent as is, with no bind-parameter parsing.
    conn.exec_driver_sql(read_sql("source", "create_schema.sql"))


def create_source_schema(dsn: str) -> None:
    """Create the ``ops`` and ``entities`` source schemas and tables (idempotent)."""
    with _transaction(dsn) as conn:
        _create_schema(conn)


def _run_sql_file(conn: Connection, filename: str, params: Mapping[str, Any]) -> Any:
    """Execute one ``sql/source`` file, binding only the parameters it names."""
    statement = text(read_sql("source", filename))
    names = statement.compile().params.keys()
    started = time.perf_counter()
    result = conn.execute(statement, {name: params[name] for name in names})
    log.info("%s: %.2fs", filename, time.perf_counter() - started)
    return result


def _seed_sizes(scale: float) -> dict[str, int]:
    return {
        "n_runs": max(1, round(FULL_SCALE_RUNS * scale)),
        "n_companies": max(1, round(FULL_SCALE_COMPANIES * scale)),
        "n_persons": max(1, round(FULL_SCALE_PERSONS * scale)),
    }


def _plant_violations(conn: Connection) -> dict[str, dict[str, int]]:
    """Plant the violations and return the manifest, built from the rows actually touched."""
    manifest: dict[str, dict[str, int]] = {}
    for dataset, kinds in VIOLATION_KINDS.items():
        result = _run_sql_file(conn, _VIOLATION_FILES[dataset], {"per_kind": VIOLATIONS_PER_KIND})
        planted = Counter(kind for (kind,) in result)
        expected = dict.fromkeys(kinds, VIOLATIONS_PER_KIND)
        if dict(planted) != expected:
            raise RuntimeError(
                f"{dataset}: planted {dict(planted)}, expected {expected}; is the scale too small?"
            )
        manifest[dataset] = expected
    return manifest


def _count_rows(conn: Connection) -> tuple[dict[str, int], dict[str, int]]:
    """Rows per source table, and ``job`` rows per source table (one scan per table)."""
    rows: dict[str, int] = {}
    jobs: dict[str, int] = {}
    for qualified_name in SOURCE_TABLES:
        schema, name = qualified_name.split(".")
        source = table(name, column("entity_type"), schema=schema)
        if qualified_name in TABLES_WITH_ENTITY_TYPE:
            is_job = source.c.entity_type == "job"
            total, job = conn.execute(
                select(func.count(), func.count().filter(is_job)).select_from(source)
            ).one()
        else:
            total, job = conn.execute(select(func.count()).select_from(source)).scalar_one(), 0
        rows[qualified_name] = int(total)
        jobs[qualified_name] = int(job)
    return rows, jobs


def seed_source(
    dsn: str,
    *,
    scale: float = 0.01,
    days: int = 7,
    violations: bool = False,
    seed: int = 42,
    end: datetime | None = None,
) -> SeedReport:
    """Create the source schema if needed, then truncate and fill the five source tables.

    ``scale=1`` gives 1M runs (~5M events), 200k companies, 500k persons and one snapshot per
    entity version (~1.6M); the default 0.01 gives a hundredth of that. Data spans ``days``
    days ending at ``end`` (a timezone-aware datetime; default: now - 5 minutes): every
    generated cursor value (runs.created_at, events.occurred_at, entities.updated_at,
    snapshots.captured_at) lies in [end - days, end]. The same ``seed``, ``scale``, ``days``
    and ``end`` always give the same rows. About 2% of runs, their events and snapshots are
    ``job`` rows, out of contract scope.

    With ``violations=True``, :data:`VIOLATIONS_PER_KIND` rows per kind of
    :data:`VIOLATION_KINDS` are then updated or inserted so that each carries exactly one
    contract violation (in-scope entity types, cursor values inside the window); the report's
    ``violations`` manifest lists them. Everything runs in one transaction.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if abs(seed) >= 2**55:  # the SQL derives hash seeds as seed * 128 + k, in bigint
        raise ValueError(f"seed must be below 2**55 in absolute value, got {seed}")
    if end is None:
        end = datetime.now(UTC) - timedelta(minutes=5)
    if end.tzinfo is None or end.utcoffset() is None:
        raise ValueError("end must be a timezone-aware datetime")

    params: dict[str, Any] = {"seed": seed, "end_ts": end, "days": days, **_seed_sizes(scale)}
    manifest: dict[str, dict[str, int]] = {}
    started = time.perf_counter()
    with _transaction(dsn) as conn:
        # Tables first (if missing); then empty them and drop their keys and indexes for the
        # bulk load; then the same schema file restores the keys and indexes.
        _create_schema(conn)
        _run_sql_file(conn, "seed_reset_tables.sql", params)
        for i, filename in enumerate(_SEED_FILES, 1):
            what = filename.removeprefix("seed_").removesuffix(".sql").replace("_", " ")
            progress.info(
                "seeding %s (%d/%d, %.0f s so far)",
                what,
                i,
                len(_SEED_FILES),
                time.perf_counter() - started,
            )
            _run_sql_file(conn, filename, params)
        progress.info("restoring keys and indexes (%.0f s so far)", time.perf_counter() - started)
        _create_schema(conn)
        if violations:
            manifest = _plant_violations(conn)
        progress.info("analyzing tables (%.0f s so far)", time.perf_counter() - started)
        _run_sql_file(conn, "seed_analyze_tables.sql", params)
        rows, out_of_scope = _count_rows(conn)
    log.info(
        "seeded source (scale=%s, days=%s, seed=%s) in %.1fs: %s",
        scale,
        days,
        seed,
        time.perf_counter() - started,
        rows,
    )
    return SeedReport(
        rows=rows,
        violations=manifest,
        out_of_scope=out_of_scope,
        start=end - timedelta(days=days),
        end=end,
    )


def count_source_rows(dsn: str) -> dict[str, int]:
    """Row count per source table (``ops.operation_runs``, ...)."""
    with _transaction(dsn) as conn:
        return _count_rows(conn)[0]
