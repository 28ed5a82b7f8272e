"""`export-pipeline source check`: can this source be exported, and what will it cost?

Per dataset: the relation it reads (``relations.py``), missing or mistyped contract columns, the
window query's plan (EXPLAIN of the real query: whether an index serves it, the row estimate),
row-level security on the relation or the tables behind it and whether it applies to the role
that reads them, SELECT privileges. Per server: version, primary or standby and replay lag, and
whether the connection goes through a pooling proxy (the window binding needs session settings
to survive from one statement to the next within a transaction).

Problems that block an export are ``error`` findings (the command exits non-zero); those that
only cost time or freshness are ``warning`` findings. Only the system catalogs and EXPLAIN are
used: nothing is written, no row is read.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import adbc_driver_postgresql.dbapi as adbc
from adbc_driver_postgresql import StatementOptions

from export_pipeline import extract, source_session
from export_pipeline.batch import scrub
from export_pipeline.config import Settings, redact_dsn
from export_pipeline.contract import DATASETS, Dataset
from export_pipeline.extract import ACCEPTED_SOURCE_TYPES, Window
from export_pipeline.relations import source_dataset, source_relation
from export_pipeline.sqlfiles import read_sql

Level = Literal["error", "warning", "info"]

#: Ports where a pooling proxy usually listens (PgBouncer's default; Supabase's pooler).
POOLER_PORTS = {6432: "PgBouncer's default port", 6543: "Supabase's transaction pooler port"}

_RELKINDS = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
}
_INDEX_NODES = {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}


@dataclass(frozen=True)
class Finding:
    level: Level
    message: str


@dataclass
class DatasetCheck:
    dataset: str
    relation: str
    #: How the relation was chosen: reference, schema (EXPORT_SOURCE_SCHEMA) or override.
    origin: str
    kind: str | None = None
    missing_columns: list[str] = field(default_factory=list)
    mistyped_columns: list[dict[str, str]] = field(default_factory=list)
    can_select: bool | None = None
    #: The relation and what it reads through views, with privileges and row-level security.
    relations: list[dict[str, Any]] = field(default_factory=list)
    index_scans: list[str] = field(default_factory=list)
    seq_scans: list[str] = field(default_factory=list)
    estimated_rows: int | None = None
    explained_window: dict[str, str] | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def blocking(self) -> bool:
        return any(f.level == "error" for f in self.findings)


@dataclass
class ServerCheck:
    dsn: str
    host: str | None
    port: int | None
    server_version: str | None = None
    standby: bool | None = None
    replay_lag_seconds: float | None = None
    replay_caught_up: bool | None = None
    replay_paused: bool | None = None
    current_user: str | None = None
    transaction_read_only: str | None = None
    #: Session settings survive between statements of one transaction (the window binding).
    settings_kept_in_transaction: bool | None = None
    #: ... and across transactions, on one backend: a direct (or session-pooled) connection.
    settings_kept_across_transactions: bool | None = None
    backend_changed: bool | None = None
    pooled: bool | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def blocking(self) -> bool:
        return any(f.level == "error" for f in self.findings)


@dataclass
class SourceReport:
    server: ServerCheck
    datasets: list[DatasetCheck]

    @property
    def blocking(self) -> bool:
        return self.server.blocking or any(d.blocking for d in self.datasets)

    @property
    def warnings(self) -> int:
        every = [*self.server.findings, *(f for d in self.datasets for f in d.findings)]
        return sum(f.level == "warning" for f in every)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = not self.blocking
        out["server"]["blocking"] = self.server.blocking
        for d, check in zip(out["datasets"], self.datasets, strict=True):
            d["blocking"] = check.blocking
        return out


def _rows(conn: adbc.Connection, query: str, params: tuple = ()) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(query, parameters=params or None)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _base_type(pg_type: str) -> str:
    """``character varying(255)`` -> ``character varying``; ``timestamp(3) with time zone`` ->
    ``timestamp with time zone``: the names ``extract.ACCEPTED_SOURCE_TYPES`` uses."""
    return re.sub(r"\s*\(\d+(,\s*\d+)?\)", "", pg_type)


def _check_columns(conn: adbc.Connection, ds: Dataset, check: DatasetCheck) -> None:
    schema, name = ds.source_table.split(".")
    found = {
        r["column_name"]: _base_type(r["data_type"])
        for r in _rows(
            conn, read_sql("source_check", "select_relation_columns.sql"), (schema, name)
        )
    }
    for col in ds.source_columns:
        pg_type = found.get(col.source_name)
        if pg_type is None:
            check.missing_columns.append(col.source_name)
        elif pg_type not in ACCEPTED_SOURCE_TYPES[col.type]:
            check.mistyped_columns.append(
                {"column": col.source_name, "found": pg_type, "contract": col.type}
            )
    if check.missing_columns:
        check.findings.append(
            Finding("error", "missing contract columns: " + ", ".join(check.missing_columns))
        )
    for m in check.mistyped_columns:
        check.findings.append(
            Finding(
                "error",
                f"column {m['column']} is {m['found']}, the contract needs {m['contract']}",
            )
        )


def _check_access(check: DatasetCheck, tree: list[dict[str, Any]]) -> None:
    top = tree[0]
    check.kind = _RELKINDS.get(top["relkind"], top["relkind"])
    check.can_select = bool(top["can_select"] and top["schema_usage"])
    if not top["schema_usage"]:
        schema = check.relation.split(".")[0]
        check.findings.append(
            Finding(
                "error",
                f"role {top['reader']} has no USAGE on schema {schema}: "
                f"GRANT USAGE ON SCHEMA {schema} TO {top['reader']}",
            )
        )
    if not top["can_select"]:
        check.findings.append(
            Finding(
                "error",
                f"role {top['reader']} has no SELECT on {check.relation}: "
                f"GRANT SELECT ON {check.relation} TO {top['reader']}",
            )
        )
    if top["relkind"] == "m":
        check.findings.append(
            Finding(
                "warning",
                f"{check.relation} is a materialized view: the pipeline sees its rows as of "
                "its last REFRESH, and rows committed since appear only after the next one",
            )
        )
    for rel in tree[1:]:
        if not (rel["can_select"] and rel["schema_usage"]):
            check.findings.append(
                Finding(
                    "error",
                    f"{rel['relation']} (read by the view as {rel['reader']}) is not readable "
                    f"by {rel['reader']}: the view fails when queried",
                )
            )
    for rel in tree:
        if not rel["rls_enabled"]:
            continue
        if rel["rls_applies"]:
            via = "" if rel["depth"] == 0 else " (through the view, as its owner)"
            fix = (
                "read it through a view owned by the table owner (`export-pipeline source "
                "views`), or give the role BYPASSRLS"
                if rel["depth"] == 0
                else "create the view as the table owner, or give the owner a policy"
            )
            check.findings.append(
                Finding(
                    "error",
                    f"row-level security on {rel['relation']} applies to role "
                    f"{rel['reader']}{via} with {rel['policies']} policies: it would silently "
                    f"hide rows; {fix}",
                )
            )
        else:
            check.findings.append(
                Finding(
                    "info",
                    f"row-level security is enabled on {rel['relation']} but does not apply "
                    f"to {rel['reader']} (owner, superuser or BYPASSRLS)",
                )
            )


def _plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = [node]
    for child in node.get("Plans", []):
        out += _plan_nodes(child)
    return out


def _narrows(conn: adbc.Connection, node: dict[str, Any]) -> bool:
    """An index scan whose condition is on the index's leading column (it reads a range of the
    index, not all of it filtered by a later column)."""
    condition = node.get("Index Cond")
    if not condition:
        return False
    rows = _rows(
        conn, read_sql("source_check", "select_index_leading_column.sql"), (node["Index Name"],)
    )
    leading = rows[0]["leading_column"] if rows else None
    return leading is None or re.search(rf"\b{re.escape(leading)}\b", condition) is not None


def _explain_window(
    conn: adbc.Connection, ds: Dataset, check: DatasetCheck, settings: Settings
) -> None:
    """EXPLAIN the real window query for a steady-state micro-batch window.

    Sequential scans are disabled for the EXPLAIN (``enable_seqscan`` off, for this transaction
    only): the planner then uses any index that can serve the query, whatever the table's size,
    so a relation still read in full (a sequential scan, or an index scan with no condition)
    means no index serves it. Row estimates do not depend on the setting.
    """
    now = extract.source_now(conn)
    start = now - settings.lookback - timedelta(minutes=15)
    window = Window(start=start, end=now)
    check.explained_window = {"start": start.isoformat(), "end": window.end.isoformat()}
    try:
        with conn.cursor() as cur:
            extract.bind_window(cur, ds, window)
            cur.execute(read_sql("source_check", "set_local_no_seqscan.sql"))
            cur.fetchall()
            # ADBC streams results through COPY, which cannot wrap an EXPLAIN.
            cur.adbc_statement.set_options(**{StatementOptions.USE_COPY.value: "false"})
            cur.execute("EXPLAIN (FORMAT JSON, VERBOSE) " + extract.window_query(ds))
            ((plan_text,),) = cur.fetchall()
    except Exception as exc:  # noqa: BLE001 - reported, and the connection is rolled back
        conn.rollback()
        message = scrub(" ".join(str(exc).split()), None)
        check.findings.append(Finding("error", f"the window query fails: {message}"))
        return
    plan = json.loads(plan_text) if isinstance(plan_text, str) else plan_text
    root = plan[0]["Plan"]
    nodes = _plan_nodes(root)
    check.estimated_rows = int(root.get("Plan Rows", 0))
    narrowing = [n for n in nodes if n["Node Type"] in _INDEX_NODES and _narrows(conn, n)]
    check.index_scans = sorted({n["Index Name"] for n in narrowing})
    whole = [
        n
        for n in nodes
        if n["Node Type"] == "Seq Scan" or (n["Node Type"] in _INDEX_NODES and n not in narrowing)
    ]
    check.seq_scans = sorted(
        {
            f"{n.get('Schema', '')}.{n['Relation Name']}".lstrip(".")
            if "Relation Name" in n
            else f"index {n['Index Name']}"
            for n in whole
        }
    )
    if check.seq_scans:
        cursor = ds.column(ds.cursor).source_name
        check.findings.append(
            Finding(
                "warning",
                f"the window query (on {cursor}) reads {', '.join(check.seq_scans)} in full: "
                "no index serves it, so every micro-batch scans the whole of each (fine while "
                "small; an index on the column behind the cursor fixes it)",
            )
        )


def check_dataset(conn: adbc.Connection, ds: Dataset, settings: Settings) -> DatasetCheck:
    rel = source_relation(ds, settings)
    mapped = source_dataset(ds, settings)
    check = DatasetCheck(ds.name, rel.relation, rel.origin)
    tree = source_session.relation_tree(conn, mapped.source_table)
    if not tree:
        hint = (
            "create the views (`export-pipeline source views`)"
            if rel.contract_shaped
            else "set EXPORT_SOURCE_SCHEMA to the schema of the contract views"
        )
        check.findings.append(Finding("error", f"relation {rel.relation} does not exist; {hint}"))
        return check
    check.relations = tree
    _check_columns(conn, mapped, check)
    _check_access(check, tree)
    if not check.blocking:
        _explain_window(conn, mapped, check, settings)
    return check


def _endpoint(dsn: str) -> tuple[str | None, int | None]:
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = parts.hostname or next(iter(query.get("host") or []), None)
    port = parts.port or int((query.get("port") or ["5432"])[0])
    return host, port


def check_server(conn: adbc.Connection, dsn: str, settings: Settings) -> ServerCheck:
    host, port = _endpoint(dsn)
    server = ServerCheck(dsn=redact_dsn(dsn), host=host, port=port)
    (info,) = _rows(conn, read_sql("source_check", "select_server.sql"))
    server.server_version = info["server_version"]
    server.standby = bool(info["in_recovery"])
    server.current_user = info["current_user_name"]
    server.transaction_read_only = info["transaction_read_only"]
    if info["server_version_num"] < 130000:
        server.findings.append(
            Finding("warning", f"PostgreSQL {info['server_version']} is older than 13 (untested)")
        )
    if server.standby:
        try:
            (lag,) = _rows(conn, read_sql("source_check", "select_replay_lag.sql"))
        except Exception as exc:  # noqa: BLE001 - reported; a restricted role may not see it
            conn.rollback()
            server.findings.append(
                Finding("warning", f"replay lag unknown: {scrub(str(exc), dsn)}")
            )
        else:
            server.replay_lag_seconds = lag["replay_lag_seconds"]
            server.replay_caught_up = lag["replay_caught_up"]
            server.replay_paused = lag["replay_paused"]
            behind = not server.replay_caught_up and (server.replay_lag_seconds or 0) > 0
            if server.replay_paused or (
                behind and server.replay_lag_seconds > settings.safety_lag.total_seconds()
            ):
                state = "paused" if server.replay_paused else "behind"
                server.findings.append(
                    Finding(
                        "warning",
                        f"standby replay is {state} ({server.replay_lag_seconds or 0:.0f} s since "
                        "the last replayed commit): exports trail the primary by that much",
                    )
                )
            else:
                server.findings.append(Finding("info", "standby, replay caught up"))
    _check_pooling(conn, server)
    return server


def _check_pooling(conn: adbc.Connection, server: ServerCheck) -> None:
    """Does a setting written by one statement survive to the next (within a transaction, as
    the window binding needs; and across transactions, which a transaction pooler breaks)?"""
    token = secrets.token_hex(8)
    with conn.cursor() as cur:
        cur.execute(read_sql("source_check", "set_session_probe.sql"), parameters=(token,))
        ((_, first_pid),) = cur.fetchall()
        cur.execute(read_sql("source_check", "select_session_probe.sql"))
        ((probe, same_tx_pid),) = cur.fetchall()
    server.settings_kept_in_transaction = probe == token
    conn.commit()
    with conn.cursor() as cur:
        cur.execute(read_sql("source_check", "select_session_probe.sql"))
        ((probe_later, later_pid),) = cur.fetchall()
    conn.rollback()
    server.settings_kept_across_transactions = probe_later == token
    server.backend_changed = len({first_pid, same_tx_pid, later_pid}) > 1
    server.pooled = server.backend_changed or not server.settings_kept_across_transactions
    if not server.settings_kept_in_transaction:
        server.findings.append(
            Finding(
                "error",
                "a session setting did not survive to the next statement of the same "
                "transaction (a statement-pooling proxy?): the window binding needs it; connect "
                "directly or through a session/transaction pooler",
            )
        )
    if server.pooled:
        server.findings.append(
            Finding(
                "warning",
                "pooled connection (a later transaction ran on another backend or lost a session "
                "setting): exports work (each batch binds its window inside its transaction), "
                "but prefer a direct or session-pooled connection for long extracts",
            )
        )
    elif server.port in POOLER_PORTS:
        server.findings.append(
            Finding(
                "info",
                f"port {server.port} is {POOLER_PORTS[server.port]}, yet session settings "
                "persisted: session pooling or a direct connection",
            )
        )


def check_source(dsn: str, settings: Settings) -> SourceReport:
    """Everything above, for every dataset, on one connection."""
    with extract.connect(dsn) as conn:
        server = check_server(conn, dsn, settings)
        datasets = []
        for ds in DATASETS:
            datasets.append(check_dataset(conn, ds, settings))
            conn.rollback()
    return SourceReport(server, datasets)


_MARK = {"error": "ERROR", "warning": "WARN ", "info": "info "}


def render_report(report: SourceReport) -> str:
    s = report.server
    lines = [f"source: {s.dsn}"]
    role = "standby" if s.standby else "primary"
    if s.standby and s.replay_lag_seconds is not None:
        role += f", last replayed commit {s.replay_lag_seconds:.1f} s ago"
    lines.append(
        f"server: PostgreSQL {s.server_version}, {role}; host {s.host}, port {s.port}; "
        f"connected as {s.current_user} (transaction_read_only={s.transaction_read_only})"
    )
    kept = "yes" if s.settings_kept_in_transaction else "NO"
    lines.append(
        f"connection: session settings kept within a transaction: {kept}; pooled: "
        f"{'yes' if s.pooled else 'no'} (settings kept across transactions: "
        f"{'yes' if s.settings_kept_across_transactions else 'no'}, backend changed: "
        f"{'yes' if s.backend_changed else 'no'})"
    )
    lines += [f"  {_MARK[f.level]} {f.message}" for f in s.findings]
    for d in report.datasets:
        kind = f"{d.kind}, " if d.kind else ""
        lines.append(f"{d.dataset}: {d.relation} ({kind}{d.origin})")
        if d.kind and not d.missing_columns and not d.mistyped_columns:
            lines.append("  ok    every contract column present with a compatible type")
        if d.can_select:
            lines.append("  ok    SELECT privilege")
        if d.estimated_rows is not None:
            served = ", ".join(d.index_scans) if d.index_scans else "none"
            lines.append(
                f"  plan  window query: indexes used: {served}; estimated {d.estimated_rows} rows"
            )
        lines += [f"  {_MARK[f.level]} {f.message}" for f in d.findings]
    blocking = sum(
        f.level == "error" for f in [*s.findings, *(f for d in report.datasets for f in d.findings)]
    )
    verdict = "ready to export" if not report.blocking else "NOT ready: fix the errors above"
    lines.append(f"result: {blocking} blocking problems, {report.warnings} warnings: {verdict}")
    return "\n".join(lines)
