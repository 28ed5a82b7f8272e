"""`make bench`: export_pipeline against the raw COPY limit and against dlt, in one run.

The parent process builds (or reuses) the reference source, then runs every contender in its own
subprocess (this file, ``_worker <kind>``) so that each one's peak RSS is its own: the parent
samples the RSS of the worker's whole process tree with psutil. Each worker reports the time of
the work itself (imports and interpreter start-up excluded) and the parent adds the process wall.

Per repeat, on the same database:

1. ``copy``: ``COPY (SELECT <contract columns> FROM <table> WHERE <in scope>) TO STDOUT (FORMAT
   binary)`` per dataset, read with psycopg and thrown away: the extract limit.
2. ``dlt``: dlt's ``sql_database`` source (``sql_table`` per table) into DuckDB, with
   ``backend="pyarrow"`` and ``backend="connectorx"``: full load, then incremental.
3. ``ours``: ``run_dataset_batch`` per dataset into a fresh warehouse (full), the same 1%
   incremental, a micro-batch of 10k new events + 1k changed entities, and a day's reconciliation
   when ``export_pipeline/reconcile.py`` exists. Dagster start-up is measured once, separately.

Run ``python bench/run.py --help`` for the options; results go to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
RESULT_PREFIX = "BENCH_RESULT "

#: Share of entities that get a new version before the incremental run.
INCREMENTAL_SHARE = 0.01
MICROBATCH_EVENTS = 10_000
MICROBATCH_ENTITIES = 1_000
#: Changed rows get a cursor this far in the past: inside every window, and older than the
#: pipeline's default safety lag (60 s), so the next run reads them.
CHANGE_AGE = "interval '2 minutes'"


# ============================================================================================
# Shared helpers
# ============================================================================================


def _datasets():
    from export_pipeline.contract import DATASETS

    return DATASETS


def _scope_predicate(ds) -> str:
    """SQL predicate keeping a dataset's in-scope rows (the extract's own rule)."""
    if not ds.out_of_scope:
        return "true"
    parts = []
    for column, values in ds.out_of_scope:
        listed = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
        parts.append(f'("{column}" IS NULL OR "{column}" NOT IN ({listed}))')
    return " AND ".join(parts)


def _emit(result: dict) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["ru_maxrss_mb"] = round(max(usage.ru_maxrss, children.ru_maxrss) / 1024, 1)
    print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)


# ============================================================================================
# Workers (each in its own process)
# ============================================================================================


def worker_copy(params: dict) -> dict:
    """The limit: binary COPY of each dataset's contract columns, read and thrown away."""
    import psycopg

    t_import = time.perf_counter()
    per_dataset = {}
    with psycopg.connect(params["dsn"], autocommit=True) as conn:
        for ds in _datasets():
            columns = ", ".join(f'"{c.source_name}" AS "{c.name}"' for c in ds.source_columns)
            schema, table = ds.source_table.split(".")
            sql = (
                f'COPY (SELECT {columns} FROM "{schema}"."{table}" WHERE {_scope_predicate(ds)}) '
                "TO STDOUT (FORMAT binary)"
            )
            t0 = time.perf_counter()
            nbytes = 0
            with conn.cursor() as cur, cur.copy(sql) as copy:
                for block in copy:
                    nbytes += len(block)
            per_dataset[ds.name] = {"seconds": time.perf_counter() - t0, "bytes": nbytes}
    total = sum(d["seconds"] for d in per_dataset.values())
    return {"seconds": total, "datasets": per_dataset, "setup_seconds": t_import}


def _sqlalchemy_url(dsn: str) -> str:
    """A ``postgresql+psycopg://`` URL that connectorx can parse too (it wants a host)."""
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(dsn)
    auth = quote(parts.username or "")
    if parts.password:
        auth += ":" + quote(parts.password)
    netloc = (auth + "@" if auth else "") + (parts.hostname or "localhost")
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(scheme="postgresql+psycopg", netloc=netloc))


def worker_dlt(params: dict) -> dict:
    """dlt ``sql_table`` resources into DuckDB, configured as its documentation recommends.

    Append with an incremental cursor for runs, events and snapshots; merge on the primary key
    (with the cursor as incremental) for companies and persons. Only contract columns and
    in-scope rows are read, as export_pipeline does.
    """
    import dlt
    from dlt.sources.sql_database import sql_table
    from sqlalchemy import or_

    workdir = Path(params["workdir"])
    backend = params["backend"]
    credentials = _sqlalchemy_url(params["dsn"])

    def in_scope(query, table):
        if "entity_type" not in table.c:
            return query
        col = table.c.entity_type
        return query.where(or_(col.is_(None), col != "job"))

    t0 = time.perf_counter()
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{backend}",
        pipelines_dir=str(workdir / "pipelines"),
        destination=dlt.destinations.duckdb(str(workdir / f"dlt_{backend}.duckdb")),
        dataset_name="dx",
        progress="log" if params.get("verbose") else None,
    )
    resources = []
    for ds in _datasets():
        schema, table = ds.source_table.split(".")
        upsert = ds.write_mode == "upsert"
        resource_ = sql_table(
            credentials=credentials,
            table=table,
            schema=schema,
            backend=backend,
            included_columns=[c.source_name for c in ds.source_columns],
            incremental=dlt.sources.incremental(ds.column(ds.cursor).source_name),
            write_disposition="merge" if upsert else "append",
            primary_key=list(ds.primary_key) if upsert else None,
            query_adapter_callback=in_scope if ds.out_of_scope else None,
        )
        resource_.apply_hints(table_name=ds.name)
        resources.append(resource_)
    pipeline.run(resources)
    seconds = time.perf_counter() - t0
    counts = pipeline.last_trace.last_normalize_info.row_counts
    rows = {ds.name: int(counts.get(ds.name, 0)) for ds in _datasets()}
    steps = {
        step.step: (step.finished_at - step.started_at).total_seconds()
        for step in pipeline.last_trace.steps
        if step.finished_at and step.started_at
    }
    return {"seconds": seconds, "rows": sum(rows.values()), "datasets": rows, "steps": steps}


# --- stage timers for export_pipeline (measurement only: the package code is not changed) ----

_STAGE_SECONDS: dict[str, float] = defaultdict(float)
_STAGE_CALLS: dict[str, int] = defaultdict(int)

#: Statement text -> stage, first match wins (run_sql calls of batch.py and load.py).
_SQL_STAGES = (
    ("BEGIN TRANSACTION", "txn begin"),
    ("COMMIT", "commit"),
    ("TEMP TABLE _stage_dead_letters", "create stage"),
    ("TEMP TABLE _stage (", "create stage"),
    ("TEMP TABLE _stage", "create stage"),
    ("TEMP TABLE _classified", "classify SQL"),
    ("DELETE FROM", "delete updated rows"),
    ("INSERT INTO _stage_dead_letters", "dead letters (load stage)"),
    ("INSERT INTO _stage", "staging insert"),
    ('INSERT INTO "dx_', "insert into keyed table"),
    ("_loaded_keys AS", "dead letters (resolve)"),
    ("INSERT INTO dx_dead_letter", "dead letters (merge)"),
    ("UPDATE dx_dead_letter", "dead letters (resolve)"),
    ("_outcome, count", "outcome counts"),
    ("FROM _stage_dead_letters GROUP BY", "dead letters (load stage)"),
    ("INSERT INTO _export_batches", "ledger + watermark"),
    ("_export_watermarks", "ledger + watermark"),
)


def _timed(stage: str, fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _STAGE_SECONDS[stage] += time.perf_counter() - t0
            _STAGE_CALLS[stage] += 1

    return wrapper


def _timed_generator(stage: str, fn):
    def wrapper(*args, **kwargs):
        it = iter(fn(*args, **kwargs))
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                _STAGE_SECONDS[stage] += time.perf_counter() - t0
                return
            _STAGE_SECONDS[stage] += time.perf_counter() - t0
            _STAGE_CALLS[stage] += 1
            yield item

    return wrapper


def _sql_stage(sql: str) -> str:
    for needle, stage in _SQL_STAGES:
        if needle in sql:
            return stage
    return "other SQL"


def _timed_run_sql(fn):
    def wrapper(con, sql, *args, **kwargs):
        stage = "sql: " + _sql_stage(sql)
        t0 = time.perf_counter()
        try:
            return fn(con, sql, *args, **kwargs)
        finally:
            _STAGE_SECONDS[stage] += time.perf_counter() - t0
            _STAGE_CALLS[stage] += 1

    return wrapper


def _install_stage_timers() -> None:
    """Wrap the stage functions the batch calls by module attribute, where they exist."""
    from export_pipeline import batch, extract, load, validate

    def wrap(module, name, stage, generator=False):
        fn = getattr(module, name, None)
        if fn is not None:
            setattr(module, name, (_timed_generator if generator else _timed)(stage, fn))

    wrap(extract, "extract_window", "extract (ADBC stream)", generator=True)
    wrap(extract, "check_source_schema", "source schema check")
    wrap(validate, "to_frame", "to_frame (Arrow -> Polars)")
    wrap(validate, "validate_batch", "validate (total)")
    wrap(validate, "redact_columns", "  redact")
    wrap(validate, "_cast", "  cast")
    wrap(validate, "contract_schema", "  pandera schema build")
    wrap(validate, "_failures", "  pandera validate")
    wrap(validate, "_dead_letter_rows", "  dead-letter rows")
    wrap(load, "stage_rows", "staging insert (total)")
    wrap(load, "stage_dead_letters", "stage dead letters")
    wrap(load, "apply_classified", "apply classified (total)")
    for module in (batch, load):
        if hasattr(module, "run_sql"):
            module.run_sql = _timed_run_sql(module.run_sql)


def worker_ours(params: dict) -> dict:
    """One export of every dataset through ``run_dataset_batch`` (no Dagster)."""
    from export_pipeline.batch import run_dataset_batch
    from export_pipeline.config import Settings
    from export_pipeline.warehouse import open_warehouse

    _install_stage_timers()  # a few hundred perf_counter calls: negligible
    settings = Settings.from_env()
    per_dataset = {}
    t0 = time.perf_counter()
    with open_warehouse(settings.warehouse_path, memory_limit=settings.duckdb_memory_limit) as con:
        for ds in _datasets():
            t_ds = time.perf_counter()
            r = run_dataset_batch(ds, source_dsn=params["dsn"], con=con, settings=settings)
            per_dataset[ds.name] = {
                "seconds": time.perf_counter() - t_ds,
                "rows": r.extracted,
                "inserted": r.inserted,
                "updated": r.updated,
                "unchanged": r.unchanged,
                "stale": r.stale,
                "dead_lettered": r.dead_lettered,
            }
    seconds = time.perf_counter() - t0
    out = {
        "seconds": seconds,
        "rows": sum(d["rows"] for d in per_dataset.values()),
        "datasets": per_dataset,
    }
    out["stages"] = {k: round(v, 3) for k, v in _STAGE_SECONDS.items()}
    out["stage_calls"] = dict(_STAGE_CALLS)
    return out


def _install_lake_timer() -> list[dict]:
    """Time every ``lake.sync`` call (the Delta commits) in this process; return the log."""
    from export_pipeline import lake

    log: list[dict] = []
    original = lake.sync

    def timed(con, target, datasets):
        t0 = time.perf_counter()
        results = original(con, target, datasets)
        log.append(
            {
                "datasets": [ds.name for ds in datasets],
                "seconds": round(time.perf_counter() - t0, 3),
                "commits": [
                    {"dataset": r.dataset, "kind": r.kind, "rows": r.rows, "version": r.version}
                    for r in results
                ],
            }
        )
        return results

    lake.sync = timed
    return log


def worker_dagster(params: dict) -> dict:
    """One micro-batch through Dagster (``run_microbatch``): its start-up over the batch time,
    and the time its Delta commits took (``lake_seconds``)."""
    t0 = time.perf_counter()
    import export_pipeline.definitions  # noqa: F401  (imports are start-up, reported apart)
    from export_pipeline.launcher import run_microbatch

    lake_log = _install_lake_timer()
    t_import = time.perf_counter() - t0
    t1 = time.perf_counter()
    success, run_id, rows = run_microbatch()
    total = time.perf_counter() - t1
    batches = sum(r["duration_ms"] for r in rows) / 1000
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        steps = {
            s.step_key: round(s.end_time - s.start_time, 3)
            for s in instance.get_run_step_stats(run_id)
            if s.start_time and s.end_time
        }
    return {
        "steps_seconds": dict(sorted(steps.items(), key=lambda kv: -kv[1])),
        "seconds": total,
        "import_seconds": t_import,
        "batch_seconds": batches,
        "dagster_overhead_seconds": total - batches,
        "lake_seconds": round(sum(x["seconds"] for x in lake_log), 3),
        "lake_syncs": lake_log,
        "success": success,
        "rows": sum(r["extracted"] for r in rows),
    }


def worker_reconcile(params: dict) -> dict:
    """Yesterday's reconciliation of every dataset, when ``export_pipeline.reconcile`` exists."""
    try:
        from export_pipeline.reconcile import reconcile_dataset
    except ImportError as exc:
        return {"skipped": f"export_pipeline.reconcile.reconcile_dataset unavailable: {exc}"}
    from datetime import timedelta

    from export_pipeline.config import Settings
    from export_pipeline.warehouse import open_warehouse

    settings = Settings.from_env()
    day = datetime.now(UTC).date() - timedelta(days=1)
    per_dataset = {}
    t0 = time.perf_counter()
    with open_warehouse(settings.warehouse_path, memory_limit=settings.duckdb_memory_limit) as con:
        for ds in _datasets():
            t_ds = time.perf_counter()
            checks = reconcile_dataset(
                ds, [day], source_dsn=params["dsn"], con=con, settings=settings
            )
            per_dataset[ds.name] = {
                "seconds": time.perf_counter() - t_ds,
                "checks": len(checks),
                "failed": sum(1 for c in checks if not getattr(c, "passed", True)),
            }
    return {"seconds": time.perf_counter() - t0, "day": str(day), "datasets": per_dataset}


WORKERS = {
    "copy": worker_copy,
    "dlt": worker_dlt,
    "ours": worker_ours,
    "dagster": worker_dagster,
    "reconcile": worker_reconcile,
}


def worker_main(kind: str, params_json: str) -> int:
    import warnings

    warnings.filterwarnings("ignore")
    params = json.loads(params_json)
    _emit(WORKERS[kind](params))
    return 0


# ============================================================================================
# Parent: source, mutations, sampling, reporting
# ============================================================================================


class TreeRssSampler:
    """Peak RSS of a process and all its descendants, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil

        self._proc = psutil.Process(pid)
        self._interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self._proc, *self._proc.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                return
            self._stop.wait(self._interval)

    def __enter__(self) -> TreeRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_worker(kind: str, params: dict, env: dict, wrap: list[str] | None = None) -> dict:
    """Run one contender in a subprocess; its result plus process wall and peak tree RSS."""
    cmd = [*(wrap or []), sys.executable, str(Path(__file__)), "_worker", kind, json.dumps(params)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    with TreeRssSampler(proc.pid) as sampler:
        out, err = proc.communicate()
    wall = time.perf_counter() - t0
    result = None
    for line in out.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
    if proc.returncode != 0 or result is None:
        tail = "\n".join((err or out).strip().splitlines()[-25:])
        raise RuntimeError(f"{kind} worker failed (exit {proc.returncode}):\n{tail}")
    result["process_wall_seconds"] = wall
    result["peak_rss_mb"] = round(sampler.peak / 2**20, 1)
    return result


def _psycopg(dsn: str):
    import psycopg

    return psycopg.connect(dsn, autocommit=True)


def source_counts(dsn: str) -> dict[str, int]:
    """In-scope rows per dataset, counted in the source."""
    counts = {}
    with _psycopg(dsn) as conn:
        for ds in _datasets():
            schema, table = ds.source_table.split(".")
            (n,) = conn.execute(
                f'SELECT count(*) FROM "{schema}"."{table}" WHERE {_scope_predicate(ds)}'
            ).fetchone()
            counts[ds.name] = int(n)
    return counts


_NEW_VERSION_SQL = """
WITH picked AS (
    SELECT org_id, entity_id FROM entities.{table}
    ORDER BY hashtext(entity_id::text || %(salt)s) LIMIT %(n)s
),
changed AS (
    UPDATE entities.{table} AS t
    SET record_version = t.record_version + 1,
        updated_at = now() - {age},
        last_enriched_at = now() - {age}
    FROM picked AS p
    WHERE t.org_id = p.org_id AND t.entity_id = p.entity_id
    RETURNING t.org_id, t.entity_id, t.record_version, t.canonical_payload, t.last_run_id
)
INSERT INTO entities.entity_snapshots (
    id, org_id, entity_type, entity_id, record_version, canonical_payload, captured_at,
    source_run_id
)
SELECT gen_random_uuid(), org_id, %(entity_type)s, entity_id, record_version,
    coalesce(canonical_payload, '{{}}'::jsonb) || jsonb_build_object('record_version',
    record_version), now() - {age}, last_run_id
FROM changed
"""

_NEW_EVENTS_SQL = """
INSERT INTO ops.operation_events (
    event_id, run_id, event_type, event_sequence, occurred_at, org_id, company_id, entity_type,
    entity_id, provider, http_status, raw_request_ref, raw_response_ref, payload_hash,
    error_code, error_message, metadata_json, created_at
)
SELECT gen_random_uuid(), md5(e.run_id::text || %(salt)s)::uuid, e.event_type, e.event_sequence,
    now() - {age}, e.org_id, e.company_id, e.entity_type, e.entity_id, e.provider,
    e.http_status, e.raw_request_ref, e.raw_response_ref, e.payload_hash, e.error_code,
    e.error_message, e.metadata_json, now()
FROM (
    SELECT * FROM ops.operation_events
    WHERE entity_type IS DISTINCT FROM 'job'
    ORDER BY occurred_at DESC LIMIT %(n)s
) AS e
"""


def new_entity_versions(dsn: str, total: int, salt: str) -> dict[str, int]:
    """Give ``total`` entities (companies and persons pro rata) a new version and snapshot."""
    changed = {}
    with _psycopg(dsn) as conn:
        sizes = {
            t: conn.execute(f"SELECT count(*) FROM entities.{t}").fetchone()[0]
            for t in ("company_entities", "person_entities")
        }
        all_entities = sum(sizes.values())
        for table, entity_type in (("company_entities", "company"), ("person_entities", "person")):
            n = max(1, round(total * sizes[table] / all_entities))
            conn.execute(
                _NEW_VERSION_SQL.format(table=table, age=CHANGE_AGE),
                {"salt": salt, "n": n, "entity_type": entity_type},
            )
            changed[table] = n
    return changed


def new_events(dsn: str, n: int, salt: str) -> int:
    with _psycopg(dsn) as conn:
        conn.execute(_NEW_EVENTS_SQL.format(age=CHANGE_AGE), {"salt": salt, "n": n})
    return n


def machine_facts(dsn: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import psutil

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    libs = {}
    for name in (
        "duckdb",
        "pyarrow",
        "polars",
        "pandera",
        "adbc-driver-postgresql",
        "psycopg",
        "dagster",
        "sqlalchemy",
        "dlt",
        "deltalake",
        "connectorx",
    ):
        try:
            libs[name] = version(name)
        except PackageNotFoundError:
            libs[name] = None
    with _psycopg(dsn) as conn:
        (pg,) = conn.execute("SELECT version()").fetchone()
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "export_pipeline", "sql"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "cpu_model": model,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": pg.split(" on ")[0],
        "libraries": libs,
        "git_commit": git,
        "package_dirty": bool(dirty),
    }


def _summary(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "runs": values}


class Bench:
    def __init__(self, args: argparse.Namespace, dsn: str, workroot: Path) -> None:
        self.args = args
        self.dsn = dsn
        self.workroot = workroot
        self.records: list[dict] = []
        self.scale = args.scale

    def env(self, workdir: Path) -> dict:
        env = dict(os.environ)
        env.update(
            {
                "EXPORT_SOURCE_DSN": self.dsn,
                "EXPORT_DATA_DIR": str(workdir),
                "DAGSTER_HOME": str(workdir / "dagster_home"),
                "PYTHONWARNINGS": "ignore",
                "RUNTIME__LOG_LEVEL": "WARNING",
                "RUNTIME__DLTHUB_TELEMETRY": "false",
            }
        )
        (workdir / "dagster_home").mkdir(parents=True, exist_ok=True)
        return env

    def record(self, repeat: int, contender: str, phase: str, result: dict, **extra) -> dict:
        rec = {
            "scale": self.scale,
            "repeat": repeat,
            "contender": contender,
            "phase": phase,
            **result,
            **extra,
        }
        self.records.append(rec)
        secs = result.get("seconds")
        rows = result.get("rows")
        print(
            f"  [{repeat}] {contender:<16} {phase:<12} "
            + (f"{secs:8.2f} s " if secs is not None else "   skipped ")
            + (f"{rows:>10,} rows " if rows is not None else "")
            + f"peak RSS {result.get('peak_rss_mb', 0):7.1f} MB"
            + (f"  ({result['skipped']})" if "skipped" in result else ""),
            flush=True,
        )
        return rec

    def run(self) -> None:
        only = set(self.args.only.split(",")) if self.args.only else None

        def wanted(name: str) -> bool:
            return only is None or name in only

        for repeat in range(1, self.args.repeat + 1):
            print(f"repeat {repeat}/{self.args.repeat}", flush=True)
            counts = source_counts(self.dsn)
            rdir = self.workroot / f"s{self.scale:g}" / f"r{repeat}"
            rdir.mkdir(parents=True, exist_ok=True)
            if wanted("copy"):
                res = run_worker("copy", {"dsn": self.dsn}, self.env(rdir / "copy"))
                for name, d in res["datasets"].items():
                    d["rows"] = counts[name]
                res["rows"] = sum(counts.values())
                res["bytes"] = sum(d["bytes"] for d in res["datasets"].values())
                self.record(repeat, "copy_limit", "full", res)
            backends = [b for b in ("pyarrow", "connectorx") if wanted(f"dlt_{b}")]
            for backend in backends:
                wd = rdir / f"dlt_{backend}"
                wd.mkdir(parents=True, exist_ok=True)
                params = {"dsn": self.dsn, "workdir": str(wd), "backend": backend}
                res = run_worker("dlt", params, self.env(wd))
                self.record(repeat, f"dlt_{backend}", "full", res)
            ours_dir = rdir / "ours"
            ours_dir.mkdir(parents=True, exist_ok=True)
            if wanted("ours"):
                res = run_worker("ours", {"dsn": self.dsn}, self.env(ours_dir))
                self.record(repeat, "export_pipeline", "full", res)
                # The path a user runs first: `export-pipeline run` on an empty data dir, one
                # Dagster run exporting every dataset and committing the whole lake.
                e2e = rdir / "ours_first_run"
                e2e.mkdir(parents=True, exist_ok=True)
                res = run_worker("dagster", {"dsn": self.dsn}, self.env(e2e))
                self.record(repeat, "export_pipeline", "first_full_run", res)

            n_entities = round(
                INCREMENTAL_SHARE
                * (counts["dx_company_entities_v1"] + counts["dx_person_entities_v1"])
            )
            changed = new_entity_versions(self.dsn, n_entities, f"inc{repeat}")
            print(f"  [{repeat}] source: new versions for {changed}", flush=True)
            for backend in backends:
                wd = rdir / f"dlt_{backend}"
                params = {"dsn": self.dsn, "workdir": str(wd), "backend": backend}
                res = run_worker("dlt", params, self.env(wd))
                self.record(repeat, f"dlt_{backend}", "incremental", res)
            if wanted("ours"):
                res = run_worker("ours", {"dsn": self.dsn}, self.env(ours_dir))
                self.record(repeat, "export_pipeline", "incremental", res)
                new_events(self.dsn, MICROBATCH_EVENTS, f"mb{repeat}")
                new_entity_versions(self.dsn, MICROBATCH_ENTITIES, f"mb{repeat}")
                res = run_worker("ours", {"dsn": self.dsn}, self.env(ours_dir))
                self.record(repeat, "export_pipeline", "microbatch", res)
                if repeat == 1:
                    # The first Dagster run on this data dir also commits the whole lake for the
                    # first time (the direct calls above only record pending lake changes); the
                    # second, after another micro-batch's worth of source changes, is the steady
                    # state a schedule sees.
                    res = run_worker("dagster", {"dsn": self.dsn}, self.env(ours_dir))
                    self.record(repeat, "export_pipeline", "dagster_first_run", res)
                    new_events(self.dsn, MICROBATCH_EVENTS, f"dg{repeat}")
                    new_entity_versions(self.dsn, MICROBATCH_ENTITIES, f"dg{repeat}")
                    res = run_worker("dagster", {"dsn": self.dsn}, self.env(ours_dir))
                    self.record(repeat, "export_pipeline", "dagster_run", res)
                res = run_worker("reconcile", {"dsn": self.dsn}, self.env(ours_dir))
                self.record(repeat, "export_pipeline", "reconcile_day", res)

    def profile(self) -> dict:
        """Our full export once more, on a fresh warehouse, under py-spy and the stage timers."""
        wd = self.workroot / "profile"
        wd.mkdir(parents=True, exist_ok=True)
        stamp = self.args.stamp
        raw = RESULTS_DIR / f"{stamp}-pyspy.txt"
        pyspy = Path(sys.executable).with_name("py-spy")
        wrap = [str(pyspy), "record", "--idle", "--rate", "100", "--format", "raw"]
        wrap += ["--output", str(raw), "--"]
        print("profile: export_pipeline full export under py-spy + stage timers", flush=True)
        _snapshot_sources()
        try:
            res = run_worker("ours", {"dsn": self.dsn, "stages": True}, self.env(wd), wrap=wrap)
        except (RuntimeError, FileNotFoundError) as exc:
            print(f"  py-spy failed ({exc}); stage timers only", flush=True)
            wd2 = self.workroot / "profile2"
            wd2.mkdir(parents=True, exist_ok=True)
            res = run_worker("ours", {"dsn": self.dsn, "stages": True}, self.env(wd2))
            raw = None
        res["pyspy_raw"] = str(raw) if raw else None
        if raw and raw.exists():
            res["pyspy_stages"] = pyspy_stages(raw)
        return res


# --- py-spy raw (collapsed) stacks -> stages -------------------------------------------------

#: (function, statement text fragment or None) -> stage; innermost export_pipeline frame wins.
_FRAME_STAGES = (
    ("extract_window", None, "extract (ADBC stream)"),
    ("check_source_schema", None, "source schema check"),
    ("source_now", None, "source schema check"),
    ("to_frame", None, "to_frame (Arrow -> Polars)"),
    ("redact_columns", None, "redact"),
    ("_redact_text_rows", None, "redact"),
    ("_redact_json_rows", None, "redact"),
    ("redact_json_text", None, "redact"),
    ("redact_text", None, "redact"),
    ("_cast", None, "cast"),
    ("_finite_timestamp", None, "cast"),
    ("contract_schema", None, "pandera schema build"),
    ("_failures", None, "pandera validate"),
    ("_dead_letter_rows", None, "dead-letter rows"),
    ("validate_batch", None, "validate (other)"),
    ("stage_rows", None, "staging insert"),
    ("stage_dead_letters", None, "dead letters"),
    ("create_stage", None, "create stage"),
    ("apply_classified", "classify_sql", "classify SQL"),
    ("apply_classified", "DELETE FROM", "delete updated rows"),
    ("apply_classified", "INSERT INTO {target}", "insert into keyed table"),
    ("apply_classified", "STAGE_DEAD_LETTERS", "dead letters"),
    ("apply_classified", "_loaded_keys", "dead letters"),
    ("apply_classified", "GROUP BY", "outcome counts"),
    ("run_dataset_batch", "merge_dead_letters", "dead letters"),
    ("run_dataset_batch", "update_resolved", "dead letters"),
    ("run_dataset_batch", "COMMIT", "commit"),
    ("run_dataset_batch", "BEGIN", "txn begin"),
    ("_record_batch", None, "ledger + watermark"),
    ("run_dataset_batch", "merge_watermark", "ledger + watermark"),
    ("_with_position", None, "ledger + watermark"),
    ("get_watermark", None, "ledger + watermark"),
)

_STATEMENT_CACHE: dict[tuple[str, int], str] = {}
#: The package's sources as the profiled worker loaded them (others may edit the tree meanwhile).
_SOURCE_SNAPSHOT: dict[str, str] = {}


def _snapshot_sources() -> None:
    for path in (ROOT / "export_pipeline").rglob("*.py"):
        _SOURCE_SNAPSHOT[str(path.relative_to(ROOT))] = path.read_text()


def _statement_text(path: str, line: int) -> str:
    """Source text of the innermost statement of ``path`` spanning ``line`` (cached)."""
    key = (path, line)
    if key not in _STATEMENT_CACHE:
        text = ""
        try:
            source = _SOURCE_SNAPSHOT.get(path) or (ROOT / path).read_text()
            best = None
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.stmt) and not isinstance(
                    node, ast.FunctionDef | ast.With | ast.Try | ast.For | ast.If | ast.ClassDef
                ):
                    if node.lineno <= line <= (node.end_lineno or node.lineno):
                        span = (node.end_lineno or node.lineno) - node.lineno
                        if best is None or span < best[0]:
                            best = (span, node)
            if best is not None:
                text = ast.get_source_segment(source, best[1]) or ""
        except (OSError, SyntaxError):
            pass
        _STATEMENT_CACHE[key] = text
    return _STATEMENT_CACHE[key]


def _frame_stage(func: str, path: str, line: int) -> str | None:
    for name, fragment, stage in _FRAME_STAGES:
        # run_dataset_batch may delegate to helpers (e.g. _run_dataset_batch_once): same rules.
        if func != name and not func.lstrip("_").startswith(name):
            continue
        if fragment is None or fragment in _statement_text(path, line):
            return stage
    return None


def pyspy_stages(raw: Path) -> dict[str, float]:
    """Share of samples per stage, from py-spy's raw (collapsed) output."""
    totals: dict[str, int] = defaultdict(int)
    all_samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        all_samples += n
        stage = "outside run_dataset_batch (imports, start-up)"
        frames = stack.split(";")
        in_batch = False
        for frame in frames:
            # "function (path:line)"
            func, _, loc = frame.partition(" (")
            path, _, lineno = loc.rstrip(")").rpartition(":")
            if "export_pipeline" not in path:
                continue
            if func.strip().lstrip("_").startswith("run_dataset_batch"):
                in_batch = True
            if in_batch:
                found = _frame_stage(func.strip(), path, int(lineno) if lineno.isdigit() else 0)
                if found:
                    stage = found
                elif in_batch and stage.startswith("outside"):
                    stage = "batch (other)"
        totals[stage] += n
    return {
        k: round(100 * v / all_samples, 1) for k, v in sorted(totals.items(), key=lambda x: -x[1])
    }


# --- report -----------------------------------------------------------------------------------


def aggregate(records: list[dict]) -> list[dict]:
    rows = []
    for scale in sorted({r.get("scale") for r in records}, key=lambda x: x or 0):
        rows += _aggregate_scale([r for r in records if r.get("scale") == scale], scale)
    return rows


def _aggregate_scale(records: list[dict], scale: float | None) -> list[dict]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        if "skipped" not in r:
            groups[(r["contender"], r["phase"])].append(r)
    copy = groups.get(("copy_limit", "full"))
    copy_median = statistics.median(r["seconds"] for r in copy) if copy else None
    copy_min = min(r["seconds"] for r in copy) if copy else None
    copy_bytes = copy[0]["bytes"] if copy else None
    rows = []
    for (contender, phase), recs in groups.items():
        secs = [r["seconds"] for r in recs]
        s = _summary(secs)
        nrows = recs[0].get("rows")
        full = phase in ("full", "first_full_run")
        row = {
            "scale": scale,
            "contender": contender,
            "phase": phase,
            "rows": nrows,
            "seconds_min": s["min"],
            "seconds_median": s["median"],
            "runs": len(recs),
            "rows_per_s": (nrows / s["min"]) if nrows else None,
            "mb_per_s": (copy_bytes / 2**20 / s["min"]) if (copy_bytes and full) else None,
            "ratio_to_copy_min": (s["min"] / copy_min) if (copy_min and full) else None,
            "ratio_to_copy_median": (s["median"] / copy_median) if (copy_median and full) else None,
            "peak_rss_mb": max(r.get("peak_rss_mb", 0) for r in recs),
            "process_wall_s": min(r.get("process_wall_seconds", 0) for r in recs),
        }
        if phase.startswith("dagster") or phase == "first_full_run":
            row["dagster_overhead_s"] = min(r["dagster_overhead_seconds"] for r in recs)
            row["import_s"] = min(r["import_seconds"] for r in recs)
            row["lake_s"] = min(r.get("lake_seconds", 0.0) for r in recs)
            row["steps_seconds"] = recs[0].get("steps_seconds", {})
        rows.append(row)
    order = ["copy_limit", "dlt_pyarrow", "dlt_connectorx", "export_pipeline"]
    phases = [
        "full",
        "first_full_run",
        "incremental",
        "microbatch",
        "dagster_first_run",
        "dagster_run",
        "reconcile_day",
    ]
    rows.sort(key=lambda r: (order.index(r["contender"]), phases.index(r["phase"])))
    return rows


#: Issue 12's targets.
TARGET_DAGSTER_RUN_S = 3.0  # micro-batch through Dagster at scale 1, steady state
TARGET_SCALE_GROWTH = 1.25  # the same at scale 2, over scale 1
TARGET_FIRST_RUN_X_COPY = 4.0  # first full run end to end (warehouse + lake), x COPY limit
TARGET_RSS_MB = 1024.0  # peak RSS of any of our runs, at scales 1 and 2


def _row(summary: list[dict], scale: float, contender: str, phase: str) -> dict | None:
    return next(
        (
            r
            for r in summary
            if r["scale"] == scale and r["contender"] == contender and r["phase"] == phase
        ),
        None,
    )


def targets(summary: list[dict]) -> list[dict]:
    """Issue 12's targets against this run: one line each, with the measured figure."""
    out = []
    scales = sorted({r["scale"] for r in summary})
    for scale in scales:
        run = _row(summary, scale, "export_pipeline", "dagster_run")
        if run and scale == 1:
            out.append(
                {
                    "target": "micro-batch through Dagster, steady state (s), scale 1",
                    "limit": TARGET_DAGSTER_RUN_S,
                    "measured": run["seconds_min"],
                }
            )
        first = _row(summary, scale, "export_pipeline", "first_full_run")
        if first and first["ratio_to_copy_min"] is not None:
            out.append(
                {
                    "target": f"first full run end to end, x COPY limit, scale {scale:g}",
                    "limit": TARGET_FIRST_RUN_X_COPY,
                    "measured": first["ratio_to_copy_min"],
                }
            )
        ours = [r for r in summary if r["scale"] == scale and r["contender"] == "export_pipeline"]
        if ours:
            worst = max(ours, key=lambda r: r["peak_rss_mb"])
            out.append(
                {
                    "target": f"peak RSS of our runs (MB), scale {scale:g} ({worst['phase']})",
                    "limit": TARGET_RSS_MB,
                    "measured": worst["peak_rss_mb"],
                }
            )
    one, two = _row(summary, 1, "export_pipeline", "dagster_run"), None
    if 2 in scales:
        two = _row(summary, 2, "export_pipeline", "dagster_run")
    if one and two:
        out.append(
            {
                "target": "micro-batch through Dagster, scale 2 over scale 1",
                "limit": TARGET_SCALE_GROWTH,
                "measured": two["seconds_min"] / one["seconds_min"],
            }
        )
    for t in out:
        t["met"] = t["measured"] <= t["limit"]
    return out


def markdown(summary: list[dict], facts: dict, args: argparse.Namespace, when: str) -> str:
    def f(v, fmt):
        return "–" if v is None else format(v, fmt)

    notes = {
        "copy_limit": "binary COPY to nowhere (psycopg)",
        "dlt_pyarrow": "no validation, no dead letters",
        "dlt_connectorx": "no validation, no dead letters",
        "export_pipeline": "validate + dead letters + keyed upsert (no lake)",
    }
    lines = [
        f"Run {when}, scale(s) {', '.join(f'{x:g}' for x in args.scales)}, "
        f"{args.repeat} repeat(s); "
        f"{facts['logical_cores']} cores ({facts['cpu_model']}), {facts['ram_gib']} GiB RAM, "
        f"{facts['postgresql']}, duckdb {facts['libraries']['duckdb']}, "
        f"deltalake {facts['libraries'].get('deltalake', '?')}, "
        f"dlt {facts['libraries']['dlt']}, connectorx {facts['libraries']['connectorx']}, "
        f"commit {facts['git_commit']}{' (package modified)' if facts['package_dirty'] else ''}.",
    ]
    checked = targets(summary)
    if checked:
        lines += [
            "",
            "Targets (issue 12):",
            "",
            "| target | limit | measured | met |",
            "|---|---:|---:|---|",
        ]
        for t in checked:
            miss = "" if t["met"] else f" (missed by {t['measured'] / t['limit'] - 1:.0%})"
            lines.append(
                f"| {t['target']} | {t['limit']:g} | {t['measured']:.2f} | "
                f"{'yes' if t['met'] else 'no' + miss} |"
            )
    for scale in sorted({r["scale"] for r in summary}):
        lines += [
            "",
            f"Scale {scale:g}:",
            "",
            "| contender | phase | rows | time min (s) | time median (s) | rows/s | MB/s | "
            "× COPY (min) | peak RSS (MB) | notes |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in (x for x in summary if x["scale"] == scale):
            note = notes[r["contender"]] if r["phase"] == "full" else ""
            if r["phase"] == "first_full_run":
                note = (
                    "`export-pipeline run` on an empty data dir: one Dagster run, every "
                    f"dataset into the warehouse and the Delta lake (lake {r['lake_s']:.1f} s); "
                    f"imports {r['import_s']:.1f} s before it (not counted)"
                )
            if r["phase"] == "dagster_first_run":
                note = (
                    "the first Dagster run on the direct calls' warehouse: it also commits the "
                    f"whole lake for the first time (lake {r['lake_s']:.1f} s)"
                )
            if r["phase"] == "dagster_run":
                direct = _row(summary, scale, r["contender"], "microbatch")
                note = (
                    "another micro-batch (10k events, 1k entities) through `run_microbatch()`, "
                    f"one Delta commit per dataset (lake {r['lake_s']:.2f} s): "
                    f"{r['dagster_overhead_s']:.1f} s over the ledger's batch durations"
                    + (
                        f", {r['seconds_min'] - direct['seconds_min']:.1f} s over the direct call"
                        if direct
                        else ""
                    )
                    + f"; imports {r['import_s']:.1f} s before it (not counted); "
                    + f"process wall {r['process_wall_s']:.1f} s"
                )
            lines.append(
                f"| {r['contender']} | {r['phase']} | {f(r['rows'], ',')} | "
                f"{r['seconds_min']:.2f} | {r['seconds_median']:.2f} | "
                f"{f(r['rows_per_s'], ',.0f')} | {f(r['mb_per_s'], '.0f')} | "
                f"{f(r['ratio_to_copy_min'], '.2f')} | {r['peak_rss_mb']:.0f} | {note} |"
            )
    lines.append("")
    lines.append(
        "MB/s: binary-COPY bytes of the same rows over the time. Times exclude interpreter "
        "start-up and imports (each contender runs in its own process; peak RSS is that "
        "process tree's)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_worker":
        return worker_main(argv[1], argv[2])
    if argv and argv[0] == "_pyspy":  # re-read a saved profile: _pyspy <results/...-pyspy.txt>
        for stage, share in pyspy_stages(Path(argv[1])).items():
            print(f"  {stage:<46} {share:6.1f}")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scale",
        default="1,2",
        help="seed scale(s), comma-separated (1 = 1M runs; default 1,2: the issue's targets)",
    )
    parser.add_argument("--days", type=int, default=7, help="days of seeded history")
    parser.add_argument("--repeat", type=int, default=3, help="repeats (min and median)")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated subset of copy,dlt_pyarrow,dlt_connectorx,ours (default: all)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile one full export of ours (py-spy + stage timers)",
    )
    parser.add_argument(
        "--reuse-source",
        action="store_true",
        help="do not seed: benchmark the source as it is (EXPORT_SOURCE_DSN or the bench dir)",
    )
    parser.add_argument(
        "--pgdata",
        default=None,
        help="embedded PostgreSQL data dir (default: a temp dir, removed at the end)",
    )
    args = parser.parse_args(argv)
    args.scales = [float(x) for x in str(args.scale).split(",") if x.strip()]
    args.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))

    import shutil
    import warnings

    warnings.filterwarnings("ignore")
    from export_pipeline.source import embedded_postgres, seed_source

    workroot = Path(tempfile.mkdtemp(prefix="export_bench-"))
    pgdata = Path(args.pgdata) if args.pgdata else workroot / "pgdata"
    dsn = os.environ.get("EXPORT_SOURCE_DSN")
    if not dsn and args.pgdata:
        dsn = embedded_postgres(pgdata)
    elif not dsn:
        import pgserver  # a throw-away server: its data directory goes when we exit

        server = pgserver.get_server(pgdata, cleanup_mode="delete")
        dsn = str(server.get_uri())
    facts = machine_facts(dsn)
    print(json.dumps(facts, indent=1), flush=True)
    seed_info: dict[str, Any] = {}
    bench = Bench(args, dsn, workroot)
    profile = None
    try:
        for scale in args.scales:
            bench.scale = args.scale = scale
            if not args.reuse_source:
                print(f"seeding the source at scale {scale:g} ...", flush=True)
                t0 = time.perf_counter()
                report = seed_source(dsn, scale=scale, days=args.days)
                seed_info[f"{scale:g}"] = {
                    "seconds": time.perf_counter() - t0,
                    "rows": report.rows,
                }
                print(f"  seeded in {seed_info[f'{scale:g}']['seconds']:.1f} s: {report.rows}")
            bench.run()
        profile = bench.profile() if args.profile else None
    finally:
        summary = aggregate(bench.records)
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        table = markdown(summary, facts, args, when)
        result = {
            "when": when,
            "args": {k: v for k, v in vars(args).items()},
            "machine": facts,
            "seed": seed_info,
            "summary": summary,
            "targets": targets(summary),
            "records": bench.records,
        }
        if profile:
            result["profile"] = profile
        out = RESULTS_DIR / f"{args.stamp}.json"
        out.write_text(json.dumps(result, indent=1, default=str))
        (RESULTS_DIR / f"{args.stamp}.md").write_text(table + "\n")
        print()
        print(table)
        if profile:
            print("\nprofile (stage timers, s):")
            for k, v in sorted(profile.get("stages", {}).items(), key=lambda x: -x[1]):
                print(f"  {k:<40} {v:8.2f}")
            if profile.get("pyspy_stages"):
                print("profile (py-spy, % of samples):")
                for k, v in profile["pyspy_stages"].items():
                    print(f"  {k:<40} {v:6.1f}")
        print(f"\nresults: {out}")
        for sub in workroot.iterdir():
            if sub.name != "pgdata":
                shutil.rmtree(sub, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
