"""Secret redaction and settings: pure functions, no database."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from export_pipeline.config import ConfigError, Settings, redact_dsn
from export_pipeline.redact import (
    REDACTED,
    _json_scan,
    is_secret_key,
    redact_json_columns,
    redact_json_text,
)

# --- redaction -------------------------------------------------------------------------------


def test_secret_keys_are_redacted_at_any_depth_of_objects_and_lists() -> None:
    """Provider keys hide anywhere in metadata: nested objects, lists, lists of lists."""
    text = json.dumps(
        {
            "provider": {"name": "prospeo", "api_key": "sk_live_1"},
            "headers": {"Authorization": "Bearer abc", "Accept": "application/json"},
            "list": [{"password": "hunter2", "user": "ada"}, [{"client_secret": "s"}], 3],
            "count": 2,
        }
    )

    redacted = json.loads(redact_json_text(text))

    assert redacted == {
        "provider": {"name": "prospeo", "api_key": REDACTED},
        "headers": {"Authorization": REDACTED, "Accept": "application/json"},
        "list": [{"password": REDACTED, "user": "ada"}, [{"client_secret": REDACTED}], 3],
        "count": 2,
    }


def test_a_secret_key_hides_its_whole_value_even_when_it_is_an_object() -> None:
    """A nested credentials object has no safe parts: all of it goes."""
    text = json.dumps({"credentials": {"user": "ada", "pass": "x"}, "auth_token": None})

    assert json.loads(redact_json_text(text)) == {"credentials": REDACTED, "auth_token": REDACTED}


@pytest.mark.parametrize(
    "key",
    [
        "API_KEY",
        "ApiKey",
        "x-api-key",
        "AUTHORIZATION",
        "Proxy-Authorization",
        "Password",
        "accessToken",
        "refresh_token",
        "Set-Cookie",
        "private_key",
        "AWS_SECRET_ACCESS_KEY",
        "session_id",
        "X-Signature",
    ],
)
def test_secret_key_names_are_recognised_whatever_their_case_and_separators(key: str) -> None:
    """Providers spell the same secret many ways; each spelling must be caught."""
    assert is_secret_key(key)
    assert json.loads(redact_json_text(json.dumps({key: "PLANTED"}))) == {key: REDACTED}


@pytest.mark.parametrize("key", ["passphrase", "pwd", "X-Auth-Key"])
def test_common_secret_key_names_outside_the_fragment_list_are_recognised(key: str) -> None:
    """Other widespread names for credentials must not slip through the redaction either."""
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key", ["name", "provider", "user", "status", "http_status", "email", "domain", "id"]
)
def test_ordinary_keys_are_not_secret(key: str) -> None:
    """Over-redaction would destroy the analytics value of the metadata."""
    assert not is_secret_key(key)


def test_text_without_secret_keys_is_returned_untouched() -> None:
    """Rows without secrets keep their exact text (no re-serialisation, no churn in checksums)."""
    text = '{"b":1,  "a": [1, 2], "note": {"nested": [null, true]}}'

    assert redact_json_text(text) == text


def test_secret_looking_values_under_ordinary_keys_are_kept() -> None:
    """Redaction is by key: a value mentioning a secret word is not itself a secret key."""
    text = json.dumps({"note": "rotate the api_key monthly"})

    assert redact_json_text(text) == text


def test_null_stays_null_and_non_json_text_is_hidden_whole() -> None:
    """Unparseable text may hold anything; hiding it is the safe side."""
    assert redact_json_text(None) is None
    assert json.loads(redact_json_text("Bearer abc, not json")) == REDACTED


def test_redact_json_columns_touches_only_the_named_columns_and_suspect_rows() -> None:
    """Other columns and clean rows must pass through exactly as extracted."""
    frame = pl.DataFrame(
        {
            "metadata_json": ['{"api_key": "PLANTED", "n": 1}', '{"n": 2}', None],
            "error_message": ['{"api_key": "kept: not a JSON column"}', None, "x"],
        }
    )

    out = redact_json_columns(frame, ["metadata_json"])

    assert [None if v is None else json.loads(v) for v in out["metadata_json"]] == [
        {"api_key": REDACTED, "n": 1},
        {"n": 2},
        None,
    ]
    assert out["metadata_json"][1] == '{"n": 2}'
    assert out["error_message"].to_list() == frame["error_message"].to_list()


@pytest.mark.parametrize(
    ("document", "suspect"),
    [
        ('{"email": "ada@example.com", "site": "https://example.com/a"}', False),
        ('{"note": "see postgresql://app:s3cret@db/prod"}', True),
        ('{"headers": ["Authorization: Bearer abcdefgh12345678"]}', True),
        ('{"k": "AKIAABCDEFGHIJKLMNOP"}', True),
        ('{"Api-Key": 1}', True),
        ('{"n": "\\u0070assword=x"}', True),
    ],
)
def test_json_scan_sends_only_documents_that_may_hold_a_secret_to_python(
    document: str, suspect: bool
) -> None:
    """Decoding every document with an email in Python doubled a full export's time; the scan
    must still flag every secret-shaped value, secret key and escape."""
    flagged = pl.DataFrame({"j": [document]}).select(_json_scan("j")).item()
    assert flagged is suspect
    assert (redact_json_text(document) != document) is suspect


# --- settings --------------------------------------------------------------------------------


def test_settings_default_to_the_documented_values() -> None:
    """The README promises these defaults; a silent change would move every window."""
    settings = Settings.from_env({})

    assert settings.source_dsn is None
    assert settings.data_dir == Path("./data").resolve()
    assert settings.warehouse_path == settings.data_dir / "warehouse.duckdb"
    assert settings.lookback == timedelta(minutes=15)
    assert settings.safety_lag == timedelta(seconds=60)
    assert settings.batch_size == 100_000


def test_settings_read_every_variable(tmp_path: Path) -> None:
    """Each documented variable must actually take effect."""
    dsn = "postgresql://export:pw@db.internal:5432/dex"
    settings = Settings.from_env(
        {
            "EXPORT_SOURCE_DSN": dsn,
            "EXPORT_DATA_DIR": str(tmp_path),
            "EXPORT_LOOKBACK_MINUTES": "2.5",
            "EXPORT_SAFETY_LAG_SECONDS": "0",
            "EXPORT_BATCH_SIZE": "500",
        }
    )

    assert settings.source_dsn == dsn
    assert settings.data_dir == tmp_path.resolve()
    assert settings.lookback == timedelta(seconds=150)
    assert settings.safety_lag == timedelta(0)
    assert settings.batch_size == 500


def test_blank_variables_fall_back_to_defaults() -> None:
    """`VAR=` in an .env file means "unset", not an error."""
    settings = Settings.from_env({"EXPORT_LOOKBACK_MINUTES": " ", "EXPORT_SOURCE_DSN": ""})

    assert settings.lookback == timedelta(minutes=15)
    assert settings.source_dsn is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EXPORT_LOOKBACK_MINUTES", "-1"),
        ("EXPORT_LOOKBACK_MINUTES", "fifteen"),
        ("EXPORT_LOOKBACK_MINUTES", "nan"),
        ("EXPORT_LOOKBACK_MINUTES", "inf"),
        ("EXPORT_SAFETY_LAG_SECONDS", "-5"),
        ("EXPORT_SAFETY_LAG_SECONDS", "nan"),
        ("EXPORT_BATCH_SIZE", "0"),
        ("EXPORT_BATCH_SIZE", "1.5"),
    ],
)
def test_bad_numbers_fail_with_an_error_naming_the_variable(name: str, value: str) -> None:
    """A bad setting must stop the pipeline at start, saying which variable to fix."""
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    "dsn",
    [
        "not a url",
        "mysql://export:pw@db/dex",
        "postgresql://export:pw@db.internal",
        "postgresql://export:pw@db.internal:notaport/dex",
    ],
)
def test_bad_source_dsn_fails_naming_the_variable_without_echoing_the_password(dsn: str) -> None:
    """The error lands in logs: it must point at the variable and must not leak the password."""
    with pytest.raises(ConfigError, match="EXPORT_SOURCE_DSN") as excinfo:
        Settings.from_env({"EXPORT_SOURCE_DSN": dsn})

    assert "pw" not in str(excinfo.value).replace("postgresql", "")


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://export:pw@db.internal:5432/dex",
        "postgres://db.internal/dex",
        "postgresql://postgres:@/postgres?host=/tmp/pgserver",
    ],
)
def test_valid_source_dsns_are_accepted(dsn: str) -> None:
    """Host/port URLs and socket-directory URLs (the embedded server's) are both legitimate."""
    assert Settings.from_env({"EXPORT_SOURCE_DSN": dsn}).source_dsn == dsn


def test_redact_dsn_hides_the_password_and_keeps_the_rest() -> None:
    """DSNs appear in logs and summaries; the password must not."""
    redacted = redact_dsn("postgresql://export:s3cr3t@db.internal:5432/dex?sslmode=require")

    assert "s3cr3t" not in redacted
    assert redacted == "postgresql://export:***@db.internal:5432/dex?sslmode=require"


def test_redact_dsn_leaves_a_dsn_without_password_unchanged() -> None:
    """Nothing to hide means nothing to change."""
    assert (
        redact_dsn("postgresql://export@db.internal/dex") == "postgresql://export@db.internal/dex"
    )


def test_redact_dsn_hides_a_password_given_as_a_query_parameter() -> None:
    """libpq also takes `?password=`: that spelling of the secret must not reach logs either."""
    redacted = redact_dsn("postgresql://export@db.internal/dex?password=s3cr3t&sslmode=require")

    assert "s3cr3t" not in redacted
    assert "sslmode=require" in redacted
