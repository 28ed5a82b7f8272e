"""data-engine-x's real schema for tests: the fixture, its roles, rows written the producer's way.

How the producer writes (``../shared/data-engine-x/REAL_SOURCE.md``): an operation run is inserted
once, after it finished; all its provider attempts follow in ONE statement (so they share one
``created_at``, later than the run's); an entity changes by first inserting a snapshot of the
PREVIOUS version, then ``UPDATE ... SET record_version = old + 1 ... WHERE record_version = old``;
Clay imports leave ``company_id`` NULL; runs and snapshots of ``job`` entities exist beside the
contract's companies and persons. Every statement here commits on its own, like the producer's
API calls.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from export_pipeline.source_views import fixture_schema, view_script


def role_dsn(pg_server: Any, role: str, database: str) -> str:
    """A DSN logging in as ``role`` over the server's socket (local connections are trusted)."""
    socket_dir = pg_server.get_postmaster_info().socket_dir
    return f"postgresql://{role}@/{database}?host={socket_dir}"


@dataclass
class RealSource:
    """A database shaped like data-engine-x's, owned by a non-superuser role."""

    database: str
    owner: str
    owner_dsn: str
    pg_server: Any
    roles: list[str] = field(default_factory=list)

    def login_role(self, *grants: str) -> str:
        """A new login role (dropped at the end) with the given SQL grants, ``{role}`` filled."""
        role = f"reader_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.pg_server.get_uri(), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        self.roles.append(role)
        with psycopg.connect(self.owner_dsn, autocommit=True) as conn:
            for grant in grants:
                conn.execute(sql.SQL(grant).format(role=sql.Identifier(role)))
        return role

    def dsn(self, role: str) -> str:
        return role_dsn(self.pg_server, role, self.database)

    def install_views(self, schema: str = "export", role: str | None = None) -> None:
        """What the DBA does: run `source views` output as the tables' owner."""
        script = view_script("data-engine-x", schema, role or self.owner)
        with psycopg.connect(self.owner_dsn, autocommit=True) as conn:
            conn.execute(script)


@contextmanager
def real_source(pg_server: Any, source_dsn: str) -> Iterator[RealSource]:
    """The fixture schema in the (fresh) database of ``source_dsn``, created by an owner role
    that is not a superuser (so row-level security applies to everyone else)."""
    database = urlsplit(source_dsn).path.strip("/")
    owner = f"dex_owner_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(owner)))
        admin.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(database), sql.Identifier(owner)
            )
        )
    src = RealSource(database, owner, role_dsn(pg_server, owner, database), pg_server)
    with psycopg.connect(src.owner_dsn, autocommit=True) as conn:
        conn.execute(fixture_schema("data-engine-x"))
    try:
        yield src
    finally:
        with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
            for role in [*src.roles, owner]:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def new_id() -> str:
    return str(uuid.uuid4())


class Producer:
    """Writes rows the way data-engine-x does, one committed statement at a time."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)

    def close(self) -> None:
        self.conn.close()

    def org(self, name: str) -> str:
        org_id = new_id()
        self.conn.execute(
            "INSERT INTO ops.orgs (id, name, slug) VALUES (%s, %s, %s)", (org_id, name, name)
        )
        return org_id

    def company(self, org_id: str, name: str) -> str:
        company_id = new_id()
        self.conn.execute(
            "INSERT INTO ops.companies (id, org_id, name) VALUES (%s, %s, %s)",
            (company_id, org_id, name),
        )
        return company_id

    def pipeline_run(self, org_id: str, company_id: str) -> str:
        run_id = new_id()
        self.conn.execute(
            "INSERT INTO ops.pipeline_runs (id, org_id, company_id, status, started_at, "
            "finished_at) VALUES (%s, %s, %s, 'succeeded', now(), now())",
            (run_id, org_id, company_id),
        )
        return run_id

    def operation(
        self,
        org_id: str,
        *,
        operation_id: str,
        entity_type: str,
        status: str,
        attempts: list[dict[str, Any]],
        company_id: str | None = None,
        input_payload: dict | None = None,
        output_payload: dict | None = None,
        missing_inputs: list[str] | None = None,
        pipeline_run: tuple[str, str] | None = None,
        step_position: int = 1,
    ) -> str:
        """One finished operation: the run row, then all its attempts in one statement, then
        (inside a pipeline) its step result carrying ``operation_result.run_id``."""
        run_id = new_id()
        self.conn.execute(
            "INSERT INTO ops.operation_runs (run_id, org_id, company_id, role, auth_method, "
            "operation_id, entity_type, status, missing_inputs, input_payload, output_payload) "
            "VALUES (%s, %s, %s, 'org_admin', 'api_token', %s, %s, %s, %s, %s, %s)",
            (
                run_id,
                org_id,
                company_id,
                operation_id,
                entity_type,
                status,
                Jsonb(missing_inputs or []),
                Jsonb(input_payload or {}),
                None if output_payload is None else Jsonb(output_payload),
            ),
        )
        if attempts:
            values = sql.SQL(", ").join(
                sql.SQL("(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)") for _ in attempts
            )
            params: list[Any] = []
            for a in attempts:
                params += [
                    new_id(),
                    run_id,
                    a["provider"],
                    a.get("action", "enrich"),
                    a["status"],
                    a.get("skip_reason"),
                    a.get("http_status"),
                    a.get("provider_status"),
                    a.get("duration_ms"),
                    None if a.get("raw_response") is None else Jsonb(a["raw_response"]),
                ]
            self.conn.execute(
                sql.SQL(
                    "INSERT INTO ops.operation_attempts (id, run_id, provider, action, status, "
                    "skip_reason, http_status, provider_status, duration_ms, raw_response) "
                    "VALUES {}"
                ).format(values),
                params,
            )
        if pipeline_run is not None:
            pipeline_run_id, step_company = pipeline_run
            self.conn.execute(
                "INSERT INTO ops.step_results (id, org_id, company_id, pipeline_run_id, "
                "step_position, status, output_payload) VALUES (%s, %s, %s, %s, %s, "
                "'succeeded', %s)",
                (
                    new_id(),
                    org_id,
                    step_company,
                    pipeline_run_id,
                    step_position,
                    Jsonb({"operation_result": {"run_id": run_id, "status": status}}),
                ),
            )
        return run_id

    def company_entity(self, org_id: str, company_id: str | None, **cols: Any) -> str:
        entity_id = new_id()
        payload = {k: v for k, v in cols.items() if isinstance(v, str | int | float)}
        columns = {"org_id": org_id, "company_id": company_id, "entity_id": entity_id, **cols}
        columns["canonical_payload"] = Jsonb(payload)
        self._insert("entities", "company_entities", columns)
        return entity_id

    def person_entity(self, org_id: str, company_id: str | None, **cols: Any) -> str:
        entity_id = new_id()
        payload = {k: v for k, v in cols.items() if isinstance(v, str | int | float)}
        columns = {"org_id": org_id, "company_id": company_id, "entity_id": entity_id, **cols}
        columns["canonical_payload"] = Jsonb(payload)
        self._insert("entities", "person_entities", columns)
        return entity_id

    def _insert(self, schema: str, table: str, columns: dict[str, Any]) -> None:
        self.conn.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(schema, table),
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.SQL(", ").join(sql.Placeholder() * len(columns)),
            ),
            list(columns.values()),
        )

    def update_entity(
        self,
        entity_type: str,
        org_id: str,
        entity_id: str,
        source_run_id: str | None,
        **changes: Any,
    ) -> None:
        """The producer's version bump: snapshot the previous version, then move the row to
        ``record_version = old + 1`` guarded by ``WHERE record_version = old`` (the table's
        trigger sets ``updated_at``)."""
        table = {"company": "company_entities", "person": "person_entities"}[entity_type]
        ident = sql.Identifier("entities", table)
        ((old, payload),) = self.conn.execute(
            sql.SQL(
                "SELECT record_version, canonical_payload FROM {} "
                "WHERE org_id = %s AND entity_id = %s"
            ).format(ident),
            (org_id, entity_id),
        ).fetchall()
        self.snapshot(entity_type, org_id, entity_id, old, payload, source_run_id)
        sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in changes)
        updated = self.conn.execute(
            sql.SQL(
                "UPDATE {} SET {}, record_version = %s, "
                "canonical_payload = canonical_payload || %s "
                "WHERE org_id = %s AND entity_id = %s AND record_version = %s"
            ).format(ident, sets),
            [*changes.values(), old + 1, Jsonb(changes), org_id, entity_id, old],
        )
        assert updated.rowcount == 1

    def snapshot(
        self,
        entity_type: str,
        org_id: str,
        entity_id: str,
        record_version: int,
        payload: Any,
        source_run_id: str | None,
    ) -> str:
        snapshot_id = new_id()
        self.conn.execute(
            "INSERT INTO entities.entity_snapshots (id, org_id, entity_type, entity_id, "
            "record_version, canonical_payload, source_run_id) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (snapshot_id, org_id, entity_type, entity_id, record_version, Jsonb(payload),
             source_run_id),
        )  # fmt: skip
        return snapshot_id


#: What :func:`write_sample` leaves, per dataset: (in-scope rows, rows the contract refuses).
SAMPLE_EXPECTED = {
    "dx_operation_runs_v1": (7, 1),
    "dx_operation_events_v1": (9, 1),
    "dx_company_entities_v1": (4, 2),
    "dx_person_entities_v1": (3, 1),
    "dx_entity_snapshots_v1": (4, 0),
}


def write_sample(dsn: str) -> dict[str, Any]:
    """A small day of data-engine-x activity, the producer's way (see SAMPLE_EXPECTED)."""
    p = Producer(dsn)
    try:
        a, b = p.org("acme-agency"), p.org("beta-agency")
        ca, cb = p.company(a, "Acme client"), p.company(b, "Beta client")
        pa, pb = p.pipeline_run(a, ca), p.pipeline_run(b, cb)
        e_acme = new_id()
        found = {
            "provider": "apollo",
            "status": "found",
            "http_status": 200,
            "duration_ms": 420,
            "raw_response": {"name": "Acme", "api_key": "sk_live_abcdefghijklmnop1234"},
        }
        runs = {
            "found_in_pipeline": p.operation(
                a, company_id=ca, operation_id="company.enrich.profile", entity_type="company",
                status="found", output_payload={"entity_id": e_acme, "name": "Acme"},
                attempts=[{"provider": "prospeo", "status": "not_found", "http_status": 404,
                           "duration_ms": 150}, found],
                pipeline_run=(pa, ca),
            ),
            "verified": p.operation(
                a, company_id=ca, operation_id="person.contact.verify_email",
                entity_type="person", status="verified", input_payload={"entity_id": new_id()},
                attempts=[{"provider": "millionverifier", "status": "verified",
                           "http_status": 200, "duration_ms": 90}],
            ),
            "not_found": p.operation(
                a, operation_id="person.search", entity_type="person", status="not_found",
                output_payload={"entity_id": new_id()},
                attempts=[{"provider": "prospeo", "status": "not_found", "http_status": 404,
                           "duration_ms": 200}],
            ),
            "failed": p.operation(
                b, operation_id="company.enrich.profile", entity_type="company", status="failed",
                output_payload={"entity_id": new_id()},
                attempts=[{"provider": "apollo", "status": "failed", "http_status": 500,
                           "duration_ms": 30000},
                          {"provider": "apollo", "status": "failed", "http_status": 429,
                           "provider_status": "rate_limited", "duration_ms": 10}],
            ),
            "missing_inputs": p.operation(
                b, company_id=cb, operation_id="person.contact.resolve_email",
                entity_type="person", status="failed", input_payload={"entity_id": new_id()},
                missing_inputs=["full_name", "company_domain"], attempts=[],
                pipeline_run=(pb, cb),
            ),
            "job": p.operation(
                a, operation_id="job.search", entity_type="job", status="found",
                output_payload={"entity_id": new_id()},
                attempts=[{"provider": "theirstack", "status": "found", "http_status": 200,
                           "duration_ms": 700}],
            ),
            "no_entity": p.operation(
                a, operation_id="company.enrich.profile", entity_type="company", status="found",
                input_payload={"company_domain": "globex.com"},
                attempts=[{"provider": "apollo", "status": "found", "http_status": 200,
                           "duration_ms": 380}],
            ),
            "skipped_then_found": p.operation(
                a, company_id=ca, operation_id="company.enrich.profile", entity_type="company",
                status="found", output_payload={"entity_id": e_acme},
                attempts=[{"provider": "prospeo", "status": "skipped",
                           "skip_reason": "missing_domain"},
                          {"provider": "companyenrich", "status": "found", "http_status": 200,
                           "duration_ms": 640}],
            ),
        }  # fmt: skip
        acme = p.company_entity(
            a, ca, canonical_domain="acme.com", canonical_name="Acme", industry="software",
            employee_count=120, source_providers=["apollo", "prospeo"],
            company_linkedin_id="1337", enrichment_confidence=0.8, last_run_id=pa,
        )  # fmt: skip
        p.update_entity("company", a, acme, pa, employee_count=130)
        p.update_entity("company", a, acme, pa, industry="b2b software")
        clay_a = p.company_entity(a, None, canonical_domain="initech.com", canonical_name="Initech")
        p.company_entity(b, cb, canonical_domain="umbrella.com", canonical_name="Umbrella",
                         source_providers=["clay", "apollo"])  # fmt: skip
        clay_b = p.company_entity(b, None, canonical_domain="hooli.com", canonical_name="Hooli")
        p.update_entity("company", b, clay_b, None, hq_country="US")
        jane = p.person_entity(a, ca, full_name="Jane Roe", work_email="jane@acme.com",
                               phone_e164="+14155550123")  # fmt: skip
        p.update_entity("person", a, jane, pa, title="CTO")
        p.person_entity(a, ca, full_name="John Doe", phone_e164="(415) 555-0123")
        p.person_entity(b, None, first_name="Ann", last_name="Lee")
        p.snapshot("job", a, new_id(), 1, {"title": "Engineer"}, pa)
        return {"orgs": (a, b), "companies": (ca, cb), "pipeline_runs": (pa, pb), "runs": runs,
                "clay": (clay_a, clay_b), "acme": acme}  # fmt: skip
    finally:
        p.close()


@contextmanager
def standby_of(pg_server: Any) -> Iterator[int]:
    """A streaming standby of the session server, from pgserver's own binaries: a base backup
    started on another port in the same socket directory. Yields its port; stopped after."""
    import random
    import shutil
    import tempfile
    from pathlib import Path

    from pgserver import _commands

    _commands._init()
    info = pg_server.get_postmaster_info()
    user = pg_server.system_user
    as_user = {"user": user} if user else {}
    root = Path(tempfile.mkdtemp(prefix="export_pipeline_standby_"))
    root.chmod(0o755)
    data = root / "data"
    data.mkdir(mode=0o700)
    if user:
        shutil.chown(data, user, user)
    port = random.randint(40000, 60000)
    _commands.pg_basebackup(
        ["-D", str(data), "-R", "-X", "stream", "-c", "fast", "-h", str(info.socket_dir),
         "-p", str(info.port), "-U", "postgres"],
        timeout=120, **as_user,
    )  # fmt: skip
    options = ["-o", '-h ""', "-o", f"-k {info.socket_dir}", "-o", f"-p {port}"]
    _commands.pg_ctl(
        ["-w", *options, "-l", str(data / "standby.log"), "start"],
        pgdata=data, timeout=60, **as_user,
    )  # fmt: skip
    try:
        yield port
    finally:
        _commands.pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=data, timeout=60, **as_user)
        shutil.rmtree(root, ignore_errors=True)
