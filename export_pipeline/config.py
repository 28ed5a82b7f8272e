"""Settings, read from the environment once, when the pipeline starts.

Every variable is listed in `.env.example` and the README. A bad value fails at start with a
one-line :class:`ConfigError` that names the variable.

One way to read them, for the CLI, `make ui` and every Dagster run alike: the project's `.env`
file (``PROJECT_ROOT/.env``, or ``EXPORT_ENV_FILE``), overridden by the process environment
(:func:`environment`), read when settings or resources are built, never at import. Paths
(``EXPORT_DATA_DIR``, ``DAGSTER_HOME``) default to directories of the project and a relative
value is taken relative to the project root, so every command gives the same answer from any
working directory.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Micro-batch schedule period bounds (the contract's cadence), and the reconcile default cron.
MICROBATCH_MINUTES_RANGE = (5, 15)
DEFAULT_RECONCILE_CRON = "0 3 * * *"
DEFAULT_LAKE_MAINTENANCE_CRON = "30 3 * * *"


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    #: Source PostgreSQL URL; None means "use the embedded PostgreSQL".
    source_dsn: str | None
    data_dir: Path
    lookback: timedelta
    safety_lag: timedelta
    batch_size: int
    #: Transient errors (connection lost, timeouts, lock contention) retried within a run.
    transient_retries: int = 3
    transient_backoff_seconds: float = 2.0
    #: Waiting for another writer's DuckDB lock before giving up (overlapping runs).
    lock_timeout_seconds: float = 300.0
    #: Reconciliation.
    reconcile_days: int = 3
    lag_sla_seconds: float = 1800.0
    null_rate_threshold: float = 0.10
    #: Rows deleted at the source: ``report`` (keep, report once) or ``propagate`` (delete).
    reconcile_deletes: str = "report"
    #: Dead-letter retries: first retry after the base delay, doubling, until max attempts.
    dead_letter_retry_base_seconds: float = 300.0
    dead_letter_max_attempts: int = 5
    #: DuckDB's buffer pool for the pipeline's writes; beyond it, DuckDB spills to disk.
    duckdb_memory_limit: str = "600MB"
    #: Schema holding one contract-shaped relation per dataset (``<schema>.<dataset name>``);
    #: None reads the reference tables (see ``relations.py``).
    source_schema: str | None = None
    #: Per-dataset relation overrides, ``(dataset name, "schema.relation")``, contract-shaped.
    source_relations: tuple[tuple[str, str], ...] = ()
    #: Schedules: the micro-batch period (5-15 minutes) and the reconciliation's cron (UTC).
    microbatch_minutes: int = 10
    reconcile_cron: str = DEFAULT_RECONCILE_CRON
    #: Our own limits on every source session (source_session.SessionLimits; 0 = none).
    source_connect_timeout_seconds: float = 10.0
    source_statement_timeout_seconds: float = 3600.0
    source_lock_timeout_seconds: float = 30.0
    #: Root of the lake's Delta tables (EXPORT_LAKE_URI); None means ``<data_dir>/lake``.
    lake_location: str | None = None
    #: Vacuum keeps files a version younger than this still needs (EXPORT_LAKE_RETENTION_HOURS).
    lake_retention_hours: int = 168
    #: When the lake's compaction and vacuum run (EXPORT_LAKE_MAINTENANCE_CRON, UTC).
    lake_maintenance_cron: str = DEFAULT_LAKE_MAINTENANCE_CRON

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def lake_uri(self) -> str:
        """A local directory or an ``s3://bucket/prefix`` URI; one Delta table per dataset."""
        return self.lake_location or str(self.data_dir / "lake")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``env``; by default the project's `.env` under the process environment."""
        env = environment() if env is None else env
        dsn = env.get("EXPORT_SOURCE_DSN") or None
        if dsn is not None:
            _check_dsn(dsn)
        data_dir = project_path(env.get("EXPORT_DATA_DIR"), "data")
        return cls(
            source_dsn=dsn,
            data_dir=data_dir,
            lookback=timedelta(minutes=_number(env, "EXPORT_LOOKBACK_MINUTES", 15.0)),
            safety_lag=timedelta(seconds=_number(env, "EXPORT_SAFETY_LAG_SECONDS", 60.0)),
            batch_size=int(_number(env, "EXPORT_BATCH_SIZE", 100_000, minimum=1, integer=True)),
            transient_retries=int(_number(env, "EXPORT_TRANSIENT_RETRIES", 3, integer=True)),
            transient_backoff_seconds=_number(env, "EXPORT_TRANSIENT_BACKOFF_SECONDS", 2.0),
            lock_timeout_seconds=_number(env, "EXPORT_LOCK_TIMEOUT_SECONDS", 300.0),
            reconcile_days=int(_number(env, "EXPORT_RECONCILE_DAYS", 3, minimum=1, integer=True)),
            lag_sla_seconds=60 * _number(env, "EXPORT_LAG_SLA_MINUTES", 30.0, minimum=1),
            null_rate_threshold=_fraction(env, "EXPORT_NULL_RATE_THRESHOLD", 0.10),
            reconcile_deletes=_choice(env, "EXPORT_RECONCILE_DELETES", ("report", "propagate")),
            dead_letter_retry_base_seconds=_number(env, "EXPORT_DEAD_LETTER_RETRY_SECONDS", 300.0),
            dead_letter_max_attempts=int(
                _number(env, "EXPORT_DEAD_LETTER_MAX_ATTEMPTS", 5, minimum=1, integer=True)
            ),
            duckdb_memory_limit=_memory(env, "EXPORT_DUCKDB_MEMORY_LIMIT", "600MB"),
            source_schema=_source_schema(env),
            source_relations=_source_relations(env),
            microbatch_minutes=_microbatch_minutes(env),
            reconcile_cron=_cron(env, "EXPORT_RECONCILE_CRON", DEFAULT_RECONCILE_CRON),
            source_connect_timeout_seconds=_number(
                env, "EXPORT_SOURCE_CONNECT_TIMEOUT_SECONDS", 10.0, minimum=1
            ),
            source_statement_timeout_seconds=_number(
                env, "EXPORT_SOURCE_STATEMENT_TIMEOUT_SECONDS", 3600.0
            ),
            source_lock_timeout_seconds=_number(env, "EXPORT_SOURCE_LOCK_TIMEOUT_SECONDS", 30.0),
            lake_location=_lake_uri(env),
            lake_retention_hours=int(
                _number(env, "EXPORT_LAKE_RETENTION_HOURS", 168, minimum=1, integer=True)
            ),
            lake_maintenance_cron=_cron(
                env, "EXPORT_LAKE_MAINTENANCE_CRON", DEFAULT_LAKE_MAINTENANCE_CRON
            ),
        )

    def source_session_dsn(self, dsn: str) -> str:
        """``dsn`` with these settings' session limits, read-only options and name."""
        from export_pipeline.source_session import SessionLimits, session_uri

        return session_uri(
            dsn,
            SessionLimits(
                connect_timeout_seconds=self.source_connect_timeout_seconds,
                statement_timeout_seconds=self.source_statement_timeout_seconds,
                lock_timeout_seconds=self.source_lock_timeout_seconds,
            ),
        )


def env_file(env: Mapping[str, str] | None = None) -> Path:
    """The `.env` file read under the environment: ``EXPORT_ENV_FILE``, else the project's."""
    configured = (os.environ if env is None else env).get("EXPORT_ENV_FILE")
    return project_path(configured, ".env") if configured else PROJECT_ROOT / ".env"


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a `.env` file (dotenv syntax: quotes, comments, ``export``)."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def environment() -> dict[str, str]:
    """The settings' source: the project's `.env`, overridden by the process environment."""
    return {**read_env_file(env_file()), **os.environ}


def project_path(raw: str | None, default: str) -> Path:
    """``raw`` (else ``default``) as an absolute path; a relative one is under the project root."""
    path = Path(raw or default).expanduser()
    return (path if path.is_absolute() else PROJECT_ROOT / path).resolve()


def dagster_home(env: Mapping[str, str] | None = None) -> Path:
    """DAGSTER_HOME, absolute: as configured (relative to the project root), else the project's
    ``dagster_home/``."""
    env = environment() if env is None else env
    return project_path(env.get("DAGSTER_HOME"), "dagster_home")


#: The project's Dagster instance settings (no telemetry, no first-visit dialog, one run at a
#: time), in `dagster.yaml`'s form: what every DAGSTER_HOME should get.
INSTANCE_SETTINGS_FILE = PROJECT_ROOT / "dagster.yaml"

#: DAGSTER_HOMEs already warned about, so a command warns once.
_warned_homes: set[Path] = set()


def instance_settings() -> dict[str, Any]:
    """The project's instance settings as dotted names: ``{"telemetry.enabled": False, ...}``
    (none when the project's file is absent: not run from a checkout)."""
    import yaml

    if not INSTANCE_SETTINGS_FILE.is_file():
        return {}
    return _flatten(yaml.safe_load(INSTANCE_SETTINGS_FILE.read_text(encoding="utf-8")) or {})


def missing_instance_settings(config: Mapping[str, Any]) -> list[str]:
    """The project's instance settings a `dagster.yaml`'s content (parsed) does not give, as
    ``name: value`` (``name: value (yours: other)`` when it sets another value).

    The run queue's limit may also be set as Dagster's ``concurrency.runs`` or, the older way, in
    a ``QueuedRunCoordinator``'s ``run_coordinator.config``."""
    given = _flatten(config)
    for alias in ("concurrency.runs.", "run_coordinator.config."):
        for name, value in list(given.items()):
            if name.startswith(alias):
                given.setdefault("run_queue." + name.removeprefix(alias), value)
    missing = []
    for name, wanted in instance_settings().items():
        shown = f"{name}: {_yaml_scalar(wanted)}"
        if name not in given:
            missing.append(shown)
        elif given[name] != wanted:
            missing.append(f"{shown} (yours: {_yaml_scalar(given[name])})")
    return missing


def ensure_dagster_home(env: Mapping[str, str] | None = None) -> Path:
    """:func:`dagster_home`, created, with the project's instance settings (one run at a time, no
    telemetry, no newsletter dialog), so every instance behaves the same.

    A DAGSTER_HOME without a ``dagster.yaml`` gets a copy of the project's (``dagster.yaml`` at
    the project root). One with its own is never changed: when it lacks a setting, one warning on
    stderr names what is missing and where to copy it from."""
    home = dagster_home(env)
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not INSTANCE_SETTINGS_FILE.is_file():  # not run from a checkout of the project
        return home
    if not target.exists():
        copied = f"# Copied from {INSTANCE_SETTINGS_FILE} for this DAGSTER_HOME.\n"
        _write_new(target, copied.encode() + INSTANCE_SETTINGS_FILE.read_bytes())
    elif home not in _warned_homes and not _same_file(target, INSTANCE_SETTINGS_FILE):
        warning = instance_settings_warning(target)
        if warning:
            _warned_homes.add(home)
            print(warning, file=sys.stderr)
    return home


def instance_settings_warning(config_file: Path) -> str | None:
    """One line naming the project's instance settings ``config_file`` lacks; None if none."""
    import yaml

    try:
        config = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        return f"warning: cannot read {config_file} ({type(exc).__name__}); Dagster will say why"
    missing = missing_instance_settings(config if isinstance(config, dict) else {})
    if not missing:
        return None
    listed = "; ".join(missing)
    return (
        f"warning: {config_file} lacks instance settings of this project: {listed}. "
        f"It is used as it is (never overwritten); add them from {INSTANCE_SETTINGS_FILE}"
    )


def _write_new(path: Path, content: bytes) -> None:
    """``path`` with ``content``, complete or not at all, unless it already exists (two commands
    starting at once on a new DAGSTER_HOME, or a file the user just wrote: never overwritten)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(content)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _yaml_scalar(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _microbatch_minutes(env: Mapping[str, str]) -> int:
    raw = env.get("EXPORT_MICROBATCH_MINUTES") or "10"
    low, high = MICROBATCH_MINUTES_RANGE
    if not raw.strip().isdigit() or not low <= int(raw) <= high:
        raise ConfigError(
            f"EXPORT_MICROBATCH_MINUTES={raw!r} must be a whole number from {low} to {high}"
        )
    return int(raw)


def _cron(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name) or default
    value = " ".join(raw.split())
    if value == default:
        return value
    # Dagster's own test of a schedule's cron (5 fields, no seconds, no 30 February).
    from dagster._utils.schedules import is_valid_cron_string

    if not is_valid_cron_string(value):
        raise ConfigError(
            f"{name}={raw!r} is not a cron schedule of 5 fields (minute hour day month weekday), "
            "e.g. '0 3 * * *'"
        )
    return value


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    minimum: float = 0,
    integer: bool = False,
) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name}={raw!r} is not {kind}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} must be a finite number")
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be >= {minimum:g}")
    return value


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    raw = (env.get(name) or allowed[0]).strip().lower()
    if raw not in allowed:
        raise ConfigError(f"{name}={raw!r} must be one of: {', '.join(allowed)}")
    return raw


_MEMORY = re.compile(r"^\s*(\d+(\.\d+)?)\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)


def _memory(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name) or default
    match = _MEMORY.match(raw)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"{name}={raw!r} is not a memory size such as 512MB or 2GB")
    return f"{match.group(1)}{match.group(3)}"


def _fraction(env: Mapping[str, str], name: str, default: float) -> float:
    value = _number(env, name, default)
    if value > 1:
        raise ConfigError(f"{name}={env.get(name)!r} must be a fraction between 0 and 1")
    return value


#: A PostgreSQL identifier as the settings accept it: no dot, no quote, no control character.
_IDENTIFIER = re.compile(r"^[^.\"\x00-\x1f]{1,63}$")
SOURCE_RELATION_PREFIX = "EXPORT_SOURCE_RELATION_"


def _source_schema(env: Mapping[str, str]) -> str | None:
    raw = (env.get("EXPORT_SOURCE_SCHEMA") or "").strip()
    if not raw:
        return None
    if not _IDENTIFIER.match(raw):
        raise ConfigError(f"EXPORT_SOURCE_SCHEMA={raw!r} is not a schema name")
    return raw


def _source_relations(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """``EXPORT_SOURCE_RELATION_<DATASET>=schema.relation`` overrides, by dataset name."""
    from export_pipeline.contract import DATASETS_BY_NAME

    out = []
    for name, raw in sorted(env.items()):
        if not name.startswith(SOURCE_RELATION_PREFIX) or not raw.strip():
            continue
        dataset = name.removeprefix(SOURCE_RELATION_PREFIX).lower()
        if dataset not in DATASETS_BY_NAME:
            valid = ", ".join(SOURCE_RELATION_PREFIX + d.upper() for d in DATASETS_BY_NAME)
            raise ConfigError(f"{name} names no contract dataset; expected one of: {valid}")
        parts = raw.strip().split(".")
        if len(parts) != 2 or not all(_IDENTIFIER.match(p) for p in parts):
            raise ConfigError(f"{name}={raw!r} is not a schema-qualified relation (schema.name)")
        out.append((dataset, raw.strip()))
    return tuple(out)


def _lake_uri(env: Mapping[str, str]) -> str | None:
    raw = (env.get("EXPORT_LAKE_URI") or "").strip()
    if not raw:
        return None
    scheme = urlsplit(raw).scheme
    if scheme in ("s3", "s3a"):
        if not urlsplit(raw).netloc:
            raise ConfigError(f"EXPORT_LAKE_URI={raw!r} names no bucket (s3://BUCKET/prefix)")
        return raw.rstrip("/")
    if scheme == "file":
        raw = urlsplit(raw).path
    elif scheme:
        raise ConfigError(
            f"EXPORT_LAKE_URI={raw!r}: a local directory or s3://bucket/prefix (got {scheme}://)"
        )
    return str(Path(raw).expanduser().resolve())


def _check_dsn(dsn: str) -> None:
    try:
        parts = urlsplit(dsn)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ConfigError("EXPORT_SOURCE_DSN is not a valid PostgreSQL URL") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            "EXPORT_SOURCE_DSN must be a postgresql:// URL "
            f"(got scheme {parts.scheme or '(none)'!r})"
        )
    if not parts.path.strip("/"):
        raise ConfigError("EXPORT_SOURCE_DSN names no database (postgresql://host/DBNAME)")


def redact_dsn(dsn: str) -> str:
    """The DSN with its password (in the userinfo or the query string) hidden, fit for logs."""
    parts = urlsplit(dsn)
    netloc = parts.netloc
    if parts.password:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = urlencode(
        [
            (k, "***" if k.lower() in ("password", "passfile", "sslpassword") else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="/",
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))
