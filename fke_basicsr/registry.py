"""Idempotent registration into BasicSR's registries, and the package-folder scan that triggers it."""
from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import Callable, Iterable, TypeVar

T = TypeVar('T')


def close_names(name: str, choices: Iterable[str], n: int = 5, cutoff: float = 0.5) -> list[str]:
    """The names among ``choices`` closest to ``name`` (the one "did you mean" lookup of the package)."""
    return difflib.get_close_matches(str(name), sorted(set(choices)), n=n, cutoff=cutoff)


def did_you_mean(name: str, choices: Iterable[str], n: int = 5, cutoff: float = 0.5) -> str:
    """`` Did you mean: a, b?`` for the close matches of ``name`` among ``choices`` ('' when none)."""
    near = close_names(name, choices, n, cutoff)
    return f" Did you mean: {', '.join(near)}?" if near else ''


def register(registry, name: str | None = None) -> Callable[[T], T]:
    """Decorator: register ``obj`` in a BasicSR ``Registry`` under its ``__name__`` (or ``name``).

    Re-registering the same object (same module and qualified name, e.g. after ``importlib.reload``) replaces
    the entry instead of raising BasicSR's duplicate-name AssertionError; a *different* object under a taken
    name still raises, naming both.
    """

    def deco(obj: T) -> T:
        key = name or obj.__name__
        existing = registry._obj_map.get(key)
        if existing is not None and existing is not obj:
            same = (getattr(existing, '__module__', None), getattr(existing, '__qualname__', None)) == (
                obj.__module__, obj.__qualname__)
            if not same:
                raise KeyError(f"'{key}' is already registered in BasicSR's {registry._name} registry by "
                               f"{existing.__module__}.{existing.__qualname__}; rename {obj.__module__}."
                               f"{obj.__qualname__} or register it under another name.")
        registry._obj_map[key] = obj
        return obj

    return deco


def import_modules(package: str, folder: str | Path, suffix: str) -> list:
    """Import every ``*{suffix}.py`` of ``folder`` as ``{package}.<stem>`` (BasicSR's scan, for our folders)."""
    names = sorted(p.stem for p in Path(folder).iterdir()
                   if p.is_file() and p.name.endswith(f'{suffix}.py') and not p.name.startswith('.'))
    return [importlib.import_module(f'{package}.{n}') for n in names]
