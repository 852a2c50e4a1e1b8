"""Refresh the result tables of README.md and docs/*.md from the files ``n3 bench --markdown`` wrote.

Each table in README.md and in every ``docs/*.md`` follows a comment holding the exact ``n3 bench`` command that
produced it; the command names its ``--markdown results/NAME.md`` file. This script replaces the table under every such
comment with that file's table (the file's first line is the same command comment), so the documents only
ever show figures a command produced. ``--check`` exits 1 when any of them is out of date.

    python benchmarks/readme_tables.py [--check]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMENT = re.compile(r"^<!-- (n3 bench .*--markdown (\S+\.md).*) -->$")


def refresh(text: str, root: Path = ROOT) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = COMMENT.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        source = (root / m.group(2)).read_text().splitlines()
        out.extend(source)  # its own command comment, then the table
        i += 1
        while i < len(lines) and lines[i].startswith("|"):  # drop the old table
            i += 1
    return "\n".join(out) + "\n"


def documents(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown file under docs/ (where the result tables moved)."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report whether README.md and docs/*.md are current")
    args = ap.parse_args()
    stale = 0
    for doc in documents():
        old = doc.read_text()
        new = refresh(old)
        name = doc.relative_to(ROOT)
        if args.check:
            print(f"{name}: tables are current" if new == old else f"{name}: tables are out of date")
        elif new != old:
            doc.write_text(new)
            print(f"{name}: tables refreshed")
        else:
            print(f"{name}: tables already current")
        stale += new != old
    return int(args.check and stale > 0)


if __name__ == "__main__":
    sys.exit(main())
