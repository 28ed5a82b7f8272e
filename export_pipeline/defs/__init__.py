"""Dagster wiring: thin definitions over the plain pipeline modules."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any


def built_when_looked_up(
    module: str,
    build_defs: Callable[[], Any],
    build_schedules: Callable[[], Sequence[Any]],
    schedule_names: Sequence[str],
) -> Callable[[str], object]:
    """A module ``__getattr__`` (PEP 562): ``defs`` and the named schedules are built from the
    settings when first looked up, so importing the module (for its tags, say) reads no setting.
    ``schedule_names`` are in the order ``build_schedules`` returns them.

    Called at the end of the module's body (``__getattr__ = built_when_looked_up(__name__, ...)``),
    it also gives the module a ``__dir__`` that lists these names: ``dir()`` is how
    :func:`dagster.load_from_defs_folder` finds a module's ``defs``, so they are built when the
    code location loads (``dg``, ``dagster dev``, a run), never when the module is imported."""
    lazy = ("defs", *schedule_names)
    namespace = vars(sys.modules[module])
    namespace["__dir__"] = lambda: sorted({*namespace, *lazy})

    def __getattr__(name: str) -> object:
        if name == "defs":
            return build_defs()
        if name in schedule_names:
            return build_schedules()[list(schedule_names).index(name)]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
