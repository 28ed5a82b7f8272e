"""Hand-made source rows for behaviour tests: one valid row per dataset, any column overridable.

Rows go in one at a time through psycopg with bind parameters (never the bulk seeder), so each test
states exactly which rows the source holds. Column names are the *source* table's names (e.g.
``id`` and ``canonical_payload`` for snapshots), extras included.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from export_pipeline.contract import (
    COMPANY_ENTITIES,
    ENTITY_SNAPSHOTS,
    OPERATION_EVENTS,
    OPERATION_RUNS,
    PERSON_ENTITIES,
    Dataset,
)

ORG_ID = "0b7c2f57-5d0e-4f3c-9a51-6f7d2b1e0a01"

#: Source columns of type jsonb: dicts and lists bound to them are sent as JSON.
JSONB_COLUMNS = frozenset(
    {
        "input_payload",
        "output_payload",
        "metadata_json",
        "raw_request",
        "raw_response",
        "canonical_payload",
    }
)


def new_id() -> str:
    return str(uuid.uuid4())


def ago(**delta: float) -> datetime:
    """A UTC instant that long before now, e.g. ``ago(minutes=1)``."""
    return datetime.now(UTC) - timedelta(**delta)


def decoded(value: Any) -> Any:
    """A JSON value that may arrive as text, once or twice encoded, as Python objects."""
    while isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return value


def default_row(ds: Dataset) -> dict[str, Any]:
    """A source row of ``ds`` that honours the contract, with its cursor one minute ago."""
    if ds is OPERATION_RUNS:
        return {
            "run_id": new_id(),
            "pipeline_run_id": new_id(),
            "workflow_id": "wf-enrich",
            "operation_id": "company.enrich.profile",
            "action_id": "prospeo.company_profile",
            "entity_type": "company",
            "entity_id": new_id(),
            "org_id": ORG_ID,
            "company_id": new_id(),
            "source_provider": "prospeo",
            "status": "succeeded",
            "attempt_count": 1,
            "started_at": ago(minutes=3),
            "ended_at": ago(minutes=2),
            "duration_ms": 60_000,
            "cost_usd": Decimal("0.0125"),
            "error_code": None,
            "error_message": None,
            "created_at": ago(minutes=1),
            "user_id": new_id(),
            "role": "member",
            "auth_method": "session",
            "input_payload": {"query": "acme"},
            "output_payload": {"ok": True},
            "updated_at": ago(minutes=1),
        }
    if ds is OPERATION_EVENTS:
        return {
            "event_id": new_id(),
            "run_id": new_id(),
            "event_type": "request_sent",
            "event_sequence": 1,
            "occurred_at": ago(minutes=1),
            "org_id": ORG_ID,
            "company_id": new_id(),
            "entity_type": "company",
            "entity_id": new_id(),
            "provider": "prospeo",
            "http_status": 200,
            "raw_request_ref": "s3://raw/requests/1.json",
            "raw_response_ref": "s3://raw/responses/1.json",
            "payload_hash": "9f86d081884c7d65",
            "error_code": None,
            "error_message": None,
            "metadata_json": {"attempt": 1},
            "raw_request": {"body": "query"},
            "raw_response": {"body": "answer"},
        }
    if ds is COMPANY_ENTITIES:
        return {
            "org_id": ORG_ID,
            "company_id": new_id(),
            "entity_id": new_id(),
            "canonical_name": "Acme",
            "canonical_domain": "acme.example",
            "linkedin_url": "https://www.linkedin.com/company/acme",
            "linkedin_page_id": "1234",
            "industry": "Software",
            "employee_count": 120,
            "revenue_band": "10M-50M",
            "hq_country": "US",
            "enrichment_confidence": Decimal("0.9"),
            "last_enriched_at": ago(minutes=5),
            "last_operation_id": "company.enrich.profile",
            "last_run_id": new_id(),
            "source_priority": "prospeo",
            "record_version": 1,
            "updated_at": ago(minutes=1),
            "employee_range": "51-200",
            "description": "Makes everything",
            "source_providers": ["prospeo"],
            "canonical_payload": {"name": "Acme"},
            "created_at": ago(minutes=10),
        }
    if ds is PERSON_ENTITIES:
        return {
            "org_id": ORG_ID,
            "company_id": new_id(),
            "entity_id": new_id(),
            "full_name": "Ada Lovelace",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "linkedin_url": "https://www.linkedin.com/in/ada",
            "title": "Engineer",
            "seniority": "senior",
            "department": "engineering",
            "work_email": "ada@acme.example",
            "email_status": "verified",
            "phone_e164": "+14155550123",
            "contact_confidence": Decimal("0.8"),
            "last_enriched_at": ago(minutes=5),
            "last_operation_id": "person.enrich.contact",
            "last_run_id": new_id(),
            "record_version": 1,
            "updated_at": ago(minutes=1),
            "canonical_payload": {"name": "Ada Lovelace"},
            "created_at": ago(minutes=10),
        }
    if ds is ENTITY_SNAPSHOTS:
        return {
            "id": new_id(),
            "org_id": ORG_ID,
            "entity_type": "company",
            "entity_id": new_id(),
            "record_version": 1,
            "canonical_payload": {"name": "Acme"},
            "captured_at": ago(minutes=1),
            "source_run_id": new_id(),
        }
    raise KeyError(ds.name)


def _bind(column: str, value: Any) -> Any:
    if column in JSONB_COLUMNS and isinstance(value, dict | list):
        return Jsonb(value)
    return value


def _table(ds: Dataset) -> sql.Identifier:
    return sql.Identifier(*ds.source_table.split("."))


class SourceRows:
    """An autocommit connection to the source database that writes hand-made rows."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = psycopg.connect(dsn, autocommit=True)

    def close(self) -> None:
        self.conn.close()

    def execute(self, query: str, params: tuple | dict | None = None) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def insert(self, ds: Dataset, **values: Any) -> dict[str, Any]:
        """Insert the default row of ``ds`` with ``values`` overriding columns; return the row."""
        row = {**default_row(ds), **values}
        query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            _table(ds),
            sql.SQL(", ").join(sql.Identifier(c) for c in row),
            sql.SQL(", ").join(sql.Placeholder() for _ in row),
        )
        with self.conn.cursor() as cur:
            cur.execute(query, [_bind(c, v) for c, v in row.items()])
        return row

    def update(self, ds: Dataset, key: dict[str, Any], **values: Any) -> None:
        """Set ``values`` on the row identified by ``key`` (source column names)."""
        query = sql.SQL("UPDATE {} SET {} WHERE {}").format(
            _table(ds),
            sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder()) for c in values
            ),
            sql.SQL(" AND ").join(
                sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder()) for c in key
            ),
        )
        params = [_bind(c, v) for c, v in values.items()] + list(key.values())
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            assert cur.rowcount == 1, f"expected to update one row of {ds.source_table}"

    def count(self, ds: Dataset) -> int:
        """Rows of the dataset's source table that are in the contract's scope."""
        query = sql.SQL("SELECT count(*) FROM {}").format(_table(ds))
        params: list[Any] = []
        if ds.out_of_scope:
            ((column, values),) = ds.out_of_scope
            query += sql.SQL(" WHERE {col} IS NULL OR NOT {col} = ANY({values})").format(
                col=sql.Identifier(column), values=sql.Placeholder()
            )
            params.append(list(values))
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            (n,) = cur.fetchone()  # type: ignore[misc]
        return int(n)
