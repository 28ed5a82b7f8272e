"""The Dagster UI in a real browser (Debian's chromium through Playwright): what an operator sees
after a demo-sized export is what the warehouse holds, screenshots included."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from export_pipeline.contract import DATASETS, OPERATION_RUNS
from export_pipeline.defs.assets import (
    BACKFILL_END_TAG,
    BACKFILL_START_TAG,
    MODE_TAG,
    NO_ROWS_DEAD_LETTERED,
)
from export_pipeline.launcher import run_microbatch
from export_pipeline.source import create_source_schema, seed_source
from tests.test_ui import webserver_on

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
LOCATION = "export_pipeline.definitions"
JOB = "export_microbatch_job"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium: `apt-get install -y chromium` as root "
    "(never `playwright install`)",
)


@pytest.fixture
def webserver(
    source_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[int, list[str]]]:
    """Two CLI micro-batches over a tiny source with planted violations (so one check fails), then
    `dagster-webserver` on a free loopback port over the same DAGSTER_HOME, killed as a group."""

    create_source_schema(source_dsn)
    seed_source(source_dsn, scale=0.001, days=2, violations=True)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {
        "DAGSTER_HOME": str(home),
        "EXPORT_SOURCE_DSN": source_dsn,
        "EXPORT_DATA_DIR": str(tmp_path / "data"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    run_ids = []
    for _ in range(2):  # `export-pipeline run` twice: a series of materializations, not a dot
        ok, run_id, _ledger = run_microbatch()
        assert ok
        run_ids.append(run_id)

    with webserver_on(env) as port:
        yield port, run_ids


def test_browser_shows_lineage_an_assets_plots_and_its_failing_dead_letter_check(
    webserver: tuple[int, list[str]], tmp_path: Path
):
    """The UI is where an operator looks first: the lineage must name every dataset, an asset's
    page must show no "missing" partitions and its plots a series of its batches' metadata, the
    dead-letter check must show as failing, the backfill job must say how to launch it, and the
    runs the CLI started must be on the job's page and the Overview timeline."""
    from playwright.sync_api import expect, sync_playwright

    port, run_ids = webserver
    base = f"http://127.0.0.1:{port}"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    asset = OPERATION_RUNS.name
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)  # the first page load compiles the asset graph

            # Lineage: the warehouse group, each dataset between its source and its lake table.
            page.goto(f"{base}/locations/{LOCATION}/asset-groups/warehouse")
            for ds in DATASETS:
                expect(page.get_by_text(ds.name).first).to_be_visible()
            page.screenshot(path=str(shots / "lineage.png"), full_page=True)
            lineage = page.inner_text("body")

            # The asset's page: its latest materialization and history; no day partitions to
            # report as "missing" (the warehouse assets are not partitioned).
            page.goto(f"{base}/assets/{asset}?view=overview")
            expect(page.get_by_text("Latest materialization").first).to_be_visible()
            expect(page.get_by_text("Asset history").first).to_be_visible()
            page.screenshot(path=str(shots / "asset.png"), full_page=True)
            overview = page.inner_text("body")

            # Its plots: one point per micro-batch, a series over time, with no switch to a
            # per-partition view (which drew one dot per partition).
            page.get_by_role("button", name="Plots").click()
            for field in ("inserted", "dead_lettered", "lag_seconds", "duration_ms"):
                expect(page.get_by_text(field, exact=True).first).to_be_visible()
            expect(page.get_by_role("button", name="Partitions")).to_have_count(0)
            page.screenshot(path=str(shots / "plots.png"), full_page=True)
            plots = page.inner_text("body")

            # The failing check, with the letters it counts.
            page.goto(f"{base}/assets/{asset}?view=checks")
            page.get_by_text(NO_ROWS_DEAD_LETTERED, exact=True).first.click()
            expect(page.get_by_text("unresolved", exact=True).first).to_be_visible()
            page.screenshot(path=str(shots / "check.png"), full_page=True)
            check = page.inner_text("body")

            # Runs the CLI started, on the job's page as the schedule's would be.
            page.goto(f"{base}/locations/{LOCATION}/jobs/{JOB}/runs")
            expect(page.get_by_text(run_ids[-1][:8]).first).to_be_visible()
            page.screenshot(path=str(shots / "job_runs.png"), full_page=True)

            # The Overview timeline: the CLI's runs in the job's row, as the schedule's would be
            # (a run without the code location's origin is left out of it).
            page.goto(f"{base}/overview/activity/timeline")
            expect(page.get_by_text(JOB, exact=True).first).to_be_visible()
            page.screenshot(path=str(shots / "timeline.png"), full_page=True)
            timeline = page.inner_text("body")

            # How to backfill from the UI: the backfill job's page says which tags to set, and
            # its Launchpad has them to edit.
            page.goto(f"{base}/locations/{LOCATION}/jobs/export_backfill_job")
            expect(page.get_by_text(BACKFILL_START_TAG, exact=False).first).to_be_visible()
            backfill_job = page.inner_text("body")
            page.goto(f"{base}/locations/{LOCATION}/jobs/export_backfill_job/playground")
            expect(page.get_by_role("button", name="Edit tags")).to_be_visible()
            expect(page.get_by_text(f"{MODE_TAG}: backfill").first).to_be_visible()
            page.screenshot(path=str(shots / "backfill_launchpad.png"), full_page=True)
        finally:
            browser.close()
    assert all(ds.name in lineage for ds in DATASETS)
    # The project's dagster.yaml turns off the first-visit newsletter dialog.
    assert not any("Join the Dagster community" in text for text in (lineage, plots, check))
    for text in (overview, plots):
        assert "missing" not in text.lower() and "partition" not in text.lower()
    assert "inserted" in plots  # the plots are canvas; their titles are the metadata keys
    assert f"{BACKFILL_START_TAG}=YYYY-MM-DD" in backfill_job
    assert f"{BACKFILL_END_TAG}=YYYY-MM-DD" in backfill_job
    listing = check[check.index(NO_ROWS_DEAD_LETTERED) :]
    assert listing.split("\n")[1:3][-1] == "Failed", listing[:300]
    assert "reason_" in check and "Failed" in check
    assert JOB in timeline
    shots_taken = ("lineage.png", "asset.png", "plots.png", "check.png", "job_runs.png")
    for name in (*shots_taken, "timeline.png", "backfill_launchpad.png"):
        assert (shots / name).stat().st_size > 10_000, name
