"""The Dagster resource that hands the plain pipeline its settings, source and warehouse."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb

from export_pipeline.config import Settings
from export_pipeline.defs.liveness import tag_worker
from export_pipeline.warehouse import open_warehouse


class ExportResource(dg.ConfigurableResource):
    """Settings read from the environment when the run starts (never at import time)."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Tag the run with this process, so a run killed mid-way can be told from a live one."""
        tag_worker(context.instance, context.dagster_run)

    def settings(self) -> Settings:
        return Settings.from_env()

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
