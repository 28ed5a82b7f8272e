"""The Dagster resource that hands the plain pipeline its settings, source and warehouse.

Configured from the environment: :meth:`Settings.from_env` (the project's `.env` under the process
environment; every variable is in `.env.example` and the README), read once when a run's
resources are set up, so one run sees one set of settings and nothing is read at import or when
the code location loads. Not ``dg.EnvVar`` fields: those read only the process environment, and
the CLI, `make ui` and every run must read settings the same way (``config.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import dagster as dg
import duckdb
from pydantic import PrivateAttr

from export_pipeline.config import INSTANCE_SETTINGS_FILE, Settings, missing_instance_settings
from export_pipeline.defs.liveness import tag_worker
from export_pipeline.warehouse import open_warehouse


class ExportResource(dg.ConfigurableResource):
    """The pipeline's settings (every ``EXPORT_*`` variable: the project's `.env` under the
    environment), read when a run starts, never at import; its source and its warehouse."""

    _settings: Settings | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Read the settings for this run, and tag the run with this process, so a run killed
        mid-way can be told from a live one."""
        self._settings = Settings.from_env()
        if context.dagster_run is not None:
            _check_backfill_window(context.dagster_run.tags)
        tag_worker(context.instance, context.dagster_run)
        instance = context.instance
        if instance is not None and not instance.is_ephemeral and context.log is not None:
            # `dagster dev` started by hand on any DAGSTER_HOME gets here without the CLI's
            # check (config.ensure_dagster_home): the run's log in the UI says what is missing.
            missing = missing_instance_settings(instance_config(instance))
            if missing:
                context.log.warning(
                    f"this Dagster instance ({instance.root_directory}) lacks instance "
                    f"settings of this project: {'; '.join(missing)} (see {INSTANCE_SETTINGS_FILE})"
                )

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


def _check_backfill_window(tags: Mapping[str, str]) -> None:
    """A backfill run whose tags name no valid range fails here, once for the run, before any
    step starts (the steps check again: a run of another executor sets resources up per step)."""
    from export_pipeline.defs.assets import BackfillWindowError, backfill_window, is_backfill

    if is_backfill(tags):
        try:
            backfill_window(tags)
        except BackfillWindowError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None


def instance_config(instance: dg.DagsterInstance) -> dict:
    """The settings ``config.missing_instance_settings`` checks, as ``instance`` applies them
    (Dagster's defaults included), in `dagster.yaml`'s form."""
    queue = instance.get_concurrency_config().run_queue_config
    return {
        "telemetry": {"enabled": instance.telemetry_enabled},
        "nux": {"enabled": instance.nux_enabled},
        "run_queue": {"max_concurrent_runs": queue.max_concurrent_runs} if queue else {},
    }


defs = dg.Definitions(resources={"export": ExportResource()})
