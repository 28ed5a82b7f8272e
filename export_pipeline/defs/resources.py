"""The Dagster resource that hands the plain pipeline its settings, source and warehouse.

Configured from the environment: :meth:`Settings.from_env` (the project's `.env` under the process
environment; every variable is in `.env.example` and the README), read once when a run's
resources are set up, so one run sees one set of settings and nothing is read at import or when
the code location loads. Not ``dg.EnvVar`` fields: those read only the process environment, and
the CLI, `make ui` and every run must read settings the same way (``config.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb
from pydantic import PrivateAttr

from export_pipeline.config import Settings
from export_pipeline.defs.liveness import tag_worker
from export_pipeline.warehouse import open_warehouse


class ExportResource(dg.ConfigurableResource):
    """Settings read from the environment when the run starts (never at import time)."""

    _settings: Settings | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Read the settings for this run, and tag the run with this process, so a run killed
        mid-way can be told from a live one."""
        self._settings = Settings.from_env()
        tag_worker(context.instance, context.dagster_run)

    def settings(self) -> Settings:
        """The run's settings (read when its resources were set up; outside a run, now)."""
        return self._settings if self._settings is not None else Settings.from_env()

    def source_dsn(self) -> str:
        settings = self.settings()
        if settings.source_dsn:
            return settings.source_session_dsn(settings.source_dsn)
        from export_pipeline.source import embedded_postgres

        return settings.source_session_dsn(embedded_postgres())

    @contextmanager
    def warehouse(self) -> Iterator[duckdb.DuckDBPyConnection]:
        settings = self.settings()
        with open_warehouse(
            settings.warehouse_path,
            lock_timeout_seconds=settings.lock_timeout_seconds,
            memory_limit=settings.duckdb_memory_limit,
        ) as con:
            yield con


defs = dg.Definitions(resources={"export": ExportResource()})
