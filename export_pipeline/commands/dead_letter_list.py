"""`export-pipeline dead-letter list`: newest first, one page at a time, filtered.

Wired into the ``dead-letter`` group by :mod:`export_pipeline.commands.operate`; this module
only defines the arguments and the listing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, date, datetime, timedelta

from export_pipeline import terminal
from export_pipeline.config import Settings

DEFAULT_LIMIT = 50
_RELATIVE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def since_time(text: str, now: datetime | None = None) -> datetime:
    """argparse type: ``2026-12-01``, ``2026-12-01T08:00`` (UTC unless an offset is given), or a
    span back from now: ``30m``, ``12h``, ``7d``, ``2w``."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a time: use 2026-12-01, 2026-12-01T08:00, or 30m, 12h, 7d, 2w"
            ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def reason(text: str) -> str:
    """argparse type: a dead-letter reason (validate.DeadLetterReason)."""
    from typing import get_args

    from export_pipeline.validate import DeadLetterReason

    reasons = get_args(DeadLetterReason)
    if text not in reasons:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(reasons)}")
    return text


def add_arguments(listing: argparse.ArgumentParser) -> None:
    from export_pipeline.commands.common import dataset_name

    listing.add_argument("--dataset", type=dataset_name, help="a contract dataset name")
    listing.add_argument("--status", choices=["open", "resolved", "exhausted"])
    listing.add_argument(
        "--reason", type=reason, help="one reason, e.g. invalid_value or version_conflict"
    )
    listing.add_argument(
        "--since",
        type=since_time,
        metavar="TIME",
        help="first seen at or after TIME: 2026-12-01, 2026-12-01T08:00 (UTC), or 30m/12h/7d/2w",
    )
    listing.add_argument(
        "--limit",
        type=terminal.non_negative_int,
        default=DEFAULT_LIMIT,
        help=f"letters per page (default {DEFAULT_LIMIT}; 0 = all)",
    )
    page = listing.add_mutually_exclusive_group()
    page.add_argument(
        "--offset", type=terminal.non_negative_int, default=0, help="skip this many letters"
    )
    page.add_argument(
        "--page", type=terminal.non_negative_int, help="page number, from 1 (--limit per page)"
    )
    listing.add_argument("--json", action="store_true", help="machine-readable output (a list)")


def _time(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _key(record_key: object, org_id: str | None) -> str:
    """The record key's values, without the org (it has its own column)."""
    key = json.loads(record_key) if isinstance(record_key, str) else record_key
    if not isinstance(key, dict):
        return str(key)
    parts = [f"{k}={v}" for k, v in key.items() if not (k == "org_id" and v == org_id)]
    return ",".join(parts) or "-"


def cmd_dead_letter_list(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline.commands.common import CliError, json_default
    from export_pipeline.dead_letters import LetterFilter, count_letters, list_letters
    from export_pipeline.warehouse import open_warehouse

    if not settings.warehouse_path.exists():
        raise CliError(f"no warehouse at {settings.warehouse_path} yet: run `export-pipeline run`")
    limit = args.limit or None
    offset = args.offset
    if args.page is not None:
        if args.page < 1 or limit is None:
            raise CliError("--page counts from 1 and needs a --limit above 0")
        offset = (args.page - 1) * limit
    where = LetterFilter(args.dataset, args.status, args.reason, args.since)
    with open_warehouse(settings.warehouse_path, read_only=True, lock_timeout_seconds=60) as con:
        total = count_letters(con, where)
        rows = list_letters(
            con,
            args.dataset,
            args.status,
            limit,
            reason=args.reason,
            since=args.since,
            offset=offset,
        )
    shown = f"{offset + 1:,}-{offset + len(rows):,}" if rows else "none"
    rest = total - offset - len(rows)
    footer = f"showing {shown} of {total:,} dead letters, newest first"
    if rest > 0:
        footer += f"; {rest:,} not shown: --offset {offset + len(rows)} for more"
    if args.json:
        print(json.dumps(rows, default=json_default, indent=2))
        print(footer, file=sys.stderr)
        return 0
    print(
        f"  {'id':<32} {'dataset':<24} {'reason':<20} {'status':<9} {'tries':>5} "
        f"{'first seen (UTC)':<16} {'last seen (UTC)':<16} {'cursor (UTC)':<16} "
        f"{'org':<36} key"
    )
    for r in rows:
        print(
            f"  {r['dead_letter_id']:<32} {r['dataset']:<24} {r['reason']:<20} "
            f"{r['status']:<9} {r['attempt_count']:>5} {_time(r['first_seen_at']):<16} "
            f"{_time(r['last_seen_at']):<16} {_time(r['cursor_at']):<16} "
            f"{r['org_id'] or '-':<36} {_key(r['record_key'], r['org_id'])}"
        )
    print(footer)
    return 0
