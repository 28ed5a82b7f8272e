"""Shared fixtures: a real embedded PostgreSQL (pgserver), one fresh database per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One PostgreSQL server for the whole session, with its data in a pytest temp dir.

    Yields the ``pgserver`` server object: ``get_uri()`` for the admin database,
    ``get_uri(database=name)`` for another one. The server and its data are removed at the end.
    """
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg") / "pgdata", cleanup_mode="delete")
    yield server
    server.cleanup()


@pytest.fixture
def source_dsn(pg_server: Any) -> Iterator[str]:
    """URI of a new, empty database (``test_<uuid hex>``) on the session server; dropped after."""
    import psycopg
    from psycopg import sql

    name = f"test_{uuid.uuid4().hex}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_server.get_uri(database=name)
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
