"""Source sessions: read-only, named and bounded; what the role can see; how far a window may go.

The source is someone else's production database. Every session the pipeline opens on it:

- is **read-only at the database level**: the startup options set
  ``default_transaction_read_only=on``, and every use of a connection also sets
  ``transaction_read_only`` for its transaction (:func:`guard`), which holds even where a
  transaction-pooling proxy (PgBouncer in transaction mode, Supavisor) drops startup options;
- fails instead of reading through **row-level security**: ``row_security=off`` (startup and per
  transaction) turns a query that a policy would filter into an error, never into missing rows,
  and :func:`access_problem` names the relation and the fix before a batch reads anything;
- **names itself** (``application_name=export_pipeline``) and carries **timeouts of its own**:
  connect, statement and lock timeouts, TCP keepalives and ``tcp_user_timeout``.

:func:`read_horizon` tells the micro-batch how far its window may reach: not past the start of
the oldest transaction still open on the source (a later commit can land behind it), and on a
standby not past its last replayed commit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from export_pipeline.sqlfiles import read_sql
from export_pipeline.validate import SchemaMismatchError

log = logging.getLogger(__name__)

#: ``application_name`` of every source session (``pg_stat_activity`` shows who is reading).
APPLICATION_NAME = "export_pipeline"
#: Marker of the session options this module adds (so they are added once).
_READ_ONLY_OPTION = "-c default_transaction_read_only=on"


class SourceAccessError(SchemaMismatchError):
    """The role cannot read a dataset's relation fully (no privilege, or RLS would hide rows).

    Not transient: the dataset's batch fails, its watermark stays, the other datasets run.
    """


class SourceTimeoutError(TimeoutError):
    """The source did not answer within one of our own timeouts."""


@dataclass(frozen=True)
class SessionLimits:
    """Timeouts of every source session (seconds; 0 disables a server-side one)."""

    connect_timeout_seconds: float = 10.0
    statement_timeout_seconds: float = 3600.0
    lock_timeout_seconds: float = 30.0
    #: A session left idle inside a transaction (a frozen client) is ended by the server.
    idle_in_transaction_timeout_seconds: float = 600.0
    #: Unacknowledged data on a dead network path: the connection is dropped after this.
    tcp_user_timeout_seconds: float = 60.0


DEFAULT_LIMITS = SessionLimits()


def session_uri(dsn: str, limits: SessionLimits = DEFAULT_LIMITS) -> str:
    """``dsn`` with the session's name, timeouts, keepalives and read-only options added.

    Parameters the DSN already sets (``connect_timeout``, ``keepalives_idle``, ...) are kept;
    an ``application_name`` it sets becomes ``export_pipeline[<name>]`` (the window's horizon
    leaves out sessions named ``export_pipeline...``: they are read-only); the read-only and
    ``row_security`` options are always added after the DSN's own ``options``, so they win.
    Idempotent.
    """
    parts = urlsplit(dsn)
    params = parse_qsl(parts.query, keep_blank_values=True)
    given = {k for k, _ in params}
    options = dict(params).get("options", "")
    if _READ_ONLY_OPTION in options:
        return dsn
    own_name = dict(params).get("application_name")
    defaults = {
        "connect_timeout": str(max(1, round(limits.connect_timeout_seconds))),
        "keepalives": "1",
        "keepalives_idle": "30",
        "keepalives_interval": "10",
        "keepalives_count": "3",
        "tcp_user_timeout": str(round(limits.tcp_user_timeout_seconds * 1000)),
    }
    ours = " ".join(
        [
            _READ_ONLY_OPTION,
            "-c row_security=off",
            f"-c statement_timeout={round(limits.statement_timeout_seconds * 1000)}",
            f"-c lock_timeout={round(limits.lock_timeout_seconds * 1000)}",
            "-c idle_in_transaction_session_timeout="
            f"{round(limits.idle_in_transaction_timeout_seconds * 1000)}",
        ]
    )
    name = f"{APPLICATION_NAME}[{own_name}]" if own_name else APPLICATION_NAME
    kept = [(k, v) for k, v in params if k not in ("options", "application_name")]
    added = [(k, v) for k, v in defaults.items() if k not in given]
    query = urlencode(
        [*kept, ("application_name", name), *added, ("options", f"{options} {ours}".strip())],
        safe="/",
        quote_via=quote,
    )
    return urlunsplit(parts._replace(query=query))


def connect_timeout_of(dsn: str) -> float:
    """The ``connect_timeout`` a DSN carries (libpq's default, none, as 0)."""
    value = dict(parse_qsl(urlsplit(dsn).query)).get("connect_timeout", "0")
    try:
        return float(value)
    except ValueError:
        return 0.0


def connect_interruptibly(connect: Any, dsn: str) -> Any:
    """``connect(dsn)`` in a helper thread, waited for so that Ctrl-C and SIGTERM still land.

    libpq blocks in C while it connects; in the main thread a signal would wait for the whole
    connect timeout. If the wait is interrupted, the helper closes the connection it gets.
    """
    box: dict[str, Any] = {}
    abandoned = threading.Event()
    handover = threading.Lock()

    def attempt() -> None:
        try:
            conn = connect(dsn)
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc
            return
        with handover:
            if not abandoned.is_set():
                box["conn"] = conn
                return
        try:
            conn.close()
        except Exception:
            pass

    helper = threading.Thread(target=attempt, name="source-connect", daemon=True)
    helper.start()
    try:
        while helper.is_alive():
            helper.join(0.2)
    except BaseException:
        with handover:
            abandoned.set()
            conn = box.pop("conn", None)  # finished just as we were interrupted
        if conn is not None:
            conn.close()
        raise
    if "error" in box:
        error = box["error"]
        if "timeout expired" in str(error).lower():
            seconds = connect_timeout_of(dsn)
            raise SourceTimeoutError(
                f"the source did not complete the connection within {seconds:g}s "
                "(EXPORT_SOURCE_CONNECT_TIMEOUT_SECONDS): is it up and answering?"
            ) from None
        raise error
    return box["conn"]


def guard(conn: Any) -> None:
    """Make the connection's current transaction read-only and RLS-strict; check it took.

    Startup options can be dropped by a transaction-pooling proxy: this holds for the
    transaction in hand wherever it runs. Raises when the session is not read-only after it.
    """
    with conn.cursor() as cur:
        cur.execute(read_sql("extract", "set_session_guard.sql"))
        ((read_only, row_security),) = cur.fetchall()
    if read_only != "on" or row_security != "off":
        raise SourceAccessError(
            "the source session could not be made read-only "
            f"(transaction_read_only={read_only}, row_security={row_security})"
        )


# --- error classification ---------------------------------------------------------------------

#: Errors that retrying cannot fix: credentials, a missing database or role, TLS settings,
#: privileges, row-level security, a write refused by the read-only session.
_PERMANENT_MARKERS = (
    "password authentication failed",
    "authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "server does not support ssl",
    "ssl is not enabled",
    "sslmode value",
    "certificate",
    "permission denied",
    "must be owner",
    "row-level security",
    "read-only transaction",
    "unsupported startup parameter",
    "unrecognized configuration parameter",
    "invalid connection option",
    "invalid uri",
    "invalid integer value",
    "syntax error",
)

#: Errors that mean "try again later": the source or the warehouse was briefly unavailable.
_TRANSIENT_MARKERS = (
    "connection",
    "could not connect",
    "server closed",
    "terminating connection",
    "timeout",
    "timed out",
    "could not set lock",
    "conflicting lock",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "does not allow connections",
    "too many clients",
    "canceling statement due to conflict with recovery",
    "ssl syscall error",
    "ssl connection has been closed unexpectedly",
    "eof detected",
)


def error_kind(exc: BaseException) -> Literal["transient", "permanent"]:
    """Whether an error is worth retrying (never a dead letter either way)."""
    if isinstance(exc, SchemaMismatchError | AssertionError):
        return "permanent"
    if isinstance(exc, TimeoutError | ConnectionError):
        return "transient"
    text = str(exc).lower()
    if any(marker in text for marker in _PERMANENT_MARKERS):
        return "permanent"
    if any(marker in text for marker in _TRANSIENT_MARKERS):
        return "transient"
    return "permanent"


# --- privileges and row-level security -------------------------------------------------------


def relation_tree(conn: Any, relation: str) -> list[dict[str, Any]]:
    """``relation`` (``schema.name``) and every relation it reads through views, each with the
    role that reads it, its privileges and whether row-level security applies to that role
    (``sql/extract/select_relation_tree.sql``: the system catalogs only, one round trip). Empty
    when the relation does not exist. Used by the batch's access check and by `source check`."""
    schema, _, name = relation.rpartition(".")
    with conn.cursor() as cur:
        cur.execute(
            read_sql("extract", "select_relation_tree.sql"), parameters=(schema or "public", name)
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def rls_problem(tree: Sequence[dict[str, Any]]) -> str | None:
    """Why row-level security could hide rows of the tree's relation from us, or None.

    A table with RLS enabled hides rows from a role that is neither its owner (unless RLS is
    forced) nor superuser nor BYPASSRLS, whether or not policies exist (no policy: every row).
    A view reads its base tables with its owner's rights (unless ``security_invoker``), so a
    view created by the table's owner exposes every row to a role holding SELECT on the view.
    """
    for rel in tree:
        if rel["relkind"] in ("r", "p") and rel["rls_applies"]:
            via = (
                ""
                if rel["depth"] == 0
                else f" (read through a view with the rights of role {rel['reader']})"
            )
            return (
                f"row-level security is enabled on {rel['relation']} and role {rel['reader']}"
                f"{via} is neither its owner nor BYPASSRLS: rows may be silently hidden. Fix: "
                f"read through export views created by the owner of the table ({rel['owner']}) "
                f"and GRANT SELECT on them, or ALTER ROLE {rel['reader']} BYPASSRLS"
            )
    return None


def rls_hides_rows(conn: Any, relation: str) -> str | None:
    """Why row-level security could hide rows of ``relation`` from this session, or None."""
    return rls_problem(relation_tree(conn, relation))


def access_problem(conn: Any, relation: str, columns: Sequence[str]) -> str | None:
    """Why this session cannot read ``columns`` of every row of ``relation``, or None."""
    tree = relation_tree(conn, relation)
    if not tree:
        return None  # a missing relation is the schema check's to report
    top = tree[0]
    if not top["schema_usage"]:
        schema = top["relation"].split(".")[0]
        return (
            f"role {top['reader']} has no USAGE on schema {schema} (relation "
            f"{top['relation']}). Fix: GRANT USAGE ON SCHEMA {schema} TO {top['reader']}"
        )
    if not top["can_select"]:
        with conn.cursor() as cur:
            cur.execute(
                read_sql("extract", "select_unreadable_columns.sql"),
                parameters=(top["relation"], "\x1f".join(columns)),
            )
            missing = [c for (c,) in cur.fetchall()]
        if missing:
            return (
                f"role {top['reader']} has no SELECT privilege on {top['relation']} "
                f"(columns {', '.join(missing)}). Fix: GRANT SELECT ON {top['relation']} "
                f"TO {top['reader']}"
            )
    return rls_problem(tree)


def check_readable(conn: Any, relation: str, columns: Sequence[str], dataset: str) -> None:
    """Raise :class:`SourceAccessError` naming the relation and the fix, when it is not."""
    problem = access_problem(conn, relation, columns)
    if problem:
        raise SourceAccessError(f"{dataset}: cannot read the source fully: {problem}")


# --- how far the window may go -----------------------------------------------------------------


@dataclass(frozen=True)
class Horizon:
    """The latest cursor a micro-batch window may reach on this source, and why.

    ``bound`` None: only ``now - safety_lag`` limits the window. ``held_back``: why ``bound``
    is earlier than that (an open transaction, a standby behind). ``blind_spot``: what could
    not be checked (the role cannot see other sessions): the lookback is the only margin.
    """

    bound: datetime | None
    held_back: str | None
    blind_spot: str | None
    standby: bool

    def limit(self, end: datetime) -> tuple[datetime, str | None]:
        """``end`` capped at the bound, with the reason when the cap moved it."""
        if self.bound is not None and self.bound < end:
            return self.bound, self.held_back
        return end, None


_TICK = timedelta(microseconds=1)


def read_horizon(conn: Any) -> Horizon:
    """How far committed data is complete on this source (see :class:`Horizon`)."""
    with conn.cursor() as cur:
        cur.execute(read_sql("extract", "select_horizon.sql"))
        rows = cur.fetchall()
    (
        standby,
        sees_all,
        role,
        oldest_start,
        oldest_pid,
        oldest_app,
        oldest_user,
        replay_behind,
        replayed_until,
        replay_paused,
    ) = rows[0]
    if standby:
        if replay_behind:
            paused = " (replay is paused)" if replay_paused else ""
            until = replayed_until.isoformat() if replayed_until else "never"
            return Horizon(
                bound=replayed_until - _TICK
                if replayed_until
                else datetime.min.replace(tzinfo=UTC),
                held_back=f"standby has replayed commits only up to {until}{paused}",
                blind_spot=None,
                standby=True,
            )
        return Horizon(None, None, None, True)
    blind = None
    if not sees_all:
        blind = (
            f"role {role} cannot see other roles' open transactions (grant it pg_monitor or "
            "pg_read_all_stats): a transaction committing rows with older cursors is caught "
            "only by the lookback (EXPORT_LOOKBACK_MINUTES)"
        )
    if oldest_start is None:
        return Horizon(None, None, blind, False)
    return Horizon(
        bound=oldest_start - _TICK,
        held_back=(
            f"a transaction open since {oldest_start.isoformat()} (pid {oldest_pid}, "
            f"user {oldest_user}, application {oldest_app or '-'}) can still commit rows "
            "with cursors from then"
        ),
        blind_spot=blind,
        standby=False,
    )


def is_source_error(exc: BaseException) -> bool:
    """An error the source or its driver raised (worth one line to a user, not a traceback)."""
    if isinstance(exc, SchemaMismatchError | TimeoutError | ConnectionError):
        return True
    module = type(exc).__module__
    return module.startswith(("adbc_driver", "psycopg", "sqlalchemy"))
