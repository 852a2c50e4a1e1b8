"""The stairs only go down: inference (nn/, imaging/, raw/, the weights registry, the API) imports nothing
from the floor above (cli/, train/, bench/, sets/), not even inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "n3cli"
UPPER = ("cli", "train", "bench", "sets")
#: Every module of the lower floor (``__main__`` is the command's entry point, so it belongs above).
LOWER = sorted([p for p in PACKAGE.glob("*.py") if p.name != "__main__.py"]
               + [p for d in ("nn", "imaging", "raw") for p in (PACKAGE / d).glob("*.py")])


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """Absolute names of every module ``path`` imports (relative imports resolved), with line numbers."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return found


@pytest.mark.parametrize("path", LOWER, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_inference_imports_nothing_from_the_floor_above(path: Path) -> None:
    upper = [f"{line}: {name}" for line, name in _imported_modules(path)
             if any(name == f"n3cli.{u}" or name.startswith(f"n3cli.{u}.") for u in UPPER)]
    assert not upper, f"{path.relative_to(PACKAGE)} imports from the floor above: {upper}"


def test_the_walk_sees_relative_imports() -> None:
    names = {name for _, name in _imported_modules(PACKAGE / "api.py")}
    assert "n3cli.nn.nets" in names and "n3cli.imaging.tiling" in names
