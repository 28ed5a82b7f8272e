"""Security and tenancy: secrets never leave the source, every row has a tenant, a one-org
backfill stays in its org, the source password never shows, and SQL only ever binds values.

End-to-end tests run the real CLI (``export-pipeline run`` is the Dagster micro-batch job with the
lake publish) against an embedded PostgreSQL, then read every output back: each table of the
DuckDB warehouse, each file under the data dir (Parquet decoded, DuckDB and SQLite files opened,
raw bytes too), the analytics catalog, the Dagster instance and the CLI's own output.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import secrets
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import duckdb
import polars as pl
import psycopg
import pyarrow.parquet as pq
import pytest
from cli_process import run_cli
from conftest import Pipeline
from dagster._core.instance.ref import InstanceRef
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql
from rows import SourceRows, ago, decoded, default_row, new_id

from export_pipeline import lake
from export_pipeline.analytics import refresh_catalog, run_query
from export_pipeline.batch import run_backfill, run_dataset_batch
from export_pipeline.cli import main
from export_pipeline.config import Settings
from export_pipeline.contract import (
    COMPANY_ENTITIES,
    DATASETS,
    ENTITY_SNAPSHOTS,
    OPERATION_EVENTS,
    OPERATION_RUNS,
    PERSON_ENTITIES,
    Dataset,
)
from export_pipeline.dead_letters import list_letters
from export_pipeline.redact import (
    ANCHORS,
    REDACTED,
    VALUE_PATTERN,
    VALUE_RULES,
    redact_columns,
    redact_json_text,
    redact_text,
)
from export_pipeline.source import create_source_schema
from export_pipeline.validate import validate_batch
from export_pipeline.warehouse import fetch_dicts, open_warehouse, run_sql

cli = partial(run_cli, entry="python_m")


REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "export_pipeline"


# --- the CLI, as a user runs it -------------------------------------------------------------


def cli_env(dsn: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    return {
        "EXPORT_SOURCE_DSN": dsn,
        "EXPORT_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "EXPORT_SAFETY_LAG_SECONDS": "0",
        **extra,
    }


@pytest.fixture
def source(source_dsn: str) -> Iterator[SourceRows]:
    """The reference schema in a fresh source database."""
    create_source_schema(source_dsn)
    rows = SourceRows(source_dsn)
    try:
        yield rows
    finally:
        rows.close()


# --- scanning every output for planted strings ----------------------------------------------


@dataclass
class Scan:
    """Looks for ``needles`` (must never appear) and ``controls`` (must appear: proof that the
    scan reads real content) in every output it is given, remembering where each was seen."""

    needles: list[str]
    controls: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    leaks: list[tuple[str, str]] = field(default_factory=list)
    seen: dict[str, set[str]] = field(default_factory=dict)

    def text(self, where: str, text: str) -> None:
        self.outputs.append(where)
        self.leaks += [(where, n) for n in self.needles if n in text]
        for c in self.controls:
            if c in text:
                self.seen.setdefault(c, set()).add(where)

    def data(self, where: str, data: bytes) -> None:
        self.text(where, data.decode("utf-8", errors="replace"))
        # Also as raw bytes (a secret split by a decoding error would hide from the text view).
        self.leaks += [(where, n) for n in self.needles if n.encode() in data]

    def duckdb_file(self, where: str, path: Path) -> None:
        """Every table and view of a DuckDB file, every column cast to text."""
        con = duckdb.connect(str(path), read_only=True)
        try:
            relations = con.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_catalog = current_database() ORDER BY ALL"
            ).fetchall()
            for schema, name in relations:
                rows = con.execute(
                    f'SELECT COLUMNS(*)::VARCHAR FROM "{schema}"."{name}"'
                ).fetchall()
                self.text(f"{where}:{schema}.{name}", "\n".join(map(repr, rows)))
        finally:
            con.close()

    def sqlite_file(self, where: str, path: Path) -> None:
        """Every table of a SQLite file (the Dagster instance), every column as text."""
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = [
                t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            for table in tables:
                rows = con.execute(f'SELECT * FROM "{table}"').fetchall()
                self.text(f"{where}:{table}", "\n".join(map(repr, rows)))
        finally:
            con.close()

    def tree(self, label: str, root: Path) -> None:
        """Every file under ``root``: its path, its raw bytes, and its decoded content."""
        for directory, _dirs, files in os.walk(root, followlinks=False):
            for name in sorted(files):
                path = Path(directory) / name
                where = f"{label}/{path.relative_to(root)}"
                self.text(f"{where} (path)", str(path.relative_to(root)))
                if path.is_symlink() or not path.is_file():
                    continue
                self.data(where, path.read_bytes())
                if name.endswith(".parquet"):
                    rows = pq.read_table(path).to_pylist()
                    self.text(f"{where} (decoded)", "\n".join(map(repr, rows)))
                elif name.endswith(".duckdb"):
                    self.duckdb_file(where, path)
                elif name.endswith(".db"):
                    self.sqlite_file(where, path)

    def process(self, where: str, done: subprocess.CompletedProcess) -> None:
        self.text(f"{where} stdout", done.stdout)
        self.text(f"{where} stderr", done.stderr)

    def assert_clean(self) -> None:
        assert not self.leaks, f"{len(self.leaks)} leaks, e.g. {self.leaks[:10]}"
        missing = [c for c in self.controls if c not in self.seen]
        assert not missing, f"controls never seen (the scan read nothing?): {missing}"


# --- 1. secrets ------------------------------------------------------------------------------


def _b64url(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


#: Secret shapes: each makes (text as it would appear in the source, the secret part of it
#: that must never leave the source) from a fresh random token.
SHAPES: dict[str, Callable[[str], tuple[str, str]]] = {
    "stripe_live_key": lambda t: (f"sk_live_{t[:24]}",) * 2,
    "github_token": lambda t: (f"ghp_{t[:36]}",) * 2,
    "aws_access_key_id": lambda t: (f"AKIA{t[:16].upper()}",) * 2,
    "jwt": lambda t: (f"eyJhbGciOiJIUzI1NiJ9.{_b64url({'sub': t})}.{t[:20]}",) * 2,
    "bearer_token": lambda t: (f"Bearer {t}", t),
    "password_in_free_text": lambda t: (f"login failed: password={t} for ada", t),
    "api_key_in_free_text": lambda t: (f"provider said api_key: {t}, retry", t),
    "postgres_url_with_password": lambda t: (f"postgresql://app:{t}@db.internal:5432/prod", t),
    "basic_auth_header": lambda t: (
        f"Authorization: Basic {base64.b64encode(f'ada:{t}'.encode()).decode()}",
        base64.b64encode(f"ada:{t}".encode()).decode(),
    ),
    "slack_token": lambda t: (f"xoxb-{t}",) * 2,
    "google_api_key": lambda t: (f"AIza{t[:35]}",) * 2,
    "openai_key": lambda t: (f"sk-proj-{t}",) * 2,
    "pem_private_key": lambda t: (
        f"-----BEGIN PRIVATE KEY-----\n{t}\n-----END PRIVATE KEY-----",
        t,
    ),
}


class Planter:
    """Makes unique secrets and remembers every secret part it handed out."""

    def __init__(self) -> None:
        self.cores: list[str] = []

    def shaped(self, shape: str) -> str:
        text, core = SHAPES[shape](secrets.token_hex(20))
        self.cores.append(core)
        return text

    def opaque(self) -> str:
        """A secret with no recognisable shape: only the key it sits under can protect it."""
        core = f"opaque-{secrets.token_hex(12)}"
        self.cores.append(core)
        return core

    def document(self, first: int, marker: str) -> dict[str, Any]:
        """A JSON document with secret-looking keys at several depths and in arrays, and
        secret-shaped values (shapes ``first``, ``first+1``, ...) under ordinary keys."""
        names = list(SHAPES)

        def shape(i: int) -> str:
            return self.shaped(names[(first + i) % len(names)])

        return {
            "api_key": self.opaque(),
            "a": [{"b": {"Authorization": self.opaque()}}],
            "provider": {"name": "prospeo", "credentials": {"user": "ada", "pw": self.opaque()}},
            "headers": [{"X-Api-Key": self.opaque(), "Accept": "application/json"}],
            "note": shape(0),
            "events": [shape(1), {"detail": shape(2)}, 3],
            "deep": {"l1": {"l2": {"l3": {"message": shape(3)}}}},
            shape(4): "a secret as a key",
            "visible": marker,
            "attempt": 2,
        }


def source_text_columns(src: SourceRows) -> dict[str, dict[str, str]]:
    """Per source table, every column that can hold text (from the source's own catalog, extras
    included): column -> ``text``, ``json`` or ``text[]``."""
    out: dict[str, dict[str, str]] = {ds.source_table: {} for ds in DATASETS}
    rows = src.execute(
        "SELECT table_schema || '.' || table_name, column_name, data_type, udt_name "
        "FROM information_schema.columns WHERE table_schema || '.' || table_name = ANY(%s) "
        "ORDER BY table_schema, table_name, ordinal_position",
        (list(out),),
    )
    for table, column, data_type, udt in rows:
        if data_type in ("text", "character varying", "character"):
            out[table][column] = "text"
        elif data_type in ("json", "jsonb"):
            out[table][column] = "json"
        elif data_type == "ARRAY" and udt == "_text":
            out[table][column] = "text[]"
    return out


def constrained(ds: Dataset) -> set[str]:
    """Source names of the dataset's text columns whose values the contract restricts (closed
    vocabularies, patterns): a secret there dead-letters the row."""
    return {c.source_name for c in ds.source_columns if c.allowed or c.pattern}


@dataclass
class PlantedSource:
    planter: Planter
    marker: str
    columns: dict[str, dict[str, str]]
    loaded: dict[str, int]
    dead: dict[str, int]


def plant_secrets(src: SourceRows) -> PlantedSource:
    """Every text and JSON column of every source table holds secrets of every shape: one row
    per shape that honours the contract (secrets only where free text is allowed), and rows
    that are dead-lettered with secrets everywhere, the failing column included."""
    planter, marker = Planter(), f"VISIBLE{secrets.token_hex(6)}"
    columns = source_text_columns(src)
    shapes = list(SHAPES)
    loaded: dict[str, int] = {}
    dead: dict[str, int] = {}

    def values(ds: Dataset, row: int, everywhere: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, (column, kind) in enumerate(columns[ds.source_table].items()):
            if column in constrained(ds) and not everywhere:
                continue
            shape = shapes[(row + i) % len(shapes)]
            if kind == "json":
                out[column] = planter.document(row + i, marker)
            elif kind == "text[]":
                out[column] = [planter.shaped(shape), marker]
            else:
                out[column] = f"{planter.shaped(shape)} {marker}"
        return out

    for ds in DATASETS:
        for row in range(len(shapes)):
            src.insert(ds, **values(ds, row, everywhere=False), **_cursor(ds, minutes=30 - row))
        loaded[ds.name] = len(shapes)
        # Dead-lettered: the secret sits in the very column that fails (a closed vocabulary or
        # a pattern); where the dataset has none, a negative count fails the row instead.
        bad: dict[str, Any] = values(ds, 1, everywhere=True)
        if ds is COMPANY_ENTITIES:
            bad["employee_count"] = -1
        src.insert(ds, **bad, **_cursor(ds, minutes=10))
        dead[ds.name] = 1
        if ds.source_table.startswith("ops.") or ds is ENTITY_SNAPSHOTS:
            # No tenant (the entity tables' source key forbids a null org_id).
            src.insert(ds, **values(ds, 2, everywhere=False), org_id=None, **_cursor(ds, 9))
            dead[ds.name] += 1
    # Dead-lettered by the load stage: a second row holding a uniqueness guard.
    first = default_row(OPERATION_EVENTS)
    src.insert(OPERATION_EVENTS, **{**first, **values(OPERATION_EVENTS, 3, False)})
    src.insert(
        OPERATION_EVENTS,
        **values(OPERATION_EVENTS, 4, everywhere=False),
        run_id=first["run_id"],
        event_sequence=first["event_sequence"],
        occurred_at=first["occurred_at"] + timedelta(seconds=1),
    )
    loaded[OPERATION_EVENTS.name] += 1
    dead[OPERATION_EVENTS.name] += 1
    return PlantedSource(planter, marker, columns, loaded, dead)


def _cursor(ds: Dataset, minutes: float) -> dict[str, datetime]:
    return {ds.column(ds.cursor).source_name: ago(minutes=minutes)}


# 1a. the redaction rules, on their own


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_secret_value_in_free_text_is_redacted_and_its_context_kept(shape: str) -> None:
    """An error message quoting a credential must lose the credential, not the message."""
    planter = Planter()
    text = f"upstream error ({planter.shaped(shape)}) while enriching acme.example"

    redacted = redact_text(text)

    assert planter.cores[0] not in redacted
    assert REDACTED in redacted
    assert redacted.startswith("upstream error (")
    assert redacted.endswith(") while enriching acme.example")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("login failed: password=hunter22 for ada", "login failed: password=[REDACTED] for ada"),
        ("api_key: k3y-v4lue, retry", "api_key: [REDACTED], retry"),
        ("Authorization: Bearer abcdef0123456789", "Authorization: [REDACTED]"),
        ("Authorization: Basic YWRhOnB3", "Authorization: [REDACTED]"),
        ("sent Bearer abcdef0123456789", "sent Bearer [REDACTED]"),
        ("postgresql://app:p@ss@db:5432/x", "postgresql://app:[REDACTED]@db:5432/x"),
        (
            "https://h/cb?code=1&access_token=abc&x=2",
            "https://h/cb?code=1&access_token=[REDACTED]&x=2",
        ),
        ("password = 'two words'", "password = '[REDACTED]'"),
        ('body {"client_secret": "s e c"}', 'body {"client_secret": "[REDACTED]"}'),
    ],
)
def test_secret_values_are_cut_out_exactly(text: str, expected: str) -> None:
    """Only the secret goes: keys, schemes and hosts stay, so the row keeps its meaning."""
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "token expired for user ada",
        "rotate the api_key monthly",
        "Basic plan, 3 seats",
        "Provider rejected credentials (HTTP 401)",
        "Input failed validation: domain or name is required",
        "https://www.linkedin.com/company/acme",
        "s3://raw/requests/9f86d081.json",
        "ada@acme.example",
        "+14155550123",
        "9f86d081884c7d65",
        "0b7c2f57-5d0e-4f3c-9a51-6f7d2b1e0a01",
        "risk-based scoring",
        "company.enrich.profile",
    ],
)
def test_ordinary_text_is_left_exactly_as_it_was(text: str) -> None:
    """Over-redaction would destroy the analytics value of messages, URLs and ids."""
    assert redact_text(text) == text


def test_every_value_rule_is_exercised_by_a_planted_shape() -> None:
    """A rule no shape triggers is a rule the end-to-end test never proves."""
    hit = set()
    for shape in SHAPES:
        text, _core = SHAPES[shape](secrets.token_hex(20))
        for name, prefix, secret in VALUE_RULES:
            if re.search(prefix + secret, text):
                hit.add(name)
    assert hit == {name for name, _p, _s in VALUE_RULES}


def test_json_secrets_under_secret_keys_and_as_values_anywhere_are_redacted() -> None:
    """Secret-looking keys at any depth (arrays included) and secret-shaped values under
    ordinary keys, in array items and as keys all go; everything else stays as it was."""
    planter = Planter()
    document = planter.document(0, "VISIBLE")

    redacted = json.loads(redact_json_text(json.dumps(document)) or "null")

    assert not [c for c in planter.cores if c in json.dumps(redacted)]
    assert redacted["api_key"] == REDACTED
    assert redacted["a"] == [{"b": {"Authorization": REDACTED}}]
    assert redacted["provider"] == {"name": "prospeo", "credentials": REDACTED}
    assert redacted["headers"] == [{"X-Api-Key": REDACTED, "Accept": "application/json"}]
    assert (
        REDACTED in redacted["note"] and REDACTED in redacted["deep"]["l1"]["l2"]["l3"]["message"]
    )
    assert redacted["events"][2] == 3 and REDACTED in redacted["events"][1]["detail"]
    assert (redacted["visible"], redacted["attempt"]) == ("VISIBLE", 2)


def test_a_secret_spelled_with_json_escapes_is_still_found() -> None:
    """``json`` columns keep escapes as written: ``\\u005f`` is ``_`` and must not hide a key."""
    text = '{"note": "sk\\u005flive_0123456789abcdef", "api\\u005fkey": "opaque-1", "n": 1}'

    frame = redact_columns(pl.DataFrame({"j": [text]}), text=[], json_columns=["j"])

    assert json.loads(frame["j"][0]) == {"note": REDACTED, "api_key": REDACTED, "n": 1}


def test_clean_json_and_text_pass_through_byte_for_byte() -> None:
    """Unchanged rows must keep their exact text: re-serialising would churn every checksum."""
    frame = pl.DataFrame(
        {
            "t": ["Provider did not respond within 30s", None, "token expired"],
            "j": ['{"b":1,  "a": [1, 2]}', None, '{"note": "rotate the api_key monthly"}'],
        }
    )

    assert redact_columns(frame, text=["t"], json_columns=["j"]).equals(frame)


_PIECES = [
    "password",
    "pass_word",
    "API-KEY",
    "x-api-key",
    "token",
    "Authorization",
    "secret",
    "bearer",
    "Bearer ",
    "BEARER",
    "=",
    ": ",
    ":",
    "'",
    '"',
    " ",
    "\n",
    "@",
    "://",
    "user:",
    "postgresql",
    "eyJ",
    ".",
    "abcdef",
    "0123456789",
    "ABCDEFGHIJ",
    "sk_live_",
    "sk-proj-",
    "ghp_",
    "github_pat_",
    "AKIA",
    "ASIA",
    "AIza",
    "xoxb-",
    "whsec_",
    "-----BEGIN PRIVATE KEY-----",
    "-----END PRIVATE KEY-----",
    "Basic ",
    "_",
    "-",
    "ſ",
    "é",
    "\\",
    "{",
    "}",
    ",",
]


@given(st.lists(st.sampled_from(_PIECES), max_size=14).map("".join))
@settings(max_examples=400, deadline=None)
def test_the_fast_scan_never_misses_what_the_rules_redact(text: str) -> None:
    """The vectorised scans decide which rows are even looked at: a text the Python rules
    would redact must be flagged by both the anchor pass and Polars' regex engine."""
    series = pl.Series([text])
    if re.search(VALUE_PATTERN, text) and text.isascii():
        assert series.str.contains_any(list(ANCHORS), ascii_case_insensitive=True)[0]
    assert series.str.contains(VALUE_PATTERN)[0] == bool(re.search(VALUE_PATTERN, text))
    frame = redact_columns(pl.DataFrame({"t": [text]}), text=["t"], json_columns=[])
    if text.isascii():
        assert frame["t"][0] == redact_text(text)


def test_a_secret_in_the_column_that_fails_validation_is_redacted_in_its_dead_letter() -> None:
    """A dead letter keeps the row as extracted for diagnosis; a secret in the very value that
    broke the contract (here the closed ``status`` vocabulary) must still not be kept."""
    planter = Planter()
    row = {**default_row(OPERATION_RUNS), "status": planter.shaped("stripe_live_key")}
    row["error_message"] = planter.shaped("bearer_token")
    frame = pl.DataFrame([{c.name: row[c.source_name] for c in OPERATION_RUNS.source_columns}])

    checked = validate_batch(OPERATION_RUNS, frame)

    assert checked.valid.is_empty()
    [letter] = checked.dead_letters.to_dicts()
    assert letter["failed_checks"] == ["status:allowed_values"]
    stored = decoded(letter["row_json"])
    assert stored["status"] == REDACTED
    assert stored["error_message"] == f"Bearer {REDACTED}"
    assert not [c for c in planter.cores if c in letter["row_json"]]


# 1b. end to end


def scan_everything(scan: Scan, env: dict[str, str]) -> None:
    """The warehouse, every file under the data dir (lake, catalogs, spill), the Dagster
    instance: all of it, through ``scan``."""
    data_dir, home = Path(env["EXPORT_DATA_DIR"]), Path(env["DAGSTER_HOME"])
    assert (data_dir / "warehouse.duckdb").is_file() and any(data_dir.rglob("*.parquet"))
    scan.tree("data", data_dir)
    scan.tree("dagster_home", home)


def test_no_planted_secret_reaches_any_output_of_a_cli_run(
    source: SourceRows, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """The contract forbids exporting secrets: wherever a provider key, token or password sits
    in the source (free text, JSON keys and values, the column that gets the row
    dead-lettered), no copy may land in the warehouse, the lake, the dead letters, the
    analytics catalog, the Dagster instance or the CLI's output."""
    planted = plant_secrets(source)
    env = cli_env(source.dsn, tmp_path, EXPORT_DEAD_LETTER_RETRY_SECONDS="0")
    scan = Scan(needles=planted.planter.cores, controls=[planted.marker])

    run = cli("run", env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    scan.process("run", run)
    for args in (
        ["status", "--json"],
        ["dead-letter", "list", "--json"],
        *(["query", f'SELECT * FROM "{ds.name}"', "--format", "json"] for ds in DATASETS),
    ):
        done = cli(*args, env=env)
        assert done.returncode in (0, 3), (args, done.stderr)  # 3: the lag SLA, not a failure
        scan.process(" ".join(args[:2]), done)
    scan_everything(scan, env)

    scan.assert_clean()
    # The scan did read the exported rows: the marker planted next to every secret survives in
    # each contract table, in the dead letters, in the lake and in what analysts query.
    seen = scan.seen[planted.marker]
    for ds in DATASETS:
        assert any(w.endswith(f"warehouse.duckdb:main.{ds.name}") for w in seen), ds.name
        assert any(f"lake/{ds.name}/" in w and "decoded" in w for w in seen), ds.name
    assert any(w.endswith("warehouse.duckdb:main.dx_dead_letter") for w in seen)
    assert any(w.startswith("dead-letter list") for w in seen)
    assert any(w.startswith("query") for w in seen)
    settings = Settings.from_env(env)
    with open_warehouse(settings.warehouse_path, read_only=True) as con:
        for ds in DATASETS:
            ((rows,),) = run_sql(con, f'SELECT count(*) FROM "{ds.name}"')
            assert rows == planted.loaded[ds.name], ds.name
        letters = fetch_dicts(con, "SELECT dataset, reason, row_json FROM dx_dead_letter")
    by_dataset: dict[str, int] = {}
    for letter in letters:
        by_dataset[letter["dataset"]] = by_dataset.get(letter["dataset"], 0) + 1
        assert REDACTED in letter["row_json"]
    assert by_dataset == planted.dead
    assert {x["reason"] for x in letters} == {
        "invalid_value",
        "null_required_field",
        "uniqueness_violation",
    }
    planted_columns = sum(len(c) for c in planted.columns.values())
    figures["secret shapes planted"] = len(SHAPES)
    figures["secret strings planted"] = len(planted.planter.cores)
    figures["source text/JSON columns planted"] = planted_columns
    figures["outputs scanned"] = len({w for w in scan.outputs if not w.endswith("(path)")})


# --- 2. tenancy ------------------------------------------------------------------------------


def _key(ds: Dataset, row: dict[str, Any]) -> dict[str, Any]:
    """The source primary key of a row inserted with ``SourceRows.insert``."""
    return {ds.column(c).source_name: row[ds.column(c).source_name] for c in ds.primary_key}


def test_every_exported_row_has_an_org_and_a_row_without_one_is_dead_lettered(
    pipe: Pipeline,
) -> None:
    """Tenancy is the first thing every consumer filters on: a row with no org would be
    visible to no tenant, or to all; it must be held back as a dead letter, never loaded."""
    orphans = {}
    for ds in DATASETS:
        pipe.src.insert(ds)
        try:
            orphans[ds.name] = pipe.src.insert(ds, org_id=None)
        except psycopg.errors.NotNullViolation:
            # Companies and persons are keyed by (org_id, entity_id) in the source itself.
            assert ds in (COMPANY_ENTITIES, PERSON_ENTITIES)
        pipe.export(ds)
    assert set(orphans) == {OPERATION_RUNS.name, OPERATION_EVENTS.name, ENTITY_SNAPSHOTS.name}

    for ds in DATASETS:
        ((rows, without_org),) = run_sql(
            pipe.con, f'SELECT count(*), count(*) FILTER (org_id IS NULL) FROM "{ds.name}"'
        )
        assert (rows, without_org) == (1, 0), ds.name
        ((nullable,),) = run_sql(
            pipe.con,
            "SELECT is_nullable FROM information_schema.columns "
            "WHERE table_name = $t AND column_name = 'org_id'",
            {"t": ds.name},
        )
        assert nullable == "NO", f"{ds.name}.org_id must be NOT NULL in the warehouse"
        letters = pipe.dead_letters(ds)
        if ds.name in orphans:
            [letter] = letters
            assert letter["reason"] == "null_required_field"
            assert "org_id:not_null" in letter["failed_checks"]
            assert letter["org_id"] is None
            stored = decoded(letter["record_key"])
            assert stored == decoded(json.dumps(_json_key(ds, orphans[ds.name])))
        else:
            assert letters == []


def _json_key(ds: Dataset, row: dict[str, Any]) -> dict[str, str]:
    return {c: str(row[ds.column(c).source_name]) for c in ds.primary_key}


#: A free-text (or JSON) source column per dataset, changed to show which rows a backfill
#: rewrote.
_CHANGED = {
    OPERATION_RUNS.name: ("error_message", "changed"),
    OPERATION_EVENTS.name: ("error_message", "changed"),
    COMPANY_ENTITIES.name: ("canonical_name", "changed"),
    PERSON_ENTITIES.name: ("full_name", "changed"),
    ENTITY_SNAPSHOTS.name: ("canonical_payload", {"name": "changed"}),
}


def _contract_name(ds: Dataset, source_name: str) -> str:
    return next(c.name for c in ds.source_columns if c.source_name == source_name)


def _changed_column_by_org(ds: Dataset) -> str:
    """SQL: (org_id, the changed column as text) per row of the dataset."""
    column = _contract_name(ds, _CHANGED[ds.name][0])
    return f'SELECT org_id::VARCHAR, coalesce("{column}"::VARCHAR, \'-\') FROM "{ds.name}"'


def _org_fingerprint(con: duckdb.DuckDBPyConnection, ds: Dataset, org: str) -> tuple:
    """Count and hash of an org's whole rows, load metadata (batch id, load time) included."""
    ((n, h),) = run_sql(
        con,
        f'SELECT count(*), sum(hash(t)) FROM "{ds.name}" t WHERE org_id::VARCHAR = $org',
        {"org": org},
    )
    return n, h


def test_cli_backfill_of_one_org_touches_only_that_orgs_rows(
    source: SourceRows, tmp_path: Path
) -> None:
    """Re-extracting one tenant after an incident must not rewrite, re-stamp or even re-read
    any other tenant's rows, in any dataset, in the warehouse or in the lake."""
    env = cli_env(source.dsn, tmp_path)
    settings = Settings.from_env(env)
    day = datetime.now(UTC).date() - timedelta(days=2)
    at = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    mine, theirs = new_id(), new_id()
    rows = {
        (ds.name, org): source.insert(ds, org_id=org, **{ds.column(ds.cursor).source_name: at})
        for ds in DATASETS
        for org in (mine, theirs)
    }
    with open_warehouse(settings.warehouse_path) as con:
        for ds in DATASETS:
            assert (
                run_dataset_batch(ds, source_dsn=source.dsn, con=con, settings=settings).inserted
                == 2
            )
        before = {(ds.name, theirs): _org_fingerprint(con, ds, theirs) for ds in DATASETS}
    for (name, _org), row in rows.items():
        ds = next(d for d in DATASETS if d.name == name)
        column, value = _CHANGED[name]
        bump = {"record_version": 2} if ds.write_mode == "upsert" else {}
        source.update(ds, _key(ds, row), **{column: value}, **bump)

    done = cli(
        "backfill", "--start", day.isoformat(), "--end", day.isoformat(), "--org", mine, env=env
    )

    assert done.returncode == 0, done.stderr[-3000:]
    with open_warehouse(settings.warehouse_path, read_only=True) as con:
        for ds in DATASETS:
            assert _org_fingerprint(con, ds, theirs) == before[(ds.name, theirs)], ds.name
            values = dict(run_sql(con, _changed_column_by_org(ds)))
            assert "changed" in values[mine] and "changed" not in values[theirs], ds.name
        ledger = fetch_dicts(
            con, "SELECT dataset, extracted, updated FROM _export_batches WHERE mode = 'backfill'"
        )
    assert sorted((b["dataset"], b["extracted"], b["updated"]) for b in ledger) == sorted(
        (ds.name, 1, 1) for ds in DATASETS
    )
    # The lake the backfill run published agrees: the other tenant's rows as they were.
    for ds in DATASETS:
        _names, lake = run_query(settings.data_dir, _changed_column_by_org(ds))
        values = dict(lake)
        assert "changed" in values[mine] and "changed" not in values[theirs], ds.name


# --- 3. the source password ------------------------------------------------------------------


@pytest.fixture(scope="module")
def password_role(pg_server: Any) -> Iterator[tuple[str, str]]:
    """A login role that must give its password: ``scram-sha-256`` for it in ``pg_hba.conf``
    (the embedded server trusts local connections otherwise), reading every table."""
    role, password = f"exporter_{secrets.token_hex(4)}", f"SrcPw-{secrets.token_hex(12)}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        admin.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(role)))
        ((hba_file,),) = admin.execute("SHOW hba_file").fetchall()
        hba = Path(hba_file)
        original = hba.read_text()
        rules = "".join(
            f"{kind} all {role} {where} scram-sha-256\n"
            for kind, where in (("local", ""), ("host", "127.0.0.1/32"), ("host", "::1/128"))
        )
        hba.write_text(rules + original)
        admin.execute("SELECT pg_reload_conf()")
        try:
            yield role, password
        finally:
            hba.write_text(original)
            admin.execute("SELECT pg_reload_conf()")
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _role_dsn(pg_server: Any, role: str, password: str, database: str) -> str:
    socket_dir = pg_server.get_postmaster_info().socket_dir
    return f"postgresql://{role}:{password}@/{database}?host={socket_dir}"


def _password_enforced(dsn: str, wrong: str) -> bool:
    """The server refuses the wrong password (pg_hba reloads asynchronously: wait for it)."""
    for _ in range(100):
        try:
            psycopg.connect(wrong, connect_timeout=5).close()
        except psycopg.OperationalError as exc:
            assert "password authentication failed" in str(exc)
            psycopg.connect(dsn, connect_timeout=5).close()
            return True
        time.sleep(0.05)
    return False


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.reliability
def test_source_password_never_shows_in_cli_output_errors_or_the_dagster_instance(
    source: SourceRows,
    password_role: tuple[str, str],
    pg_server: Any,
    tmp_path: Path,
    figures: dict[str, Any],
) -> None:
    """The DSN is the one secret the pipeline holds itself: whatever a user runs (export,
    status, backfill, reconcile, dead-letter replay) and however it fails (wrong database,
    wrong password, source down), the password must not reach the terminal, the run ledger,
    the Dagster instance (run config, tags, event logs: what the UI shows) or any file."""
    role, password = password_role
    database = urlsplit(source.dsn).path.lstrip("/")
    dsn = _role_dsn(pg_server, role, password, database)
    wrong_password = f"WrongPw-{secrets.token_hex(8)}"
    assert _password_enforced(dsn, _role_dsn(pg_server, role, wrong_password, database))
    yesterday = datetime.now(UTC) - timedelta(days=1)
    for hours in (1, 2, 3):
        source.insert(OPERATION_RUNS, created_at=yesterday - timedelta(hours=hours))
    source.insert(OPERATION_RUNS, status="exploded", created_at=ago(minutes=5))
    source.insert(OPERATION_EVENTS)
    env = cli_env(dsn, tmp_path, EXPORT_TRANSIENT_RETRIES="0", EXPORT_DEAD_LETTER_RETRY_SECONDS="0")
    scan = Scan(needles=[password, wrong_password], controls=[role])
    day = yesterday.date().isoformat()

    def expect(codes: tuple[int, ...], *args: str, **override: str) -> subprocess.CompletedProcess:
        done = cli(*args, env=env | override)
        assert done.returncode in codes, (args, done.returncode, done.stderr[-2000:])
        scan.process(" ".join(args), done)
        return done

    expect((0,), "run")
    expect((0, 3), "status")
    expect((0,), "backfill", "--start", day, "--end", day)
    # Reconciliation reads the source through the same DSN; whether yesterday's checks all
    # pass (the lag SLA may not) is not the point here, that it ran to its results is.
    reconciled = expect((0, 2), "reconcile", "--date", day)
    assert "row_count_parity" in reconciled.stdout, reconciled.stderr[-2000:]
    expect((0,), "dead-letter", "replay", "--dataset", OPERATION_RUNS.name)
    expect((0,), "dead-letter", "list", "--json")
    failures = {
        "wrong database": _role_dsn(
            pg_server, role, password, f"no_such_db_{secrets.token_hex(4)}"
        ),
        "wrong password": _role_dsn(pg_server, role, wrong_password, database),
        "source down": f"postgresql://{role}:{password}@127.0.0.1:{_closed_port()}/{database}"
        "?connect_timeout=2",
    }
    for what, bad_dsn in failures.items():
        for command in (
            ["run"],
            ["status"],
            ["dead-letter", "replay", "--dataset", OPERATION_RUNS.name],
            ["source", "init"],
        ):
            done = expect((2,), *command, EXPORT_SOURCE_DSN=bad_dsn)
            assert "Traceback" not in done.stderr, (what, command, done.stderr[-2000:])
            assert done.stderr.strip(), (what, command)
    scan_everything(scan, env)
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(env["DAGSTER_HOME"])) as instance:
        records = instance.get_run_records()
        for record in records:
            run = record.dagster_run
            scan.text(f"dagster run {run.run_id} tags", json.dumps(run.tags))
            scan.text(f"dagster run {run.run_id} config", json.dumps(run.run_config, default=str))
            for event in instance.all_logs(run.run_id):
                scan.text(f"dagster run {run.run_id} events", repr(event))

    scan.assert_clean()
    # The failures were recorded (the user, not the password, is named) where a user looks.
    assert any(w.startswith("dagster_home") for w in scan.seen[role])
    assert any("_export_batches" in w for w in scan.seen[role])
    # run, backfill, reconcile, and the three failed micro-batches: all in the instance.
    statuses = sorted(r.dagster_run.status.value for r in records)
    assert statuses == ["FAILURE"] * len(failures) + ["SUCCESS"] * 3
    figures["password-scan CLI invocations"] = 6 + 4 * len(failures)
    figures["outputs scanned for the source password"] = len(
        {w for w in scan.outputs if not w.endswith("(path)")}
    )


# --- 4. SQL binds values ---------------------------------------------------------------------

HOSTILE = (
    "'; DROP TABLE operation_runs; --",
    "$1",
    '" OR 1=1 --',
    "\\",
    "1); DROP TABLE dx_dead_letter; --",
)


def _source_fingerprint(src: SourceRows) -> list[tuple]:
    """Every source table (by the catalog, not a list): its name, rows and content hash."""
    tables = src.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema IN ('ops', 'entities') ORDER BY 1, 2"
    )
    out = []
    for schema, table in tables:
        query = sql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
            "FROM {} t"
        ).format(sql.Identifier(schema, table))
        out.append((schema, table, *src.execute(query.as_string(src.conn))[0]))
    return out


def _warehouse_fingerprint(path: Path) -> list[tuple]:
    """Every warehouse table: name, rows and a hash of its whole rows; dead letters by id and
    reason (resolving a letter legitimately changes its status)."""
    with open_warehouse(path, read_only=True) as con:
        tables = run_sql(
            con,
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_catalog = current_database() ORDER BY 1",
        )
        out = []
        for (table,) in tables:
            columns = "dead_letter_id, reason" if table == "dx_dead_letter" else "*"
            ((n, h),) = run_sql(
                con, f'SELECT count(*), sum(hash(t)) FROM (SELECT {columns} FROM "{table}") t'
            )
            out.append((table, n, h))
    return out


def _invoke(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """The CLI's ``main`` in this process (as the console script calls it)."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects a value
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_sql_looking_values_in_every_cli_option_are_rejected_or_taken_literally(
    source: SourceRows,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    figures: dict[str, Any],
) -> None:
    """Every option that reaches SQL either refuses an SQL-looking value with one clear line
    (exit 2) or stores it as the literal it is; afterwards source, warehouse and lake are
    exactly as they were (one resolved dead letter per hostile note aside)."""
    env = cli_env(source.dsn, tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env(env)
    for _ in range(3):
        source.insert(OPERATION_RUNS)
    for _ in HOSTILE:
        source.insert(OPERATION_RUNS, status="exploded")
    with open_warehouse(settings.warehouse_path) as con:
        for ds in DATASETS:
            run_dataset_batch(ds, source_dsn=source.dsn, con=con, settings=settings)
        letters = [x["dead_letter_id"] for x in list_letters(con)]
    code, _out, err = _invoke(["publish"], capsys)
    assert code == 0, err
    source_before = _source_fingerprint(source)
    warehouse_before = _warehouse_fingerprint(settings.warehouse_path)
    lake_before = run_query(settings.data_dir, f'SELECT count(*) FROM "{OPERATION_RUNS.name}"')

    day = "2026-01-01"
    rejected = {
        "backfill --org": lambda v: ["backfill", "--start", day, "--end", day, "--org", v],
        "backfill --dataset": lambda v: ["backfill", "--start", day, "--end", day, "--dataset", v],
        "backfill --start": lambda v: ["backfill", "--start", v, "--end", day],
        "backfill --end": lambda v: ["backfill", "--start", day, "--end", v],
        "reconcile --date": lambda v: ["reconcile", "--date", v],
        "reconcile --start": lambda v: ["reconcile", "--start", v, "--end", day],
        "reconcile --end": lambda v: ["reconcile", "--start", day, "--end", v],
        "dead-letter list --dataset": lambda v: ["dead-letter", "list", "--dataset", v],
        "dead-letter list --status": lambda v: ["dead-letter", "list", "--status", v],
        "dead-letter replay --dataset": lambda v: ["dead-letter", "replay", "--dataset", v],
        "source seed --scale": lambda v: ["source", "seed", "--scale", v],
        "query": lambda v: ["query", v],
    }
    literal = {
        "dead-letter replay --id": lambda v: ["dead-letter", "replay", "--id", v],
        "dead-letter resolve --id": lambda v: ["dead-letter", "resolve", "--id", v, "--note", "x"],
    }
    cases = 0
    for value in HOSTILE:
        for option, argv in rejected.items():
            code, _out, err = _invoke(argv(value), capsys)
            errors = [line for line in err.splitlines() if "error:" in line]
            assert code == 2 and len(errors) == 1, (option, value, code, err)
            assert "Traceback" not in err
            assert option.split()[-1] in errors[0] or option == "query", (option, errors)
            cases += 1
        for option, argv in literal.items():
            code, _out, err = _invoke(argv(value), capsys)
            assert (code, err.strip()) == (
                2,
                f"export-pipeline: error: no dead letter with id {' '.join(value.split())}",
            ), (option, value)
            cases += 1
    for attempt in ("SELECT 1; DROP TABLE dx_operation_runs_v1", "DROP VIEW runs_per_day"):
        code, _out, err = _invoke(["query", attempt], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, (attempt, err)
        cases += 1
    # Free text meant to be stored: each hostile note resolves one letter, verbatim.
    for letter_id, note in zip(letters, HOSTILE, strict=True):
        code, _out, err = _invoke(
            ["dead-letter", "resolve", "--id", letter_id, "--note", note], capsys
        )
        assert code == 0, err
        cases += 1
    code, out, err = _invoke(["dead-letter", "list", "--json", "--status", "resolved"], capsys)
    assert code == 0, err
    notes = {x["dead_letter_id"]: x["resolution_note"] for x in json.loads(out)}
    assert notes == {i: f"operator: {n}" for i, n in zip(letters, HOSTILE, strict=True)}

    assert _source_fingerprint(source) == source_before
    assert _warehouse_fingerprint(settings.warehouse_path) == warehouse_before
    assert (
        run_query(settings.data_dir, f'SELECT count(*) FROM "{OPERATION_RUNS.name}"') == lake_before
    )
    figures["hostile CLI values tried"] = cases


def test_a_hostile_org_from_a_run_tag_is_bound_not_spliced(pipe: Pipeline) -> None:
    """The UI's launchpad can set the backfill's org tag to anything, bypassing the CLI's uuid
    check: the value must reach PostgreSQL as a bound value and fail as one, changing nothing."""
    pipe.src.insert(OPERATION_RUNS)
    before = _source_fingerprint(pipe.src)
    day = datetime.now(UTC).date()
    for value in HOSTILE:
        with pytest.raises(Exception, match="invalid input syntax for type uuid"):
            run_backfill(
                OPERATION_RUNS, day, day, source_dsn=pipe.src.dsn, con=pipe.con,
                settings=pipe.settings, org_id=value,
            )  # fmt: skip
    assert _source_fingerprint(pipe.src) == before
    assert pipe.rows(OPERATION_RUNS) == []
    assert [b["status"] for b in pipe.ledger(OPERATION_RUNS)] == ["failed"] * len(HOSTILE)


def test_a_data_dir_path_holding_quotes_reaches_sql_escaped(
    source: SourceRows, tmp_path: Path
) -> None:
    """Paths are the values the pipeline must splice (DuckDB's SET, COPY TO and read_parquet in
    a view take no parameters): a quote in the data dir must be escaped, not break out."""
    data_dir = tmp_path / "it's a \"data\" dir'; DROP TABLE x; --"
    settings = Settings.from_env(
        {"EXPORT_DATA_DIR": str(data_dir), "EXPORT_SAFETY_LAG_SECONDS": "0"}
    )
    source.insert(OPERATION_RUNS)
    with open_warehouse(settings.warehouse_path, memory_limit="256MB") as con:
        run_dataset_batch(OPERATION_RUNS, source_dsn=source.dsn, con=con, settings=settings)
        for ds in DATASETS:
            assert lake.check_table(con, lake.lake_for(settings), ds).passed
        ((spill,),) = run_sql(con, "SELECT current_setting('temp_directory')")
    refresh_catalog(settings.data_dir)

    assert spill == str(data_dir / ".duckdb_spill")
    _names, rows = run_query(settings.data_dir, f'SELECT count(*) FROM "{OPERATION_RUNS.name}"')
    assert rows == [(1,)]


# 4b. no value is ever formatted into SQL: a static scan of export_pipeline/ and sql/

#: Text that makes a string literal SQL (uppercase keywords, casts, DuckDB's struct syntax).
_SQL_HINT = re.compile(
    r"\b(?:SELECT|INSERT|UPDATE|DELETE|WHERE|FROM|JOIN|VALUES|CREATE|DROP|ALTER|COPY|SET|"
    r"PRAGMA|ATTACH|LIMIT|RETURNING|CAST|AS|AND|OR)\b|::|:=|\|\|"
)
#: What precedes a value in SQL: a comparison, IN, LIKE, LIMIT, ... (an identifier is followed
#: by a ``.`` when qualified, and never follows these).
_VALUE_BEFORE = re.compile(
    r"(?:=|<>|!=|<|>|\b(?:IN|LIKE|ILIKE|LIMIT|OFFSET|BETWEEN|INTERVAL)|\bVALUES\s*\()\s*$",
    re.IGNORECASE,
)
#: Functions that quote an identifier (from the contract) for SQL.
_IDENTIFIER_CALLS = {"quote_ident", "quote_table", "_q", "_ident_list", "Identifier"}
#: Calls whose string arguments are messages, not SQL.
_MESSAGE_CALLS = {"print", "debug", "info", "warning", "error", "exception", "critical"}
_FIELD = re.compile(r"(?<!\{)\{([A-Za-z_]\w*|\d*)(?:[!:][^{}]*)?\}(?!\})")

#: Values the code does splice, each for a reason: (file, expression) -> why it is safe.
SPLICED_ON_PURPOSE = {
    ("export_pipeline/warehouse.py", "memory_limit"): (
        "SET takes no parameters; config._memory admits only <number><KB|MB|GB|TB|KiB|...>"
    ),
    ("export_pipeline/load.py", "successor.version"): "a contract version label from the code",
    ("export_pipeline/load.py", "ds.version_column"): "a contract column name, as a check name",
    ("export_pipeline/load.py", "g"): "contract column names of a uniqueness guard, as a name",
    ("export_pipeline/lake.py", "key"): "a contract partition key name (Hive path, types)",
    ("export_pipeline/reconcile.py", "name"): "a contract key column name, as a JSON path",
    ("export_pipeline/reconcile.py", "c"): "a contract key column name, as a JSON path",
    ("export_pipeline/lake.py", "k"): "a contract key column name, as a JSON path",
}


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name):
            return node.func.id
        if isinstance(node.func, ast.Attribute):
            return node.func.attr
    return None


def _is_escape(node: ast.AST) -> bool:
    """``x.replace("'", "''")``: a value escaped as the body of a SQL string literal."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "replace"
        and [a.value for a in node.args if isinstance(a, ast.Constant)] == ["'", "''"]
    )


def _position(before: str, after: str) -> str | None:
    """Why a value spliced between ``before`` and ``after`` would be SQL injection, if it is."""
    if before.count("'") % 2 == 1:
        return "inside a SQL string literal"
    if _VALUE_BEFORE.search(before) and not after.startswith("."):
        return "in a value position"
    return None


def _spliced(parts: list[Any]) -> Iterator[tuple[Any, str, str]]:
    """(expression, literal text before it, literal text after it) for each non-literal part."""
    for i, part in enumerate(parts):
        if not isinstance(part, str):
            before = "".join(p for p in parts[:i] if isinstance(p, str))
            after = next((p for p in parts[i + 1 :] if isinstance(p, str)), "")
            yield part, before, after


def _concatenated(node: ast.AST) -> list[Any]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _concatenated(node.left) + _concatenated(node.right)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    return [node]


def _template_findings(template: str) -> Iterator[tuple[str, str]]:
    """``{field}`` placeholders of a ``str.format`` template that sit where values go."""
    for m in _FIELD.finditer(template):
        why = _position(template[: m.start()], template[m.end() :])
        if why:
            yield m.group(0), why


def sql_formatting_findings(source: str, filename: str) -> list[tuple[str, str, int, str]]:
    """(file, spliced expression, line, why) for each value formatted into SQL in ``source``:
    f-strings, ``+`` concatenation, ``%`` and ``str.format`` templates, whose text is SQL and
    where the spliced part lands inside a string literal or where a value goes."""
    tree = ast.parse(source, filename)
    escaped = {
        t.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and _is_escape(node.value)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    messages: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) or _call_name(node) in _MESSAGE_CALLS:
            messages |= {id(n) for n in ast.walk(node)}
    inside_fstring = {
        id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values
    }
    findings = []

    def judge(parts: list[Any], line: int, quoted_only: bool) -> None:
        text = "".join(p for p in parts if isinstance(p, str))
        for expr, before, after in _spliced(parts):
            if _call_name(expr) in _IDENTIFIER_CALLS or _is_escape(expr):
                continue
            if isinstance(expr, ast.Name) and expr.id in escaped:
                continue
            why = _position(before, after)
            if why and (why.startswith("inside") or (not quoted_only and _SQL_HINT.search(text))):
                findings.append((filename, ast.unparse(expr), line, why))

    for node in ast.walk(tree):
        if id(node) in messages:
            continue
        if isinstance(node, ast.JoinedStr):
            parts = [v.value for v in node.values]  # Constant.value or FormattedValue.value
            judge(parts, node.lineno, quoted_only=False)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            parts = _concatenated(node)
            if any(isinstance(p, str) for p in parts):
                judge(parts, node.lineno, quoted_only=False)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            left = node.left
            if isinstance(left, ast.Constant) and isinstance(left.value, str):
                if _SQL_HINT.search(left.value) and re.search(r"%[-#0 +]*\d*[sdrif(]", left.value):
                    findings.append((filename, ast.unparse(node.right), node.lineno, "%-format"))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in inside_fstring
            and _SQL_HINT.search(node.value)
        ):
            for field_, why in _template_findings(node.value):
                findings.append((filename, field_, node.lineno, why))
    return findings


def sql_file_findings(text: str, filename: str) -> list[tuple[str, str, int, str]]:
    """Placeholders of a ``sql/`` template (filled with ``str.format``) where values go."""
    body = re.sub(r"--[^\n]*", "", text)  # a comment's apostrophe is no SQL quote
    return [(filename, f, 0, why) for f, why in _template_findings(body)]


VIOLATIONS = {
    "quoted value": "run_sql(con, f\"SELECT * FROM t WHERE org_id = '{org_id}'\")",
    "compared value": 'con.execute(f"DELETE FROM t WHERE day >= {day}")',
    "limit": 'con.execute(f"SELECT * FROM t LIMIT {n}")',
    "in list": 'con.execute(f"SELECT * FROM t WHERE id IN {tuple(ids)}")',
    "qualified name = value": 'q = f"SELECT * FROM t WHERE t.id = {key} AND t.x = 1"',
    "percent": 'cur.execute("SELECT * FROM t WHERE id = %s" % ident)',
    "concatenated": 'cur.execute("SELECT * FROM t WHERE note = \'" + note + "\'")',
    "format positional": "cur.execute(\"UPDATE t SET note = '{}' WHERE id = 1\".format(note))",
    "format named": 'cur.execute("SELECT * FROM t WHERE id = {id}".format(id=x))',
    "fragment": "part = f\"'{value}' AS export_schema_version\"",
}
SAFE = {
    "bound": 'run_sql(con, f\'SELECT * FROM "{ds.name}" WHERE org_id = $org\', {"org": o})',
    "identifiers": 'q = f"SELECT {a}.{_q(c)} = {b}.{_q(c)} FROM {quote_table(t)}"',
    "escaped path": 'p = str(d).replace("\'", "\'\'")\ncon.execute(f"COPY t TO \'{p}\'")',
    "escaped inline": 'con.execute("SET x = \'" + str(d).replace("\'", "\'\'") + "\'")',
    "message": "raise ValueError(f\"'{text}' is not a date (SELECT a day)\")",
    "printed": 'print(f"run: query \\"SELECT * FROM t WHERE x = \'{x}\'\\"")',
    "template of identifiers": 'q = "SELECT {projection} FROM {table} WHERE {cursor} > $1"',
}


@pytest.mark.parametrize("case", sorted(VIOLATIONS))
def test_the_static_sql_scan_catches_a_value_formatted_into_sql(case: str) -> None:
    """A scan that cannot fail proves nothing: each way of splicing a value must be caught."""
    assert sql_formatting_findings(VIOLATIONS[case], "example.py"), case


@pytest.mark.parametrize("case", sorted(SAFE))
def test_the_static_sql_scan_accepts_bound_values_identifiers_and_messages(case: str) -> None:
    """Bound values, quoted identifiers, escaped paths and messages are not violations."""
    assert sql_formatting_findings(SAFE[case], "example.py") == [], case


def test_the_sql_template_scan_catches_a_quoted_or_compared_placeholder() -> None:
    """``sql/`` templates are filled with ``str.format``: their placeholders must be names."""
    assert sql_file_findings("SELECT * FROM {table} WHERE id = '{value}'", "x.sql")
    assert sql_file_findings("SELECT * FROM t WHERE day >= {day}", "x.sql")
    assert not sql_file_findings("-- it's\nSELECT {projection} FROM {t} WHERE {c} > $1", "x.sql")


def test_no_value_is_formatted_into_sql_in_the_package_or_its_sql_files(
    figures: dict[str, Any],
) -> None:
    """SQL injection starts with one f-string: values travel as bind parameters; only contract
    identifiers (and the few listed values, each with its reason) are spliced."""
    findings = []
    files = sorted(PACKAGE.rglob("*.py"))
    for path in files:
        rel = str(path.relative_to(REPO))
        findings += sql_formatting_findings(path.read_text(encoding="utf-8"), rel)
    templates = sorted((REPO / "sql").rglob("*.sql"))
    for path in templates:
        findings += sql_file_findings(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    unexplained = [f for f in findings if (f[0], f[1]) not in SPLICED_ON_PURPOSE]
    assert unexplained == [], "values formatted into SQL (bind them as parameters):\n" + "\n".join(
        f"  {file}:{line}: {expr} ({why})" for file, expr, line, why in unexplained
    )
    figures["files scanned for SQL formatting"] = len(files) + len(templates)
    figures["values spliced on purpose (listed)"] = len({(f[0], f[1]) for f in findings})
