"""Redaction cost on a 200k-row events batch: the current ``redact.py`` against an older one.

    .venv/bin/python bench/redaction.py [--before REV] [--rows N] [--secret-every K]

``REV`` (default ``efbcc97``, the last commit with key-only JSON redaction) is read with
``git show``; its ``redact_json_columns`` covers the JSON column only, as it did then. The frame
mimics ``ops.operation_events``: eight text columns and ``metadata_json``, with one row in
``K`` (default 100, the seeder's rate) holding secrets under keys and as values.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from export_pipeline import redact, validate
from export_pipeline.contract import OPERATION_EVENTS

REPO = Path(__file__).resolve().parent.parent


def old_module(rev: str):
    text = subprocess.run(
        ["git", "show", f"{rev}:export_pipeline/redact.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "redact_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("redact_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def events_frame(rows: int, secret_every: int) -> pl.DataFrame:
    rng = random.Random(1)
    providers = ["apollo", "prospeo", "clearbit", "peopledatalabs", "hunter"]
    messages = [None] * 9 + [
        "Provider did not respond within 30s",
        "Provider returned 429 Too Many Requests",
        "Provider rejected credentials (HTTP 401)",
    ]

    def metadata(i: int) -> str:
        if i % secret_every == 0:
            return json.dumps(
                {
                    "provider": {"name": "apollo", "api_key": f"sk_live_{uuid.uuid4().hex[:24]}"},
                    "headers": {"Authorization": f"Bearer {uuid.uuid4().hex}"},
                }
            )
        return json.dumps(
            {
                "attempt": rng.randint(1, 4),
                "latency_ms": rng.randint(10, 3000),
                "provider": rng.choice(providers),
                "region": "us-east-1",
            }
        )

    now = datetime.now(UTC)
    ids = [[str(uuid.uuid4()) for _ in range(rows)] for _ in range(5)]
    return pl.DataFrame(
        {
            "event_id": ids[0],
            "run_id": ids[1],
            "event_type": [rng.choice(["request_sent", "response_received"]) for _ in range(rows)],
            "event_sequence": [rng.randint(0, 6) for _ in range(rows)],
            "occurred_at": [now - timedelta(seconds=i) for i in range(rows)],
            "org_id": ids[2],
            "company_id": ids[3],
            "entity_type": [rng.choice(["company", "person"]) for _ in range(rows)],
            "entity_id": ids[4],
            "provider": [rng.choice(providers) for _ in range(rows)],
            "http_status": [rng.choice([200, 200, 429, 500]) for _ in range(rows)],
            "raw_request_ref": [f"s3://raw/requests/{uuid.uuid4()}.json" for _ in range(rows)],
            "raw_response_ref": [f"s3://raw/responses/{uuid.uuid4()}.json" for _ in range(rows)],
            "payload_hash": [uuid.uuid4().hex[:16] for _ in range(rows)],
            "error_code": [rng.choice([None, None, "provider_timeout"]) for _ in range(rows)],
            "error_message": [rng.choice(messages) for _ in range(rows)],
            "metadata_json": [metadata(i) for i in range(rows)],
        },
        schema_overrides={
            "occurred_at": pl.Datetime("us", "UTC"),
            "http_status": pl.Int32,
            "event_sequence": pl.Int32,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="efbcc97")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--secret-every", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    before = old_module(args.before)
    raw = events_frame(args.rows, args.secret_every)
    frame = raw.with_columns(pl.lit("v1").alias("export_schema_version"))
    text, json_columns = validate._redacted_columns(OPERATION_EVENTS)
    later = datetime.now(UTC) + timedelta(hours=1)
    current = validate.redact_columns

    def old_redact_columns(frame, *, text, json_columns):
        return before.redact_json_columns(frame, json_columns)

    def validated(fn):
        def run():
            validate.redact_columns = fn
            try:
                validate.validate_batch(OPERATION_EVENTS, raw, later)
            finally:
                validate.redact_columns = current

        return run

    cases = {
        "redaction, before (JSON keys, 1 column)": lambda: before.redact_json_columns(
            frame, json_columns
        ),
        f"redaction, after ({len(text)} text + {len(json_columns)} JSON columns)": lambda: (
            redact.redact_columns(frame, text=text, json_columns=json_columns)
        ),
        "validate_batch, before": validated(old_redact_columns),
        "validate_batch, after": validated(current),
    }
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):  # interleaved, so machine noise hits both sides alike
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            timings[name].append((time.perf_counter() - t0) * 1000)
    scanned = sum(raw[c].str.len_bytes().sum() or 0 for c in [*text, *json_columns]) / 1e6
    print(
        f"{args.rows:,} rows, {scanned:.0f} MB of text/JSON, "
        f"secrets in 1 row of {args.secret_every}"
    )
    for name, values in timings.items():
        print(
            f"  {name:<48} min {min(values):7.1f} ms   median {statistics.median(values):7.1f} ms"
        )


if __name__ == "__main__":
    sys.exit(main())
