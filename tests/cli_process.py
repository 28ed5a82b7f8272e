"""`export-pipeline` in a fresh process, as a user, cron or a monitor runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: Two ways to start the CLI: the installed console script and ``python -m``.
ENTRY_POINTS = {
    "console_script": [str(Path(sys.executable).parent / "export-pipeline")],
    "python_m": [sys.executable, "-m", "export_pipeline.cli"],
}


def run_cli(
    *args: str,
    env: dict[str, str],
    entry: str = "console_script",
    cwd: Path = REPO,
    stdin: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """The command with ``env`` added to this process's environment, its output captured."""
    return subprocess.run(
        [*ENTRY_POINTS[entry], *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )
