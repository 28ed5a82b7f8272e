"""Locate and read the project's SQL files (``sql/`` at the repository root)."""

from __future__ import annotations

from pathlib import Path

SQL_ROOT = Path(__file__).resolve().parent.parent / "sql"


def sql_path(*parts: str) -> Path:
    """Path of a file under ``sql/``, e.g. ``sql_path("source", "create_schema.sql")``."""
    return SQL_ROOT.joinpath(*parts)


def read_sql(*parts: str) -> str:
    """Text of a file under ``sql/``."""
    return sql_path(*parts).read_text(encoding="utf-8")
