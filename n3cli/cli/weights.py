"""`n3 weights`: list shipped weights, import the authors' checkpoints, export a training run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import N3Error
from ..train.export import export_run
from ..weights import import_official, list_weights, save_weights
from .common import RELEASE_STEP, DebugOpt, ThreadsOpt, err_console, handle_errors, out_console
from .devices import set_threads
from .pipeline import check_target

weights_app = typer.Typer(help="Manage model weights (shipped registry, imports, exports).", no_args_is_help=True,
                          rich_markup_mode=None)


def _psnr(metric: object) -> float | None:
    """The PSNR of a manifest metric: {"psnr": .., "ssim": ..} (or a bare number, as older manifests kept it)."""
    value = metric.get("psnr") if isinstance(metric, Mapping) else metric
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@weights_app.command("list")
@handle_errors
def list_cmd(
    task: Annotated[str | None, typer.Option(help="Only the models of this task (denoise, sr, raw).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON record per model on stdout (every figure, "
                                           "the commands that measured them, the training facts).")] = False,
    debug: DebugOpt = False,
) -> None:
    """Show the shipped weights with their measured figures."""
    shipped = list_weights()
    tasks = sorted({w.task for w in shipped})
    if task is not None and task not in tasks:
        raise N3Error(f"--task must be one of {', '.join(tasks)}, got {task!r}")
    if json_out:
        for w in list_weights(task):
            record = {"name": w.name, "task": w.task, "default_for": list(w.default_for), "arch": w.arch,
                      "description": w.description, "file": str(w.path), "sha256": w.sha256,
                      "planes": list(w.planes), "sigma": w.sigma, "training": dict(w.training),
                      "metrics": {k: dict(v) if isinstance(v, Mapping) else v for k, v in w.metrics.items()},
                      "measured_with": dict(w.measured_with)}
            print(json.dumps(record), flush=True)
        return
    table = Table(title="shipped weights")
    for col in ("name", "task", "default", "arch", "input planes", "training", "measured", "sha256"):
        table.add_column(col)
    for w in list_weights(task):
        tr = w.training
        training = f"{tr.get('steps', '?')} steps, {tr.get('cpu_hours', '?')} CPU-h"
        psnrs = {k: _psnr(v) for k, v in w.metrics.items()}
        metrics = "\n".join(f"{k} {p:.2f} dB" for k, p in psnrs.items() if p is not None)
        table.add_row(w.name, w.task, ",".join(w.default_for), w.arch, ",".join(w.planes), training,
                      metrics or "not measured yet", w.sha256[:12])
    out_console.print(table)


@weights_app.command("import")
@handle_errors
def import_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="An authors' N3Net checkpoint, e.g. n3net_sigma25.t7.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write our .safetensors file.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")] = False,
    sigma: Annotated[float | None, typer.Option(help="The noise level the checkpoint was trained for, for a file "
                                                "whose name does not say it (n3net_sigma25.t7 does).")] = None,
    debug: DebugOpt = False,
) -> None:
    """Convert an authors' checkpoint you downloaded to our format, for your own use.

    The authors' license forbids redistribution. `--weights FILE.t7` also works directly, without converting.

    Example: n3 weights import n3net_sigma25.t7 -o n3net_sigma25.safetensors
    """
    _check_output(output, checkpoint, force)
    if sigma is not None and not 0 < sigma <= 255:
        raise N3Error(f"--sigma must be a noise level in (0, 255], got {sigma:g}")
    model, info = import_official(checkpoint, sigma)
    if info.sigma is None:
        raise N3Error(f"{checkpoint}: its noise level is not in the file name (n3net_sigma25.t7); give --sigma")
    save_weights(output, model, info, overwrite=force)
    err_console.print(f"wrote {output} ({info.name}, sigma {info.sigma:g})")


def _check_output(output: Path, source: Path, force: bool) -> None:
    """A weights file to write: named .safetensors, not the source, not replacing a file without --force, in a
    folder that exists and is writable (checked before any work)."""
    if output.suffix.lower() != ".safetensors":
        raise N3Error(f"{output}: weights are written as safetensors; name the file *.safetensors")
    check_target(output, source, force)


@weights_app.command("export")
@handle_errors
def export_cmd(
    run: Annotated[Path, typer.Argument(help="A training checkpoint (RUN/last.pt or RUN/best.pt).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The .safetensors file to write.")],
    name: Annotated[str, typer.Option(help="Model name in the registry.")],
    ship: Annotated[bool, typer.Option("--ship", hidden=True)] = False,  # removed: refused with the release step
    default: Annotated[bool, typer.Option("--default", hidden=True)] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")] = False,
    precise_bn: Annotated[int | None, typer.Option(help="Training batches used to recompute the BN statistics "
                                                   "(0: keep the running averages; default 100, 0 for a run with "
                                                   "fixed statistics, freeze_bn).")] = None,
    ema: Annotated[bool, typer.Option("--ema", help="Export the run's moving average of the weights "
                                      "(n3 train --ema) instead of its last weights.")] = False,
    bn_noise: Annotated[str | None, typer.Option(
        "--bn-noise", help="Draw the BN calibration batches with this training noise of the run's kind instead of "
        "the run's own (e.g. real:camera=0.8,known=0.5 for a real:camera=0.5 run); for a blind model it sets how "
        "much noise is removed (docs/real-photos.md).")] = None,
    threads: ThreadsOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Export the model of a training checkpoint (with its training facts) to safetensors.

    Shipping it with the package is a release step: python benchmarks/release_weights.py (repository checkout).
    """
    if ship or default:
        raise N3Error(f"--ship/--default were removed: n3 never writes into the installed package; {RELEASE_STEP}")
    if not name.strip():
        raise N3Error("--name must not be empty")
    if precise_bn is not None and precise_bn < 0:
        raise N3Error(f"--precise-bn must be >= 0 batches (0: keep the running averages), got {precise_bn}")
    _check_output(output, run, force)
    set_threads(threads)
    model, info = export_run(run, name, precise_bn=precise_bn, ema=ema, bn_noise=bn_noise)
    save_weights(output, model, info, overwrite=force)
    err_console.print(f"wrote {output}: {json.dumps(info.training)}")
