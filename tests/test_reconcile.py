"""Daily reconciliation: parity that holds on equal data, catches drift, and repairs it."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Pipeline
from rows import new_id

from export_pipeline.contract import (
    COMPANY_ENTITIES,
    DATASETS,
    OPERATION_EVENTS,
    OPERATION_RUNS,
    PERSON_ENTITIES,
)
from export_pipeline.extract import Window
from export_pipeline.reconcile import (
    CheckResult,
    beta_binomial_sf,
    chi_square_sf,
    null_rate_checks,
    rate_anomaly,
    reconcile_dataset,
    status_distribution_checks,
    status_shift,
)
from export_pipeline.warehouse import fetch_dicts, run_sql

REPO = Path(__file__).resolve().parent.parent
TODAY = datetime.now(UTC).date()


def _at(day: date, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def _reconcile(pipe: Pipeline, ds, days, repair=True) -> list[CheckResult]:
    return reconcile_dataset(
        ds, days, source_dsn=pipe.src.dsn, con=pipe.con, settings=pipe.settings, repair=repair
    )


def _check(results: list[CheckResult], name: str, day: date) -> CheckResult:
    (found,) = [r for r in results if r.check == name and r.day == day and r.org_id is None]
    return found


def test_equal_data_always_matches_even_with_dead_letters_in_the_window(pipe: Pipeline):
    """False alarms teach operators to ignore the check; a clean export must reconcile."""
    day = TODAY - timedelta(days=1)
    for hour in (0, 5, 23):
        pipe.src.insert(OPERATION_RUNS, created_at=_at(day, hour))
    pipe.src.insert(OPERATION_RUNS, created_at=_at(day, 9), status="exploded")  # dead letter
    run = pipe.src.insert(OPERATION_RUNS, created_at=_at(day, 1))
    for seq in (0, 1):
        pipe.src.insert(
            OPERATION_EVENTS, run_id=run["run_id"], event_sequence=seq, occurred_at=_at(day, 2)
        )
    pipe.src.insert(  # a duplicate (run_id, event_sequence): dead-lettered as a guard violation
        OPERATION_EVENTS, run_id=run["run_id"], event_sequence=1, occurred_at=_at(day, 3)
    )
    pipe.src.insert(COMPANY_ENTITIES, updated_at=_at(day), record_version=2)
    for ds in (OPERATION_RUNS, OPERATION_EVENTS, COMPANY_ENTITIES):
        pipe.export(ds)
        assert pipe.dead_letters(ds) or ds is COMPANY_ENTITIES
        results = _reconcile(pipe, ds, [day], repair=False)
        for name in ("row_count_parity", "content_parity", "source_regressions"):
            assert _check(results, name, day).passed, (ds.name, name)


def test_row_committed_beyond_the_lookback_is_repaired_by_reconciliation(pipe: Pipeline):
    """Late commits past the lookback are why reconciliation exists: it must find and load them,
    and say what it repaired."""
    day = TODAY - timedelta(days=2)
    pipe.src.insert(OPERATION_RUNS, created_at=_at(day, 8))
    pipe.export(OPERATION_RUNS)
    late = pipe.src.insert(OPERATION_RUNS, created_at=_at(day, 14, 30))
    pipe.export(OPERATION_RUNS)  # the micro-batch's lookback does not reach two days back
    assert late["run_id"] not in {str(r["run_id"]) for r in pipe.rows(OPERATION_RUNS)}

    results = _reconcile(pipe, OPERATION_RUNS, [day])

    assert late["run_id"] in {str(r["run_id"]) for r in pipe.rows(OPERATION_RUNS)}
    rows = _check(results, "row_count_parity", day)
    assert rows.passed and rows.observed == rows.expected == 2
    parity = _check(results, "content_parity", day)
    assert parity.passed
    found = parity.details["found_before_repair"]
    assert found["missing_in_warehouse"]["count"] == 1
    assert found["missing_in_warehouse"]["examples"] == [{"key": {"run_id": late["run_id"]}}]
    repair = parity.details["repair"]
    assert (repair["inserted"], repair["attempted"], repair["repaired"]) == (1, 1, 1)
    (recorded,) = fetch_dicts(
        pipe.con,
        "SELECT passed, details FROM dx_reconciliation_results WHERE dataset = $d "
        "AND check_name = 'content_parity' AND day = $day",
        {"d": OPERATION_RUNS.name, "day": day},
    )
    assert recorded["passed"] and json.loads(recorded["details"])["repair"]["inserted"] == 1
    assert pipe.ledger(OPERATION_RUNS)[-1]["mode"] == "repair"


def test_one_changed_cursor_shows_in_content_parity_with_equal_counts(pipe: Pipeline):
    """Counts alone miss a row that changed in place; the content comparison must not, and
    must name the column."""
    day = TODAY - timedelta(days=1)
    rows = [pipe.src.insert(OPERATION_RUNS, created_at=_at(day, h)) for h in (3, 4)]
    pipe.export(OPERATION_RUNS)
    pipe.src.update(OPERATION_RUNS, {"run_id": rows[0]["run_id"]}, created_at=_at(day, 3, 1))

    results = _reconcile(pipe, OPERATION_RUNS, [day], repair=False)

    assert _check(results, "row_count_parity", day).passed
    parity = _check(results, "content_parity", day)
    assert not parity.passed and parity.observed == 1
    (example,) = parity.details["differences"]["content_differs"]["examples"]
    assert example == {"key": {"run_id": rows[0]["run_id"]}, "columns": ["created_at"]}


def test_entity_that_moved_to_a_newer_day_is_repaired_by_key(pipe: Pipeline):
    """A newer version moves an entity's cursor out of the old day; the repair re-reads it by
    key so the warehouse follows, instead of flagging the old day forever."""
    old_day, new_day = TODAY - timedelta(days=3), TODAY - timedelta(days=1)
    company = pipe.src.insert(COMPANY_ENTITIES, updated_at=_at(old_day), record_version=1)
    pipe.export(COMPANY_ENTITIES)
    key = {"org_id": company["org_id"], "entity_id": company["entity_id"]}
    pipe.src.update(COMPANY_ENTITIES, key, updated_at=_at(new_day), record_version=2)

    results = _reconcile(pipe, COMPANY_ENTITIES, [old_day, new_day])

    assert all(r.passed for r in results if r.check.endswith("parity"))
    (row,) = pipe.rows(COMPANY_ENTITIES)
    assert row["record_version"] == 2
    parity = _check(results, "content_parity", old_day)
    assert parity.details["repair"]["updated"] == 1
    assert set(parity.details["found_before_repair"]) == {"warehouse_version_behind"}


def test_dead_lettered_entity_whose_fix_moved_to_another_day_is_repaired_by_key(pipe: Pipeline):
    """Parity counts an open dead letter as the warehouse's account of its key; when the fixed
    row moved to a day not reconciled, the repair must follow it by key, as for a stored row,
    not report the letter's day failing after a repair that did nothing."""
    letter_day, fixed_day = TODAY - timedelta(days=1), TODAY - timedelta(days=3)
    company = pipe.src.insert(COMPANY_ENTITIES, updated_at=_at(letter_day), employee_count=-5)
    pipe.export(COMPANY_ENTITIES)
    assert [d["status"] for d in pipe.dead_letters(COMPANY_ENTITIES)] == ["open"]
    key = {"org_id": company["org_id"], "entity_id": company["entity_id"]}
    pipe.src.update(
        COMPANY_ENTITIES, key, employee_count=10, record_version=2, updated_at=_at(fixed_day)
    )

    results = _reconcile(pipe, COMPANY_ENTITIES, [letter_day])

    assert all(r.passed for r in results if r.check.endswith("parity"))
    (row,) = pipe.rows(COMPANY_ENTITIES)
    assert (row["record_version"], row["employee_count"]) == (2, 10)
    assert [d["status"] for d in pipe.dead_letters(COMPANY_ENTITIES)] == ["resolved"]
    assert _check(results, "content_parity", letter_day).details["repair"]["inserted"] == 1


def test_a_stale_version_conflict_letter_is_resolved_without_reporting_a_difference(
    pipe: Pipeline,
):
    """The source rewrote a version in place and then reverted it: the warehouse is right, and
    the conflict letter the micro-batch left must not stay open forever."""
    day = TODAY - timedelta(days=1)
    company = pipe.src.insert(COMPANY_ENTITIES, updated_at=_at(day, 5), canonical_name="A")
    pipe.export(COMPANY_ENTITIES)
    key = {"org_id": company["org_id"], "entity_id": company["entity_id"]}
    pipe.src.update(COMPANY_ENTITIES, key, canonical_name="B")
    pipe.export(COMPANY_ENTITIES, window=Window.days(day, day))
    assert [d["reason"] for d in pipe.dead_letters(COMPANY_ENTITIES)] == ["version_conflict"]
    pipe.src.update(COMPANY_ENTITIES, key, canonical_name="A")

    results = _reconcile(pipe, COMPANY_ENTITIES, [day])

    parity = _check(results, "content_parity", day)
    assert parity.passed and parity.details["differences"] == {}
    assert parity.details["repair"]["stale_letters_rechecked"] == 1
    assert [d["status"] for d in pipe.dead_letters(COMPANY_ENTITIES)] == ["resolved"]


def test_cli_reports_a_source_deletion_once_with_its_kind_and_key_then_acknowledges_it(
    pipe: Pipeline, tmp_path: Path
):
    """Under the default `report` policy a row deleted at the source is kept: the first run must
    say so (kind, key, exit non-zero), and the next ones must not fail again for it."""
    day = TODAY - timedelta(days=1)
    gone = pipe.src.insert(OPERATION_RUNS, created_at=_at(day, 6))
    pipe.src.insert(OPERATION_RUNS, created_at=_at(day, 7))
    for ds in DATASETS:  # the lag checks want a recent successful batch of each
        pipe.export(ds)
    pipe.src.execute("DELETE FROM ops.operation_runs WHERE run_id = %s", (gone["run_id"],))
    pipe.con.close()
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        **os.environ,
        "EXPORT_SOURCE_DSN": pipe.src.dsn,
        "EXPORT_DATA_DIR": str(pipe.settings.data_dir),
        "DAGSTER_HOME": str(home),
    }

    def reconcile(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "export_pipeline.cli", "reconcile", "--date", day.isoformat(),
             *args],
            env=env, capture_output=True, text=True, cwd=REPO, timeout=300,
        )  # fmt: skip

    first = reconcile()
    assert first.returncode != 0
    assert "FAILED" in first.stdout and "deleted_at_source first seen" in first.stdout
    assert gone["run_id"] in first.stdout and "still fail" in first.stderr
    second = reconcile("--json")
    assert second.returncode == 0, second.stderr[-2000:]
    report = json.loads(second.stdout)
    by_check = {(r["dataset"], r["check_name"]): r for r in report["results"]}
    regressions = by_check[(OPERATION_RUNS.name, "source_regressions")]
    assert regressions["passed"] and regressions["details"]["acknowledged"] == 1
    rows = by_check[(OPERATION_RUNS.name, "row_count_parity")]
    assert (rows["observed"], rows["expected"]) == (2, 1)  # whole numbers, explained
    assert rows["details"]["explained_by"] == {"deleted_at_source": 1}


def test_null_rate_above_threshold_is_flagged(pipe: Pipeline):
    """Enrichment quietly losing domains or names is a data-quality incident."""
    day = TODAY - timedelta(days=1)
    for i in range(10):
        pipe.src.insert(
            COMPANY_ENTITIES, updated_at=_at(day), canonical_domain=None if i < 3 else "x.io"
        )
    for i in range(10):
        names = {"full_name": None, "first_name": None} if i < 1 else {}
        pipe.src.insert(PERSON_ENTITIES, updated_at=_at(day), **names)
    for ds in (COMPANY_ENTITIES, PERSON_ENTITIES):
        pipe.export(ds)
    settings = replace(pipe.settings, null_rate_threshold=0.2)
    company = null_rate_checks(COMPANY_ENTITIES, pipe.con, [day], settings.null_rate_threshold)
    by_field = {r.details["field"]: r for r in company}
    assert not by_field["canonical_domain"].passed
    assert by_field["canonical_domain"].observed == pytest.approx(0.3)
    assert by_field["canonical_name"].passed
    (person,) = null_rate_checks(PERSON_ENTITIES, pipe.con, [day], settings.null_rate_threshold)
    assert person.passed and person.observed == pytest.approx(0.1)


def test_chi_square_tail_matches_known_critical_values():
    """The anomaly test's p-values must be right for the test to be sound."""
    assert chi_square_sf(3.841, 1) == pytest.approx(0.05, abs=1e-3)
    assert chi_square_sf(5.991, 2) == pytest.approx(0.05, abs=1e-3)
    assert chi_square_sf(7.815, 3) == pytest.approx(0.05, abs=1e-3)
    assert chi_square_sf(16.266, 3) == pytest.approx(0.001, abs=1e-4)
    assert chi_square_sf(0, 3) == 1.0


def _insert_statuses(pipe: Pipeline, day: date, org: str, statuses: list[str]) -> None:
    """Runs of one org and day straight into the warehouse, one statement (status tests)."""
    run_sql(
        pipe.con,
        f"INSERT INTO {OPERATION_RUNS.name} (export_schema_version, run_id, operation_id, "
        "action_id, entity_type, entity_id, org_id, status, attempt_count, started_at, "
        "created_at, _batch_id, _loaded_at) "
        "SELECT 'v1', uuid(), 'op', 'act', 'company', uuid(), $org, status, 1, $at, $at, 'b', "
        "now() FROM (SELECT unnest($statuses) AS status)",
        {"org": org, "at": _at(day), "statuses": statuses},
    )


def _insert_runs(pipe: Pipeline, day: date, mix: dict[str, float], n: int, rng, org: str) -> None:
    _insert_statuses(pipe, day, org, rng.choices(list(mix), weights=list(mix.values()), k=n))


NORMAL_MIX = {"succeeded": 0.85, "failed": 0.08, "skipped": 0.05, "canceled": 0.02}


def test_status_shift_is_flagged_and_a_normal_day_is_not(pipe: Pipeline):
    """Operators must hear about a provider outage (failures jump) but not about noise."""
    rng = random.Random(7)
    org = new_id()
    judged_normal, judged_shifted = TODAY - timedelta(days=2), TODAY - timedelta(days=1)
    for back in range(3, 10):
        _insert_runs(pipe, TODAY - timedelta(days=back), NORMAL_MIX, 600, rng, org)
    _insert_runs(pipe, judged_normal, NORMAL_MIX, 600, rng, org)
    shifted = {"succeeded": 0.60, "failed": 0.33, "skipped": 0.05, "canceled": 0.02}
    _insert_runs(pipe, judged_shifted, shifted, 600, rng, org)

    results = status_distribution_checks(pipe.con, [judged_normal, judged_shifted])

    overall = {r.day: r for r in results if r.org_id is None}
    per_org = {r.day: r for r in results if r.org_id == org}
    assert overall[judged_normal].passed and per_org[judged_normal].passed
    assert not overall[judged_shifted].passed and not per_org[judged_shifted].passed
    assert overall[judged_shifted].details["max_shift"] > 0.2


def test_small_samples_are_not_judged():
    """Ten runs with three failures is not evidence of anything; it must not alarm."""
    shift = status_shift({"succeeded": 7, "failed": 3}, {"succeeded": 850, "failed": 80})
    assert shift["n"] == 10
    # status_distribution_checks only judges days with STATUS_MIN_SAMPLE runs; the test itself
    # would call this significant, which is exactly why the minimum sample exists.
    assert shift["p_value"] < 0.05


def test_reconciliation_records_every_check_for_every_day(pipe: Pipeline):
    """The results table is the audit trail; each check of each day must land there."""
    days = [TODAY - timedelta(days=d) for d in (2, 1)]
    for ds in DATASETS:
        pipe.export(ds)
        _reconcile(pipe, ds, days)
    rows = run_sql(
        pipe.con,
        "SELECT dataset, check_name, count(*) FROM dx_reconciliation_results GROUP BY ALL",
    )
    counts = {(d, c): n for d, c, n in rows}
    for ds in DATASETS:
        assert counts[(ds.name, "row_count_parity")] == 2
        assert counts[(ds.name, "content_parity")] == 2
        assert counts[(ds.name, "source_regressions")] == 2
        assert counts[(ds.name, "max_lag_sla")] == 1
    assert counts[(COMPANY_ENTITIES.name, "null_rate")] == 4
    assert counts[(OPERATION_RUNS.name, "status_distribution")] == 2


def test_beta_binomial_tail_matches_the_binomial_when_the_baseline_is_certain():
    """With a huge baseline the predictive tail must approach the plain binomial tail."""
    # P(X >= 8 | n=40, p=0.1) = 0.0419 (binomial); a baseline of 10^6 at 10% is near-certain.
    assert beta_binomial_sf(8, 40, 100_000.5, 900_000.5) == pytest.approx(0.0419, abs=2e-3)
    assert beta_binomial_sf(0, 40, 1, 1) == 1.0
    # Uniform prior: every count 0..n equally likely, so P(X >= 30 | n=39) = 10/40.
    assert beta_binomial_sf(30, 39, 1, 1) == pytest.approx(0.25)


def test_small_tenant_failure_jump_fires_and_ordinary_noise_does_not():
    """A 40-run tenant going from 10% to 70% failed is an outage the operator must hear about;
    the same tenant at 17% (7 of 40, plain noise) is not."""
    baseline = (28, 280)  # 7 days x 40 runs, 10% failed
    outage = rate_anomaly(28, 40, *baseline)
    assert outage["anomalous"] and outage["p_value"] < 1e-9
    noise = rate_anomaly(7, 40, *baseline)
    assert not noise["anomalous"] and noise["p_value"] > 0.01
    tiny = rate_anomaly(3, 4, 1, 30)  # four runs: not judged
    assert not tiny["judged"] and not tiny["anomalous"]


def _insert_tenant_runs(pipe: Pipeline, day: date, org: str, failed: int, total: int) -> None:
    _insert_statuses(pipe, day, org, ["failed"] * failed + ["succeeded"] * (total - failed))


def test_status_mix_is_judged_per_tenant_against_its_own_baseline(pipe: Pipeline):
    """The old rule needed 200 runs a day, so a small tenant's outage was never seen; now each
    organisation is judged against its own history, deterministically."""
    judged = TODAY - timedelta(days=1)
    small_outage, small_calm, big = new_id(), new_id(), new_id()
    for back in range(2, 9):
        day = TODAY - timedelta(days=back)
        _insert_tenant_runs(pipe, day, small_outage, 4, 40)
        _insert_tenant_runs(pipe, day, small_calm, 4, 40)
        _insert_tenant_runs(pipe, day, big, 50, 1000)
    _insert_tenant_runs(pipe, judged, small_outage, 28, 40)
    _insert_tenant_runs(pipe, judged, small_calm, 7, 40)
    _insert_tenant_runs(pipe, judged, big, 52, 1000)

    results = status_distribution_checks(pipe.con, [judged])

    by_org = {r.org_id: r for r in results}
    assert not by_org[small_outage].passed
    assert by_org[small_outage].details["statuses_risen"] == ["failed"]
    assert by_org[small_calm].passed and by_org[big].passed
    # all orgs together the small outage drowns (8% against 5%): why each tenant is judged alone
    assert by_org[None].passed


def test_reconciliation_checks_keep_their_result_after_the_next_micro_batch(
    pipe: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Checks on the dataset assets went back to "not evaluated" after every micro-batch (the
    UI shows a check against its asset's latest materialization); on the reconciliation asset,
    which only the reconcile job materializes, the last result stays, with its reasons."""
    import dagster as dg

    from export_pipeline.definitions import defs
    from export_pipeline.defs.operations import reconciliation_key

    day = TODAY - timedelta(days=1)
    pipe.src.insert(OPERATION_RUNS, created_at=_at(day, 6))
    pipe.con.close()
    monkeypatch.setenv("EXPORT_SOURCE_DSN", pipe.src.dsn)
    monkeypatch.setenv("EXPORT_DATA_DIR", str(pipe.settings.data_dir))
    with dg.instance_for_test() as instance:
        reconciled = defs.resolve_job_def("reconcile_job").execute_in_process(
            instance=instance, raise_on_error=False
        )
        microbatch = defs.resolve_job_def("export_microbatch_job").execute_in_process(
            instance=instance, raise_on_error=False
        )
        assert microbatch.success
        key = reconciliation_key(OPERATION_RUNS)
        latest = instance.get_latest_materialization_event(key)
        assert latest is not None and latest.run_id == reconciled.run_id
        evaluations = {
            e.check_name: e for e in reconciled.get_asset_check_evaluations() if e.asset_key == key
        }
    content = evaluations["content_matches_source"]
    # the micro-batch had not run yet: the run was missing, repaired, and the check says so
    assert content.passed and content.metadata["keys_repaired"].value == 1
    assert evaluations["rows_match_source"].passed


def test_a_tenants_null_rate_jump_is_flagged_against_its_own_baseline(pipe: Pipeline):
    """One small tenant losing its domains drowns in the overall rate; judged against its own
    history it must show."""
    judged = TODAY - timedelta(days=1)
    small, big = new_id(), new_id()

    def companies(day: date, org: str, missing: int, total: int) -> None:
        run_sql(
            pipe.con,
            f"INSERT INTO {COMPANY_ENTITIES.name} (export_schema_version, org_id, company_id, "
            "entity_id, canonical_name, canonical_domain, record_version, updated_at, _batch_id, "
            "_loaded_at) SELECT 'v1', $org, uuid(), uuid(), 'n', "
            "CASE WHEN i < $missing THEN NULL ELSE 'x.io' END, 1, $at, 'b', now() "
            "FROM range($total) AS r(i)",
            {"org": org, "missing": missing, "total": total, "at": _at(day)},
        )

    for back in range(2, 9):
        companies(TODAY - timedelta(days=back), small, 1, 20)
        companies(TODAY - timedelta(days=back), big, 20, 1000)
    companies(judged, small, 12, 20)
    companies(judged, big, 21, 1000)

    results = null_rate_checks(COMPANY_ENTITIES, pipe.con, [judged], threshold=0.2)

    domain = {r.org_id: r for r in results if r.details["field"] == "canonical_domain"}
    assert domain[None].passed  # 33 of 1020 overall: under the threshold
    assert not domain[small].passed and domain[small].details["hits"] == 12
    assert domain[big].passed
