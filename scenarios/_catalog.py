"""The bundled war-games: ``scenarios/catalog/*.toml``, shipped as package data."""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from supervisor import did_you_mean

from ._model import Scenario
from ._parser import ScenarioError, load_scenario

__all__ = ["CatalogEntry", "catalog", "catalog_dir", "find_scenario", "resolve"]


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    path: Path
    description: str
    policy: str
    steps: int


def catalog_dir() -> Path:
    """The folder of the bundled scenario files."""
    return Path(str(importlib.resources.files("scenarios") / "catalog"))


def catalog() -> list[CatalogEntry]:
    """Every bundled scenario, by name."""
    out = []
    for path in sorted(catalog_dir().glob("*.toml")):
        sc = load_scenario(path)
        out.append(CatalogEntry(sc.name, path, sc.description, sc.policy, len(sc.timeline)))
    return sorted(out, key=lambda e: e.name)


def find_scenario(name: str) -> Path:
    """The file of the bundled scenario ``name``; :class:`ScenarioError` with suggestions if there is none."""
    for entry in catalog():
        if entry.name == name:
            return entry.path
    names = [e.name for e in catalog()]
    hint = did_you_mean(name, names, n=3)
    raise ScenarioError(f"no bundled scenario named {name!r} and no such file; {hint + ' ' if hint else ''}"
                        f"see `wantbuild scenario list`")


def resolve(target: str) -> Scenario:
    """A scenario from a file path, or else from the catalog by name."""
    p = Path(target)
    if p.exists() or target.endswith(".toml") or "/" in target:
        return load_scenario(p)
    return load_scenario(find_scenario(target))
