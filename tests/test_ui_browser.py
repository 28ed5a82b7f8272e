"""The Dagster UI in a real browser (Debian's chromium through Playwright): what an operator sees
after a demo-sized export is what the warehouse holds, screenshots included."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from export_pipeline.contract import DATASETS, OPERATION_RUNS
from export_pipeline.defs.assets import NO_ROWS_DEAD_LETTERED
from export_pipeline.launcher import run_microbatch
from export_pipeline.source import create_source_schema, seed_source
from tests.test_ui import _free_port, _graphql, _wait

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
LOCATION = "export_pipeline.definitions"

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

    port = _free_port()
    webserver_bin = Path(sys.executable).parent / "dagster-webserver"
    process = subprocess.Popen(
        [str(webserver_bin), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait(
            lambda: _graphql(port, "{ assetNodes { id } }")["assetNodes"],
            timeout=180,
            what="the Dagster webserver to load the code location",
        )
        yield port, run_ids
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_browser_shows_lineage_an_assets_plots_and_its_failing_dead_letter_check(
    webserver: tuple[int, list[str]], tmp_path: Path
):
    """The UI is where an operator looks first: the lineage must name every dataset, an asset's
    plots must show its batch metadata, and the dead-letter check must show as failing."""
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

            # An asset's plots, over events (time), not one dot per partition.
            page.goto(f"{base}/assets/{asset}?view=overview")
            page.get_by_role("button", name="Plots").click()
            page.get_by_role("button", name="Events").click()
            for field in ("inserted", "dead_lettered", "lag_seconds", "duration_ms"):
                expect(page.get_by_text(field, exact=True).first).to_be_visible()
            page.screenshot(path=str(shots / "plots.png"), full_page=True)
            plots = page.inner_text("body")

            # The failing check, with the letters it counts.
            page.goto(f"{base}/assets/{asset}?view=checks")
            page.get_by_text(NO_ROWS_DEAD_LETTERED, exact=True).first.click()
            expect(page.get_by_text("unresolved", exact=True).first).to_be_visible()
            page.screenshot(path=str(shots / "check.png"), full_page=True)
            check = page.inner_text("body")

            # Runs the CLI started, on the job's page as the schedule's would be.
            page.goto(f"{base}/locations/{LOCATION}/jobs/export_microbatch_job/runs")
            expect(page.get_by_text(run_ids[-1][:8]).first).to_be_visible()
            page.screenshot(path=str(shots / "job_runs.png"), full_page=True)
        finally:
            browser.close()
    assert all(ds.name in lineage for ds in DATASETS)
    # The project's dagster.yaml turns off the first-visit newsletter dialog.
    assert not any("Join the Dagster community" in text for text in (lineage, plots, check))
    assert "inserted" in plots  # the plots are canvas; their titles are the metadata keys
    listing = check[check.index(NO_ROWS_DEAD_LETTERED) :]
    assert listing.split("\n")[1:3][-1] == "Failed", listing[:300]
    assert "reason_" in check and "Failed" in check
    for name in ("lineage.png", "plots.png", "check.png", "job_runs.png"):
        assert (shots / name).stat().st_size > 10_000, name
