"""Release step: register shipped weights in ``weights/manifest.json`` and record their measured figures.

The registry is written here, from a repository checkout, and never by a command at run time (the installed
package is read only). Two jobs, in one call or separately:

* register a weights file (``FILE``): its sha256 and the facts of its header (task, architecture, input planes,
  training); the file is copied into the manifest's folder if it lives elsewhere. The figures of an entry are
  kept only while its file's sha256 is unchanged (they were measured with that file).
* record figures (``--results``): the full-set PSNR/SSIM of the model from ``n3 bench --json`` records, under
  ``DATASET/SETTING`` (``Set12/sigma25``, ``Set5/x3``, ``Set12/nlf=0.001,1e-05``), with the bench command that
  measured them (``--command``, else the ``<!-- command -->`` line of the ``.md`` written beside the JSON).

Examples (from the repository root):

    python benchmarks/release_weights.py weights/n3net-nlf.safetensors --default
    n3 bench --dataset Set12 --data-dir ../shared/data --sigma 15,25,50,70 --methods n3net --threads 1 --quiet \\
        --json results/n3net-Set12.json --markdown results/n3net-Set12.md
    python benchmarks/release_weights.py --name n3net-nlf --results results/n3net-Set12.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from n3cli.atomic import write_text_atomic  # noqa: E402
from n3cli.bench.run import setting_key  # noqa: E402
from n3cli.errors import N3Error  # noqa: E402
from n3cli.weights import file_sha256, load_weights  # noqa: E402

MANIFEST = ROOT / "weights" / "manifest.json"


def read_manifest(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"default": {}, "models": {}}


def write_manifest(path: Path, reg: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(reg, indent=2, sort_keys=True) + "\n")


def register(reg: dict[str, Any], folder: Path, weights: Path, name: str | None = None, default: bool = False,
             force: bool = False) -> str:
    """Add or update the entry of ``weights`` (copied into ``folder`` if needed); returns its name."""
    weights = Path(weights)
    model, info = load_weights(weights)
    name = name or info.name
    target = folder / weights.name
    if weights.resolve() != target.resolve():
        if target.exists() and file_sha256(target) != file_sha256(weights) and not force:
            raise N3Error(f"{target} exists with other contents (pass --force to replace it)")
        shutil.copyfile(weights, target)
    sha = file_sha256(target)
    old = reg.setdefault("models", {}).get(name, {})
    same = old.get("sha256") == sha and old.get("file") == target.name
    reg["models"][name] = {
        "file": target.name, "sha256": sha, "task": info.task, "arch": model.config.arch, "planes": info.planes,
        "sigma": info.sigma, "description": info.description, "training": info.training,
        "metrics": old.get("metrics", {}) if same else {},
        **({"measured_with": old["measured_with"]} if same and "measured_with" in old else {}),
    }
    if default:  # a colour model is the default for colour images, beside the gray default of its task
        reg.setdefault("default", {})[f"{info.task}-color" if info.channels == 3 else info.task] = name
    return name


def record_key(task: str, record: dict[str, Any]) -> str:
    """How a record's setting is named in the manifest (:func:`n3cli.bench.run.setting_key`)."""
    if record.get("task") == "real":  # real noisy/clean pairs: no setting
        return "real"
    setting = tuple(record["nlf"]) if task == "raw" else float(record["sigma" if task == "denoise" else "scale"])
    return setting_key(task, setting)


def bench_command(results: Path) -> str | None:
    """The command of a bench run: the ``<!-- ... -->`` first line of its markdown table beside the JSON."""
    md = results.with_suffix(".md")
    if not md.is_file():
        return None
    first = md.read_text().splitlines()[:1]
    if first and first[0].startswith("<!-- ") and first[0].endswith(" -->"):
        return first[0][5:-4].strip()
    return None


def record(reg: dict[str, Any], name: str, results: Path, method: str | None = None,
           command: str | None = None) -> int:
    """Copy the full-set figures of model ``name`` from one bench JSON file into its entry; returns how many.

    The model's records are those labelled ``method``, by default its own name or ``n3net`` (the label of the
    shipped default in ``n3 bench``).
    """
    entry = reg.get("models", {}).get(name)
    if entry is None:
        raise N3Error(f"no model {name!r} in the manifest (register its weights file first)")
    tasks = {entry.get("task"), *(("real",) if entry.get("task") == "denoise" else ())}  # denoisers: real pairs too
    records = [r for r in json.loads(Path(results).read_text()) if r.get("task") in tasks and r.get("full_set")]
    labels = [method] if method else [name, "n3net"]
    label = next((lb for lb in labels if any(r.get("method") == lb for r in records)), None)
    if label is None:
        raise N3Error(f"{results}: no full-set {entry.get('task')} records of method {' or '.join(labels)}")
    command = command or bench_command(Path(results))
    if command is None:
        raise N3Error(f"{results}: no bench command found beside it (no .md with one); give --command")
    figures = {f"{r['dataset']}/{record_key(entry['task'], r)}": {"psnr": round(r["psnr"], 6),
                                                                   "ssim": round(r["ssim"], 4)}
               for r in records if r.get("method") == label}
    entry.setdefault("metrics", {}).update(figures)
    commands = entry.setdefault("measured_with", {})
    for key in figures:
        commands[key.split("/")[0]] = command
    return len(figures)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", nargs="?", type=Path, help="a .safetensors weights file to register")
    p.add_argument("--name", help="model name in the registry (default: the name in the file's header)")
    p.add_argument("--default", action="store_true", help="make it the default for its task")
    p.add_argument("--force", action="store_true", help="replace a different file of the same name")
    p.add_argument("--results", nargs="+", type=Path, default=[], help="n3 bench --json files with its figures")
    p.add_argument("--method", help="the model's method label in those records (default: its name, else n3net)")
    p.add_argument("--command", help="the bench command (default: the first line of the .md beside the JSON)")
    p.add_argument("--manifest", type=Path, default=MANIFEST, help=f"default: {MANIFEST.relative_to(ROOT)}")
    args = p.parse_args(argv)
    if args.weights is None and not (args.name and args.results):
        p.error("give a weights file to register, or --name and --results to record figures")
    try:
        reg = read_manifest(args.manifest)
        name = args.name
        if args.weights is not None:
            name = register(reg, args.manifest.parent, args.weights, args.name, args.default, args.force)
            print(f"registered {name}: {reg['models'][name]['file']} sha256 {reg['models'][name]['sha256']}")
        for results in args.results:
            n = record(reg, name, results, args.method, args.command)
            print(f"{name}: {n} figure(s) from {results}")
        write_manifest(args.manifest, reg)
    except (N3Error, OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
