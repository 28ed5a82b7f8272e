"""The Dagster code location: every ``defs`` object found in ``export_pipeline/defs/*.py``.

Each module under ``defs/`` declares its own ``defs = dg.Definitions(...)`` (assets, checks, jobs,
schedules); they are merged here, as in Dagster's ``dg`` projects.
"""

import importlib
import pkgutil

import dagster as dg

from export_pipeline import defs as defs_package
from export_pipeline.defs.resources import ExportResource


def _module_defs() -> list[dg.Definitions]:
    found = []
    for info in sorted(pkgutil.iter_modules(defs_package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{defs_package.__name__}.{info.name}")
        if isinstance(getattr(module, "defs", None), dg.Definitions):
            found.append(module.defs)
    return found


defs = dg.Definitions.merge(
    *_module_defs(),
    dg.Definitions(
        resources={"export": ExportResource()},
        # Every job, including the UI's ad-hoc "Materialize", runs its steps in one process, one
        # after the other: DuckDB admits a single writer process per file.
        executor=dg.in_process_executor,
    ),
)
