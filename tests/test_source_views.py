"""A producer's real schema behind contract views: the relation mapping, the shipped
data-engine-x views, and a first export through them with a role that can read nothing else."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from cli_process import run_cli
from data_engine_x import SAMPLE_EXPECTED, real_source, write_sample

from export_pipeline import extract
from export_pipeline.config import ConfigError, Settings
from export_pipeline.contract import (
    DATASETS,
    ENTITY_SNAPSHOTS,
    OPERATION_RUNS,
)
from export_pipeline.relations import source_dataset, source_relation
from export_pipeline.source_views import view_script

_cli = partial(run_cli, entry="python_m")


REPO = Path(__file__).resolve().parent.parent


# --- the mapping ------------------------------------------------------------------------------


def test_default_settings_read_the_reference_tables_with_their_source_column_names():
    """Without configuration nothing changes: today's reference tables and their renames."""
    settings = Settings.from_env({})
    for ds in DATASETS:
        assert source_dataset(ds, settings) is ds
    assert source_relation(ENTITY_SNAPSHOTS, settings).relation == "entities.entity_snapshots"


def test_a_source_schema_reads_one_contract_shaped_relation_per_dataset():
    """EXPORT_SOURCE_SCHEMA=export reads export.<dataset>, by contract column names (no renames),
    in every query the extract builds: window, org filter, scope filter, keys, max cursor."""
    settings = Settings.from_env({"EXPORT_SOURCE_SCHEMA": "export"})
    mapped = source_dataset(ENTITY_SNAPSHOTS, settings)
    assert mapped.source_table == "export.dx_entity_snapshots_v1"
    assert all(c.source is None for c in mapped.columns)
    assert mapped.column_names == ENTITY_SNAPSHOTS.column_names
    assert source_dataset(mapped, settings) == mapped  # idempotent
    window = extract.window_query(mapped, by_org=True)
    assert '"export"."dx_entity_snapshots_v1"' in window
    assert '"snapshot_id" AS "snapshot_id"' in window and '"id"' not in window
    assert '"canonical_payload_json" AS' in extract.keys_query(mapped)
    # The reference table's renames still apply without the setting.
    assert '"id" AS "snapshot_id"' in extract.window_query(ENTITY_SNAPSHOTS)


def test_org_and_scope_filters_use_the_columns_of_the_relation_read():
    """A filter on a contract name the relation does not have would fail (or, worse, bind to
    another column): the org and out-of-scope filters use the relation's own column names."""
    from dataclasses import replace

    renamed = replace(
        OPERATION_RUNS,
        columns=tuple(
            replace(c, source={"org_id": "tenant_id", "entity_type": "kind"}.get(c.name))
            for c in OPERATION_RUNS.columns
        ),
    )
    query = extract.window_query(renamed, by_org=True)
    assert "\"tenant_id\" = (SELECT current_setting('export_pipeline.org_id')" in query
    assert '"kind" IS NULL OR NOT "kind" = ANY' in query
    assert '"org_id" =' not in query and '"entity_type" IS NULL' not in query


def test_a_per_dataset_relation_overrides_the_schema_and_bad_values_fail_at_start():
    """The odd view elsewhere is one variable; a typo in its name or value fails loudly."""
    env = {
        "EXPORT_SOURCE_SCHEMA": "export",
        "EXPORT_SOURCE_RELATION_DX_OPERATION_RUNS_V1": "reporting.runs_for_hq",
    }
    settings = Settings.from_env(env)
    assert source_dataset(OPERATION_RUNS, settings).source_table == "reporting.runs_for_hq"
    assert source_relation(OPERATION_RUNS, settings).origin == "override"
    with pytest.raises(ConfigError, match="EXPORT_SOURCE_RELATION_DX_RUNS names no contract"):
        Settings.from_env({"EXPORT_SOURCE_RELATION_DX_RUNS": "a.b"})
    with pytest.raises(ConfigError, match="schema-qualified"):
        Settings.from_env({"EXPORT_SOURCE_RELATION_DX_OPERATION_RUNS_V1": "runs"})
    with pytest.raises(ConfigError, match="EXPORT_SOURCE_SCHEMA"):
        Settings.from_env({"EXPORT_SOURCE_SCHEMA": "a.b"})


def test_the_views_command_prints_a_script_of_views_and_grants_that_changes_no_table():
    """The DBA reads what they run: one transaction, the five views, the grants, nothing else."""
    script = view_script("data-engine-x", "hq export", "exporter")
    assert script.count("CREATE OR REPLACE VIEW") == len(DATASETS)
    for ds in DATASETS:
        assert f'"hq export".{ds.name} AS' in script
    assert 'GRANT SELECT ON ALL TABLES IN SCHEMA "hq export" TO "exporter"' in script
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("--"))
    kinds = [" ".join(st.split()[:2]) for st in code.split(";") if st.strip()]
    assert kinds == [
        "BEGIN", "CREATE SCHEMA", *["CREATE OR"] * len(DATASETS), "GRANT USAGE", "GRANT SELECT",
        "COMMIT",
    ]  # fmt: skip
    assert not re.search(r"\b(ALTER|DROP|TRUNCATE|INSERT|UPDATE|DELETE|COPY)\b", code)
    assert "--!" not in script and "{{" not in script
    done = _cli("source", "views", "--profile", "data-engine-x", env={})
    assert done.returncode == 0, done.stderr
    assert done.stdout == view_script("data-engine-x")


def test_the_mapping_dictionary_documents_every_contract_column_of_every_dataset():
    """The data dictionary of the mapping is hand-written: a contract column added without a
    line saying where it comes from (or that the producer must add it) fails here."""
    text = (REPO / "docs" / "source_mapping_data_engine_x.md").read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.MULTILINE)
    for ds in DATASETS:
        (section,) = [s for s in sections if s.startswith(ds.name + " ")]
        documented = re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE)
        assert documented == list(ds.column_names), ds.name


# --- the done-when export ---------------------------------------------------------------------


@pytest.fixture
def producer(pg_server: Any, source_dsn: str):
    """data-engine-x's real schema (RLS on, no policy) with a day of producer-written rows and
    the shipped views installed by its owner, and a login role with SELECT on the views only."""
    with real_source(pg_server, source_dsn) as src:
        facts = write_sample(src.owner_dsn)
        reader = src.login_role()
        src.install_views("export", reader)
        yield src, reader, facts


def test_run_through_the_shipped_views_exports_all_five_datasets_with_a_select_only_role(
    producer, tmp_path: Path
):
    """The first export against the producer's real schema: every dataset through the views,
    rows the contract refuses dead-lettered with their reason, counts reconciling exactly, and a
    role that cannot read a single table (only the views)."""
    src, reader, facts = producer
    dsn = src.dsn(reader)
    with psycopg.connect(dsn) as conn:  # the role really holds nothing but the views
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM ops.operation_runs")
    env = {
        "EXPORT_SOURCE_DSN": dsn,
        "EXPORT_SOURCE_SCHEMA": "export",
        "EXPORT_SAFETY_LAG_SECONDS": "0",
        "EXPORT_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    (tmp_path / "dagster_home").mkdir()
    done = _cli("run", env=env)
    assert done.returncode == 0, done.stdout + done.stderr

    settings = Settings.from_env(env)
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        with extract.connect(dsn) as conn:
            in_scope = {
                ds.name: extract.count_in_scope(conn, source_dataset(ds, settings))
                for ds in DATASETS
            }
        for ds in DATASETS:
            ((rows,),) = con.execute(f'SELECT count(*) FROM "{ds.name}"').fetchall()
            ((dead,),) = con.execute(
                "SELECT count(*) FROM dx_dead_letter WHERE dataset = $d", {"d": ds.name}
            ).fetchall()
            expected_in_scope, expected_dead = SAMPLE_EXPECTED[ds.name]
            assert (in_scope[ds.name], dead) == (expected_in_scope, expected_dead), ds.name
            assert rows + dead == in_scope[ds.name], ds.name

        letters = con.execute(
            "SELECT dataset, reason, failed_checks, record_key FROM dx_dead_letter"
        ).fetchall()
        by_dataset: dict[str, list] = {}
        for name, reason, checks, key in letters:
            by_dataset.setdefault(name, []).append((reason, checks, json.loads(key)))
        companies = by_dataset["dx_company_entities_v1"]
        assert {k["entity_id"] for _r, _c, k in companies} == set(facts["clay"])
        assert all(r == "null_required_field" and "company_id:not_null" in c
                   for r, c, _k in companies)  # fmt: skip
        assert by_dataset["dx_operation_runs_v1"] == [
            ("null_required_field", ["entity_id:not_null"], {"run_id": facts["runs"]["no_entity"]})
        ]
        assert [c for _r, c, _k in by_dataset["dx_person_entities_v1"]] == [["phone_e164:pattern"]]

        runs = {
            str(r[0]): r[1:]
            for r in con.execute(
                "SELECT run_id, status, attempt_count, source_provider, pipeline_run_id::VARCHAR, "
                "error_code, entity_type FROM dx_operation_runs_v1"
            ).fetchall()
        }
        ids = facts["runs"]
        assert facts["runs"]["job"] not in runs  # out of the contract's scope
        assert runs[ids["found_in_pipeline"]][:4] == ("succeeded", 2, "apollo",
                                                      facts["pipeline_runs"][0])  # fmt: skip
        assert runs[ids["not_found"]][0] == "succeeded"
        assert runs[ids["failed"]][0:3] == ("failed", 2, "apollo")
        # The failing call's code; which of the two is "last" the producer does not record.
        assert runs[ids["failed"]][4] in ("http_500", "rate_limited")
        assert runs[ids["missing_inputs"]][1] == 0 and runs[ids["missing_inputs"]][4] == (
            "missing_inputs"
        )
        assert runs[ids["skipped_then_found"]][2] == "companyenrich"
        sequences = con.execute(
            "SELECT run_id, list(event_sequence ORDER BY event_sequence) FROM "
            "dx_operation_events_v1 GROUP BY ALL"
        ).fetchall()
        assert all(seq == list(range(1, len(seq) + 1)) for _r, seq in sequences)
        ((payloads,),) = con.execute(
            "SELECT count(*) FROM dx_operation_events_v1 WHERE raw_response_ref IS NOT NULL "
            "AND payload_hash IS NOT NULL"
        ).fetchall()
        assert payloads == 1
        ((page_id, priority, version),) = con.execute(
            "SELECT linkedin_page_id, source_priority, record_version FROM "
            "dx_company_entities_v1 WHERE entity_id = $e",
            {"e": facts["acme"]},
        ).fetchall()
        assert (page_id, priority, version) == ("1337", "apollo,prospeo", 3)
    finally:
        con.close()

    status = _cli("status", "--json", env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert {r["dataset"] for r in json.loads(status.stdout)} == {ds.name for ds in DATASETS}
    today = datetime.now(UTC).date().isoformat()
    reconciled = _cli("reconcile", "--date", today, "--no-repair", env=env)
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr


# --- source check -----------------------------------------------------------------------------


def _check(dsn: str, tmp_path: Path, **env: str) -> tuple[int, dict, str]:
    base = {"EXPORT_SOURCE_DSN": dsn, "EXPORT_DATA_DIR": str(tmp_path / "data"), **env}
    as_json = _cli("source", "check", "--json", env=base)
    text = _cli("source", "check", env=base)
    assert as_json.returncode == text.returncode, text.stdout + text.stderr
    return as_json.returncode, json.loads(as_json.stdout), text.stdout


def test_source_check_on_the_raw_real_schema_fails_naming_what_is_missing(producer, tmp_path):
    """Pointed at data-engine-x's tables themselves, the check says exactly why an export cannot
    work: the missing relation, the missing columns, and row-level security hiding rows."""
    src, _reader, _facts = producer
    table_reader = src.login_role(
        "GRANT USAGE ON SCHEMA ops, entities TO {role}",
        "GRANT SELECT ON ALL TABLES IN SCHEMA ops, entities TO {role}",
    )
    code, report, text = _check(src.dsn(table_reader), tmp_path)
    assert code == 1, text
    by_name = {d["dataset"]: d for d in report["datasets"]}
    runs = by_name["dx_operation_runs_v1"]
    assert runs["relation"] == "ops.operation_runs" and runs["kind"] == "table"
    assert set(runs["missing_columns"]) == {
        "pipeline_run_id", "workflow_id", "action_id", "entity_id", "source_provider",
        "attempt_count", "started_at", "ended_at", "duration_ms", "cost_usd", "error_code",
        "error_message",
    }  # fmt: skip
    events = by_name["dx_operation_events_v1"]
    assert any("ops.operation_events does not exist" in f["message"] for f in events["findings"])
    companies = by_name["dx_company_entities_v1"]
    assert set(companies["missing_columns"]) == {"linkedin_page_id", "source_priority"}
    persons = by_name["dx_person_entities_v1"]
    assert persons["missing_columns"] == [] and persons["blocking"]
    assert any(
        "row-level security on entities.person_entities applies" in f["message"]
        for f in persons["findings"]
    )
    assert "missing contract columns: linkedin_page_id, source_priority" in text
    assert "NOT ready" in text


def test_source_check_on_the_views_passes_and_warns_that_no_index_serves_the_window(
    producer, tmp_path
):
    """Through the shipped views the same database is ready: columns fit, SELECT is granted,
    RLS is enabled on the tables but does not bind the view's owner; the real window query's
    plan shows sequential scans (no index on the cursors), a warning, not a failure."""
    src, reader, _facts = producer
    code, report, text = _check(src.dsn(reader), tmp_path, EXPORT_SOURCE_SCHEMA="export")
    assert code == 0, text
    assert report["ok"] and report["server"]["standby"] is False
    assert report["server"]["settings_kept_in_transaction"] is True
    assert report["server"]["pooled"] is False
    for d in report["datasets"]:
        assert d["relation"] == f"export.{d['dataset']}" and d["kind"] == "view", d
        assert d["can_select"] and not d["missing_columns"] and not d["mistyped_columns"]
        assert d["estimated_rows"] is not None
        behind = [r for r in d["relations"] if r["depth"] > 0]
        assert behind and all(r["rls_enabled"] and not r["rls_applies"] for r in behind)
    companies = next(d for d in report["datasets"] if d["dataset"] == "dx_company_entities_v1")
    assert companies["seq_scans"] == ["entities.company_entities"]
    assert companies["index_scans"] == []
    assert any(f["level"] == "warning" and "reads entities.company_entities in full" in f["message"]
               for f in companies["findings"])  # fmt: skip
    assert "ready to export" in text


def test_source_check_on_the_reference_source_passes(pipe, tmp_path):
    """The reference schema the pipeline ships is ready as it is, cursor indexes included."""
    code, report, text = _check(pipe.src.dsn, tmp_path)
    assert code == 0, text
    for d in report["datasets"]:
        assert d["origin"] == "reference" and d["kind"] == "table" and not d["blocking"], d
        assert d["index_scans"] and not d["seq_scans"], d
        assert not [f for f in d["findings"] if f["level"] != "info"], d


def test_source_check_names_the_missing_grants_and_rls_behind_a_security_invoker_view(
    producer, tmp_path
):
    """A role the DBA forgot to grant, and a view made security_invoker (it then reads the
    table as the exporter, whom RLS hides every row from): both block, each saying why."""
    src, _reader, _facts = producer
    nobody = src.login_role()
    code, report, text = _check(src.dsn(nobody), tmp_path, EXPORT_SOURCE_SCHEMA="export")
    assert code == 1, text
    for d in report["datasets"]:
        assert d["can_select"] is False and d["blocking"], d
    assert f"has no USAGE on schema export: GRANT USAGE ON SCHEMA export TO {nobody}" in text

    invoker = src.login_role(
        "GRANT USAGE ON SCHEMA export, entities TO {role}",
        "GRANT SELECT ON ALL TABLES IN SCHEMA export, entities TO {role}",
    )
    with psycopg.connect(src.owner_dsn, autocommit=True) as conn:
        conn.execute("ALTER VIEW export.dx_person_entities_v1 SET (security_invoker = true)")
    code, report, text = _check(src.dsn(invoker), tmp_path, EXPORT_SOURCE_SCHEMA="export")
    assert code == 1, text
    blocked = {d["dataset"] for d in report["datasets"] if d["blocking"]}
    assert blocked == {"dx_person_entities_v1"}
    assert (
        f"row-level security on entities.person_entities applies to role {invoker} "
        "(through the view" in text
    )


def test_micro_batches_through_the_views_follow_new_versions_and_reread_nothing_twice(
    producer, tmp_path
):
    """After the first export the producer keeps writing its way (a version bump with its
    snapshot, a new run with attempts, a Clay company given its company_id): the next
    micro-batch loads exactly those, re-reads the rest as unchanged (event_sequence and the
    derived run columns are stable), and a fixed dead letter resolves through the views."""
    from data_engine_x import Producer

    from export_pipeline.batch import run_dataset_batch
    from export_pipeline.dead_letters import retry_dead_letters
    from export_pipeline.warehouse import fetch_dicts, open_warehouse

    src, reader, facts = producer
    dsn = src.dsn(reader)
    settings = Settings.from_env(
        {
            "EXPORT_SOURCE_SCHEMA": "export",
            "EXPORT_SAFETY_LAG_SECONDS": "0",
            "EXPORT_DATA_DIR": str(tmp_path),
        }
    )
    with open_warehouse(settings.warehouse_path) as con:
        first = {
            ds.name: run_dataset_batch(ds, source_dsn=dsn, con=con, settings=settings)
            for ds in DATASETS
        }
        assert {n: r.extracted for n, r in first.items()} == {
            n: expected for n, (expected, _dead) in SAMPLE_EXPECTED.items()
        }
        p = Producer(src.owner_dsn)
        try:
            org_a = facts["orgs"][0]
            p.update_entity("company", org_a, facts["acme"], facts["pipeline_runs"][0],
                            hq_country="DE")  # fmt: skip
            p.operation(org_a, operation_id="company.enrich.profile", entity_type="company",
                        status="found", output_payload={"entity_id": facts["acme"]},
                        attempts=[{"provider": "apollo", "status": "found", "http_status": 200,
                                   "duration_ms": 300}])  # fmt: skip
            clay_a = facts["clay"][0]
            p.update_entity("company", org_a, clay_a, None, company_id=facts["companies"][0])
        finally:
            p.close()
        second = {
            ds.name: run_dataset_batch(ds, source_dsn=dsn, con=con, settings=settings)
            for ds in DATASETS
        }
        inserted = {n: r.inserted for n, r in second.items()}
        updated = {n: r.updated for n, r in second.items()}
        assert inserted == {
            "dx_operation_runs_v1": 1,
            "dx_operation_events_v1": 1,
            "dx_company_entities_v1": 1,  # the Clay company, now with its company_id
            "dx_person_entities_v1": 0,
            "dx_entity_snapshots_v1": 2,  # acme v3, Clay company v1
        }
        assert updated == {**dict.fromkeys(inserted, 0), "dx_company_entities_v1": 1}
        for r in second.values():
            assert r.extracted == r.inserted + r.updated + r.unchanged + r.stale + r.dead_lettered
        (acme,) = fetch_dicts(
            con,
            "SELECT record_version, hq_country FROM dx_company_entities_v1 WHERE entity_id = $e",
            {"e": facts["acme"]},
        )
        assert acme == {"record_version": 4, "hq_country": "DE"}
        companies = next(ds for ds in DATASETS if ds.name == "dx_company_entities_v1")
        outcome = retry_dead_letters(
            companies, source_dsn=dsn, con=con, settings=settings,
            keys=[json.dumps({"org_id": org_a, "entity_id": clay_a}, separators=(",", ":"))],
        )  # fmt: skip
        assert outcome.resolved == 1
        (retry,) = fetch_dicts(
            con,
            "SELECT extracted, unchanged, status FROM _export_batches WHERE mode = 'retry'",
        )
        assert retry == {"extracted": 1, "unchanged": 1, "status": "succeeded"}  # read by key


@pytest.mark.reliability  # starts a second PostgreSQL server
def test_source_check_on_a_standby_reports_it_and_warns_while_replay_is_paused(
    producer, pg_server, tmp_path
):
    """Reading from a replica is allowed, but what it has not replayed yet the pipeline cannot
    see: the check says it is a standby and warns while replay is paused behind the primary."""
    from data_engine_x import Producer, standby_of

    src, reader, facts = producer
    with standby_of(pg_server) as port:
        standby = src.dsn(reader) + f"&port={port}"
        superuser = pg_server.get_uri(database=src.database)
        admin_standby = psycopg.connect(
            superuser.split("?")[0] + f"?host={pg_server.get_postmaster_info().socket_dir}"
            f"&port={port}",
            autocommit=True,
        )
        try:
            code, report, text = _check(standby, tmp_path, EXPORT_SOURCE_SCHEMA="export")
            assert code == 0, text
            assert (
                report["server"]["standby"] is True and report["server"]["replay_paused"] is False
            )
            assert "primary" not in text.splitlines()[1] and "standby" in text.splitlines()[1]

            admin_standby.execute("SELECT pg_wal_replay_pause()")
            p = Producer(src.owner_dsn)
            try:
                p.operation(facts["orgs"][0], operation_id="company.enrich.profile",
                            entity_type="company", status="found", attempts=[])  # fmt: skip
            finally:
                p.close()
            for _ in range(600):  # until the standby has received what it does not replay
                ((behind,),) = admin_standby.execute(
                    "SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()"
                ).fetchall()
                if behind:
                    break
                time.sleep(0.05)
            assert behind
            code, report, text = _check(standby, tmp_path, EXPORT_SOURCE_SCHEMA="export")
            assert code == 0, text  # a warning, not a failure
            assert report["server"]["replay_paused"] is True
            assert report["server"]["replay_caught_up"] is False
            assert any(f["level"] == "warning" and "standby replay is paused" in f["message"]
                       for f in report["server"]["findings"])  # fmt: skip
            admin_standby.execute("SELECT pg_wal_replay_resume()")
        finally:
            admin_standby.close()
