"""For the submodules that are multiprocessing's own: their other names,
private ones included, are read from the standard library's module at each
access, so that state the two share (a logger, registries of finalizers
and after-fork hooks) stays one."""

from __future__ import annotations

from types import ModuleType
from typing import Any


def attribute(module: str, stdlib: ModuleType, name: str) -> Any:
    """``stdlib``'s attribute ``name``, for ``module``'s ``__getattr__``."""
    # Dunders are the module's own business (the import system asks for
    # __path__, say), never the standard library module's.
    if not (name.startswith("__") and name.endswith("__")):
        try:
            return getattr(stdlib, name)
        except AttributeError:
            pass
    raise AttributeError(f"module {module!r} has no attribute {name!r}")


def names(namespace: dict[str, Any], stdlib: ModuleType) -> list[str]:
    """``dir()`` of a module that adds ``stdlib``'s names to its own."""
    return sorted(set(namespace) | {n for n in dir(stdlib) if not n.startswith("__")})
