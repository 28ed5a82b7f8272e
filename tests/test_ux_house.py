"""The house for the next maintainer: one type table, documents that point where they say."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from export_pipeline import extract, validate, warehouse
from export_pipeline.contract import LogicalType
from export_pipeline.contract_types import TYPES

REPO = Path(__file__).resolve().parent.parent


def test_every_logical_type_has_one_row_and_the_stages_read_it() -> None:
    """A type mapped in several modules drifts (seven mappings in five modules before)."""
    assert set(TYPES) == set(get_args(LogicalType))
    for name, spec in TYPES.items():
        assert warehouse.DUCKDB_TYPES[name] == spec.duckdb
        assert validate.POLARS_TYPES[name] == spec.polars
        assert extract.ACCEPTED_SOURCE_TYPES[name] == spec.source_types


def test_no_other_module_spells_a_type_table_of_its_own() -> None:
    """The next type (or a changed one) must be one row, not a hunt through the stages."""
    spelled = re.compile(r'^\s*"jsonb"\s*:', re.MULTILINE)
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "export_pipeline").rglob("*.py")
        if path.name != "contract_types.py" and spelled.search(path.read_text())
    ]
    assert offenders == []


def test_documents_link_only_to_files_inside_the_repository() -> None:
    """The README linked ../shared/...: a fresh clone has no such file."""
    documents = [REPO / "README.md", REPO / "ARCHITECTURE.md", *(REPO / "docs").glob("*.md")]
    broken = []
    for doc in documents:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if re.match(r"^[a-z]+://", target):
                continue
            resolved = (doc.parent / target).resolve()
            if not resolved.is_relative_to(REPO) or not resolved.exists():
                broken.append(f"{doc.name}: {target}")
    assert broken == []


def test_architecture_lists_every_module_of_the_package() -> None:
    """A module missing from the map is a module nobody will find."""
    text = (REPO / "ARCHITECTURE.md").read_text()
    package = REPO / "export_pipeline"
    modules = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "__init__.py"
    ]
    assert [m for m in modules if f"`{m}`" not in text] == []


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at module level or inside a function."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_cli_is_one_directional_nothing_imports_cli_py() -> None:
    """A helper reached back into cli.py ties every command to the parser; they live in
    commands/common.py and launcher.py instead."""
    package = REPO / "export_pipeline"
    importers = [
        str(path.relative_to(REPO))
        for path in [*package.rglob("*.py"), *(REPO / "bench").glob("*.py")]
        if path.name != "cli.py" and "export_pipeline.cli" in _imported_modules(path)
    ]
    assert importers == []


def test_every_subcommand_lives_in_a_commands_module() -> None:
    """cli.py only builds the parser: every handler is a commands/ module's."""
    import argparse

    from export_pipeline.cli import build_parser

    def handlers(parser: argparse.ArgumentParser) -> list[str]:
        own = [parser.get_default("func").__module__] if parser.get_default("func") else []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    own += handlers(child)
        return own

    parser = build_parser()
    modules = handlers(parser)
    assert len(modules) > 20
    assert [m for m in modules if not m.startswith("export_pipeline.commands.")] == []
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(sub.choices)[:4] == ["run", "backfill", "status", "demo"]  # the everyday ones
