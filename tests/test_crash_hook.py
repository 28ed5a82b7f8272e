"""The crash-injection hook the reliability tests drive: it must kill exactly where it is told."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from export_pipeline.faults import CRASH_ENV

PROBE = """
from export_pipeline.faults import crash_point
for dataset in ("runs", "events", "events"):
    crash_point("load", dataset)
    print("passed load", dataset, flush=True)
"""


def _probe(spec: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if spec is not None:
        env[CRASH_ENV] = spec
    return subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("spec", "survived"),
    [
        (None, 3),
        ("load", 0),
        ("load:events", 1),
        ("load:events@2", 2),
        ("load@3", 2),
        ("validated", 3),
    ],
)
def test_crash_point_kills_at_the_named_point_dataset_and_hit(
    spec: str | None, survived: int
) -> None:
    """A crash test is only as good as its aim: the kill lands at the named point, nowhere else."""
    done = _probe(spec)
    assert done.stdout.count("passed load") == survived, done.stdout + done.stderr
    expected = 0 if survived == 3 else -signal.SIGKILL
    assert done.returncode == expected


def test_misspelt_crash_point_is_rejected_naming_the_known_points() -> None:
    """A typo in EXPORT_CRASH_AT would silently test nothing; the CLI refuses it instead."""
    done = subprocess.run(
        [sys.executable, "-m", "export_pipeline.cli", "status"],
        env={**os.environ, CRASH_ENV: "lod"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "unknown point 'lod'" in done.stderr and "committed" in done.stderr
