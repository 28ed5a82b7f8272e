"""Settings, read from the environment once, when the pipeline starts.

Every variable is listed in `.env.example` and the README. A bad value fails at start with a
one-line :class:`ConfigError` that names the variable.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        dsn = env.get("EXPORT_SOURCE_DSN") or None
        if dsn is not None:
            _check_dsn(dsn)
        data_dir = Path(env.get("EXPORT_DATA_DIR") or "./data").expanduser().resolve()
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
        )


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
