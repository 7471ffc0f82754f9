"""Each module's public surface is its `__all__`, and nothing reaches past it.

A module lists in `__all__` what other modules may use; everything else is its own business and may change
without a look elsewhere. Every module (but the listed exceptions) has an `__all__`, every listed name exists,
and no module in reconciler/, tests/ or bench/ imports or reads from another module a name that module does
not list, or any `_private` name (uses are read from the source; the `__all__` lists from the modules).
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "reconciler"
# Entry points that nobody imports.
ENTRY_POINTS = {"reconciler", "reconciler.__main__", "reconciler.daemon.__main__"}


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in PACKAGE.rglob("*.py")}


def _all_of(module: str) -> set[str] | None:
    listed = getattr(importlib.import_module(module), "__all__", None)
    return None if listed is None else set(listed)


def _uses(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line, module, name) for every `from reconciler.m import name` and every `m.name` on such a module."""
    me = _name(path)
    tree = ast.parse(path.read_text())
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = me.split(".")[: len(me.split(".")) - node.level + (path.name == "__init__.py")]
            module = ".".join([*base, node.module] if node.module else base) if node.level else node.module or ""
            for alias in node.names:
                if f"{module}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
                elif module in MODULES and module != me and alias.name != "*":  # `*` takes only `__all__`
                    yield node.lineno, module, alias.name
        elif isinstance(node, ast.Import):
            aliases |= {a.asname: a.name for a in node.names if a.asname and a.name in MODULES}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            target = aliases.get(node.value.id)
            if target is not None and target != me:
                yield node.lineno, target, node.attr


def test_every_module_lists_its_public_names() -> None:
    missing = [m for m in sorted(MODULES) if m not in ENTRY_POINTS and _all_of(m) is None]
    assert missing == [], "add an __all__ naming what other modules may use"


def test_every_listed_name_exists() -> None:
    absent = [
        f"{m}.{name}"
        for m in sorted(MODULES)
        if m not in ENTRY_POINTS
        for name in sorted(_all_of(m) or ())
        if not hasattr(importlib.import_module(m), name)
    ]
    assert absent == []


def test_no_module_reaches_past_another_modules_surface() -> None:
    files = [p for folder in ("reconciler", "tests", "bench") for p in sorted((ROOT / folder).rglob("*.py"))]
    reached = [
        f"{path.relative_to(ROOT)}:{line} uses {name} of {module}"
        for path in files
        for line, module, name in _uses(path)
        if not name.startswith("__")
        and (name.startswith("_") or name not in (_all_of(module) or {name}))
        and f"{module}.{name}" not in MODULES
    ]
    assert reached == [], "list the name in that module's __all__ (it is public then), or keep it inside"
