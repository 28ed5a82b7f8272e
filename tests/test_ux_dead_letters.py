"""`dead-letter list` and `resolve`: what an operator triages with."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from export_pipeline.batch import run_dataset_batch
from export_pipeline.cli import main
from export_pipeline.commands.dead_letter_list import since_time
from export_pipeline.config import Settings
from export_pipeline.contract import OPERATION_RUNS
from export_pipeline.source import create_source_schema
from export_pipeline.warehouse import open_warehouse, run_sql
from tests.rows import SourceRows, ago

#: When the letters were first seen: letter i, i hours before this.
BASE = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def letters(source_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Seven invalid runs (five bad statuses, two negative attempt counts) dead-lettered, letter
    i first seen i hours before BASE; the warehouse closed again for the CLI."""
    create_source_schema(source_dsn)
    source = SourceRows(source_dsn)
    rows = [
        source.insert(OPERATION_RUNS, status="exploded", created_at=ago(hours=i + 1))
        for i in range(5)
    ]
    rows += [
        source.insert(OPERATION_RUNS, attempt_count=-1, created_at=ago(hours=i + 6))
        for i in range(2)
    ]
    source.close()
    env = {
        "EXPORT_DATA_DIR": str(tmp_path / "data"),
        "EXPORT_SAFETY_LAG_SECONDS": "0",
        "EXPORT_ENV_FILE": str(tmp_path / "no.env"),
        "EXPORT_SOURCE_DSN": source_dsn,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    with open_warehouse(settings.warehouse_path) as con:
        run_dataset_batch(OPERATION_RUNS, source_dsn=source_dsn, con=con, settings=settings)
        for i, row in enumerate(rows):
            run_sql(
                con,
                "UPDATE dx_dead_letter SET first_seen_at = $t, last_seen_at = $t + INTERVAL 1 "
                "MINUTE WHERE json_extract_string(record_key, '$.run_id') = $run_id",
                {"t": BASE - timedelta(hours=i), "run_id": str(row["run_id"])},
            )
    return rows


def _list(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, list[str]]:
    code = main(["dead-letter", "list", *args])
    return code, capsys.readouterr().out.strip().splitlines()


def _run_ids(lines: list[str]) -> list[str]:
    return [line.split("run_id=")[1] for line in lines if "run_id=" in line]


def test_listing_is_newest_first_paged_and_counts_what_is_not_shown(
    letters: list[dict], capsys: pytest.CaptureFixture
) -> None:
    """It stopped at 1,000 of 2,992 open letters without a word, oldest first: an operator must
    see the newest, know how many are left, and be able to page on."""
    code, lines = _list(capsys, "--limit", "3")
    assert code == 0
    assert _run_ids(lines) == [str(r["run_id"]) for r in letters[:3]]
    assert lines[-1] == (
        "showing 1-3 of 7 dead letters, newest first; 4 not shown: --offset 3 for more"
    )
    header = lines[0].split()
    for column in ("id", "dataset", "reason", "status", "org", "key", "cursor", "first", "last"):
        assert column in header, column
    first = lines[1]
    assert str(letters[0]["org_id"]) in first
    assert "2026-11-30 12:00" in first and "2026-11-30 12:01" in first  # first seen, last seen

    _, second = _list(capsys, "--limit", "3", "--offset", "3")
    _, page_two = _list(capsys, "--limit", "3", "--page", "2")
    assert _run_ids(second) == _run_ids(page_two) == [str(r["run_id"]) for r in letters[3:6]]
    _, last = _list(capsys, "--limit", "3", "--page", "3")
    assert _run_ids(last) == [str(letters[6]["run_id"])]
    assert last[-1] == "showing 7-7 of 7 dead letters, newest first"
    _, everything = _list(capsys, "--limit", "0")
    assert len(_run_ids(everything)) == 7


def test_listing_filters_by_reason_and_first_seen_time(
    letters: list[dict], capsys: pytest.CaptureFixture
) -> None:
    """Triage goes by kind of failure and by what is new since the last look."""
    _, invalid = _list(capsys, "--reason", "invalid_value")
    assert sorted(_run_ids(invalid)) == sorted(str(r["run_id"]) for r in letters)
    _, none = _list(capsys, "--reason", "version_conflict")
    assert _run_ids(none) == [] and none[-1].startswith("showing none of 0")
    _, recent = _list(capsys, "--since", "2026-11-30T09:30")
    assert _run_ids(recent) == [str(r["run_id"]) for r in letters[:3]]
    code = main(["dead-letter", "list", "--json", "--since", "2026-11-30T09:30+00:00"])
    assert code == 0
    listed = json.loads(capsys.readouterr().out)
    assert [json.loads(x["record_key"])["run_id"] for x in listed] == _run_ids(recent)


def test_since_accepts_dates_times_and_spans_back_from_now() -> None:
    """`--since 7d` is what people type; a date or a time is what a ticket quotes."""
    now = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
    assert since_time("7d", now) == now - timedelta(days=7)
    assert since_time("90m", now) == now - timedelta(minutes=90)
    assert since_time("2026-12-01", now) == datetime(2026, 12, 1, tzinfo=UTC)
    assert since_time("2026-12-01T08:30", now) == datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
    with pytest.raises(Exception, match="is not a time"):
        since_time("yesterday", now)


def test_resolving_a_resolved_letter_keeps_both_notes_with_their_times(
    letters: list[dict], capsys: pytest.CaptureFixture
) -> None:
    """A second decision overwrote the first one's note: the history of decisions is kept."""
    main(["dead-letter", "list", "--json", "--limit", "1"])
    [letter] = json.loads(capsys.readouterr().out)
    assert main(["dead-letter", "resolve", "--id", letter["dead_letter_id"], "--note", "one"]) == 0
    assert main(["dead-letter", "resolve", "--id", letter["dead_letter_id"], "--note", "two"]) == 0
    capsys.readouterr()
    main(["dead-letter", "list", "--json", "--status", "resolved"])
    [resolved] = json.loads(capsys.readouterr().out)
    first, second = resolved["resolution_note"].splitlines()
    stamp = r"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\] operator: "
    assert first.endswith("operator: one") and second.endswith("operator: two")
    import re

    assert re.match(stamp, first) and re.match(stamp, second)
