"""Functions longer than N lines (default 100) under a folder: python benchmarks/long_functions.py [N] [n3cli]."""
import ast
import pathlib
import sys

limit = int(sys.argv[1]) if len(sys.argv) > 1 else 100
for p in sorted(pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else "n3cli").rglob("*.py")):
    for node in ast.walk(ast.parse(p.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > limit:
                print(f"{p}:{node.lineno} {node.name} {n}")
