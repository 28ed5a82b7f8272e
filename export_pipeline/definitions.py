"""The Dagster code location: every module of ``export_pipeline/defs/``, as Dagster's ``dg``
projects load it (``[tool.dg]`` in ``pyproject.toml``; ``dg list defs`` shows what it holds).

Each module under ``defs/`` declares its own ``defs`` (assets, checks, jobs, schedules; the
``export`` resource in ``defs/resources.py``); :func:`dagster.load_from_defs_folder` finds and
merges them. Adding a module there adds its definitions: nothing to register here.
"""

from pathlib import Path

import dagster as dg

defs = dg.Definitions.merge(
    dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
    # Every job, including the UI's ad-hoc "Materialize", runs its steps in one process, one
    # after the other: DuckDB admits a single writer process per file.
    dg.Definitions(executor=dg.in_process_executor),
)
