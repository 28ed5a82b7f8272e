"""Redaction of secret-looking keys in JSON columns, before anything is written anywhere.

A key is secret-looking when its name contains one of :data:`SECRET_KEY_FRAGMENTS`
(case-insensitive, `-`/`_` ignored), at any depth of objects and arrays. Its value, whatever it is,
becomes ``"[REDACTED]"``. Redaction errs on the side of hiding: ``tokens_used`` is redacted too.
Only rows whose text mentions such a key are parsed, so the cost is a vectorised scan per batch.
"""

from __future__ import annotations

import json
import re
from typing import Any

import polars as pl

REDACTED = "[REDACTED]"

SECRET_KEY_FRAGMENTS = (
    "apikey",
    "token",
    "secret",
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "authkey",
    "authorization",
    "credential",
    "privatekey",
    "accesskey",
    "cookie",
    "bearer",
    "sessionid",
    "signature",
)

_KEY_NORMALISER = re.compile(r"[-_\s]")
# Cheap prefilter over raw JSON text: any secret fragment anywhere (keys are checked exactly later).
_PREFILTER = "(?i)" + "|".join(
    "[-_ ]?".join(re.escape(ch) for ch in fragment) for fragment in SECRET_KEY_FRAGMENTS
)


def is_secret_key(key: str) -> bool:
    normalised = _KEY_NORMALISER.sub("", key).lower()
    return any(fragment in normalised for fragment in SECRET_KEY_FRAGMENTS)


def redact_value(value: Any) -> Any:
    """A copy of a decoded JSON value with every secret-looking key's value replaced."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(k) else redact_value(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    return value


def redact_json_text(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        decoded = json.loads(text)
    except ValueError:
        # Not JSON: nothing key-shaped to keep, and it may hold a secret; hide it whole.
        return json.dumps(REDACTED)
    redacted = redact_value(decoded)
    if redacted == decoded:
        return text
    return json.dumps(redacted, separators=(", ", ": "), ensure_ascii=False)


def redact_json_columns(frame: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    """The frame with secret-looking keys redacted in the named JSON columns.

    Only rows whose text matches the prefilter are decoded; the rest pass through untouched.
    """
    for name in names:
        text = frame.get_column(name).cast(pl.String)
        suspect = text.str.contains(_PREFILTER).fill_null(False)
        if not suspect.any():
            frame = frame.with_columns(text)
            continue
        positions = suspect.arg_true()
        redacted = pl.Series(
            name, [redact_json_text(v) for v in text.gather(positions).to_list()], pl.String
        )
        frame = frame.with_columns(text.scatter(positions, redacted))
    return frame
