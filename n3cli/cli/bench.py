"""`n3 bench` and `n3 data list|download`: parsing and presentation; the work is in :mod:`n3cli.bench`."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .. import api
from ..atomic import write_text_atomic
from ..bench import datasets
from ..bench.download import download
from ..bench.methods import ENV_OFFICIAL, OFFICIAL_BESIDE, Method, MethodOptions, build_methods, known_methods
from ..bench.run import (
    RAW_NLFS,
    REAL_SETTING,
    TABLE_HEADER,
    BenchConfig,
    BenchResult,
    run_bench,
    table_rows,
    to_json,
    to_markdown,
)
from ..errors import N3Error, OutputExistsError
from .common import RELEASE_STEP, ForceOpt, ThreadsOpt, err_console, handle_errors, is_tty, out_console, parse_nlf
from .devices import set_threads
from .progress import ProgressDisplay

EPILOG = """Several values: comma-separated (--sigma 25,50) or the option repeated (--sigma 25 --sigma 50).

Examples:

  n3 bench --dataset Set12 --sigma 25,50 --methods noisy,bm3d,nlm,wavelet

  n3 bench --dataset BSD68 --data-dir ~/data --methods official,bm3d --sigma 25,50,70 --json bsd68.json

  n3 bench --task sr --dataset Set5 --scale 2,3,4 --methods bicubic --markdown sr.md

  n3 bench --dataset ./my_photos --sigma 15 --weights mine.safetensors --save-images compare/

  n3 bench --task raw --dataset Set12 --limit 3 --weights nlf.safetensors --methods noisy,gat-bm3d
  (synthetic raw: Eq. 13 with f_e 2.2, f_c 1; Poisson-Gaussian noise at --nlf a,b, repeatable;
  default NLFs 1e-3,1e-5 / 4e-3,4e-5 / 1e-2,1e-4)

  n3 bench --task real --dataset PolyU-val --methods noisy,n3net,bm3d --json polyu.json
  (real noisy/clean photo pairs, *_real / *_mean files; no synthetic noise, so no --sigma; outputs are
  rounded to 8 bits before scoring)
"""

DEFAULT_METHODS = {"denoise": "noisy,n3net,bm3d", "sr": "bicubic,n3net", "raw": "noisy,n3net,n3net-est,gat-bm3d",
                   "real": "noisy,n3net,bm3d"}
TASKS = tuple(DEFAULT_METHODS)


def split_values(values: list[str] | None) -> list[str]:
    """``["25,50", "70"]`` → ``["25", "50", "70"]`` (comma-separated and repeated options)."""
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def parse_numbers(values: list[str] | None, option: str, default: list[float], integer: bool = False) -> list[float]:
    out: list[float] = []
    for text in split_values(values) or [f"{d:g}" for d in default]:
        try:
            v = float(text)
        except ValueError:
            raise N3Error(f"{option} takes numbers, got {text!r}") from None
        if not v == v or v < 0 or v == float("inf") or (integer and (not v.is_integer() or v < 2)):
            kind = "integers >= 2" if integer else "non-negative numbers"
            raise N3Error(f"{option} takes {kind}, got {text!r}")
        if v not in out:
            out.append(v)
    return out


def parse_nlf_values(values: list[str] | None) -> list[tuple[float, float]]:
    """``["1e-3,1e-5", "4e-3,4e-5"]`` → NLFs (a, b); ``None`` → the raw protocol's defaults."""
    if not values:
        return list(RAW_NLFS)
    out = []
    for text in values:
        for part in text.replace(";", " ").split():
            pair = parse_nlf(part)
            assert pair is not None
            if pair[0] <= 0:
                raise N3Error(f"--nlf needs a > 0 for Poisson-Gaussian noise, got {part!r}")
            out.append(pair)
    if not out:
        raise N3Error("--nlf needs values 'a,b'")
    return out


def command_line(fallback: list[str]) -> str:
    """The command as typed (``n3 ...``), or ``fallback`` when not run as ``n3``."""
    prog = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    package = Path(__file__).resolve().parents[1]
    if prog is not None and (prog.name in ("n3", "n3.exe") or prog.resolve().parent == package):
        return "n3 " + shlex.join(sys.argv[1:])
    return shlex.join(fallback)


@handle_errors
def bench_cmd(
    dataset: Annotated[str, typer.Option(help="A registered set (n3 data list) or a folder of images "
                                         "(--task real: of *_real/*_mean pairs).",
                                         show_default=False)],
    data_dir: Annotated[Path | None, typer.Option(help=f"Data root holding <set>/ folders (default: "
                                                  f"${datasets.ENV_DATA}, else the user cache).")] = None,
    task: Annotated[str, typer.Option(help="denoise, sr, raw or real.")] = "denoise",
    sigma: Annotated[list[str] | None, typer.Option(help="Noise σ (0-255), e.g. 25,50,70.",
                                                    show_default="25")] = None,
    scale: Annotated[list[str] | None, typer.Option(help="SR factors, e.g. 2,3,4.", show_default="2,3,4")] = None,
    nlf: Annotated[list[str] | None, typer.Option(
        help="Raw: a noise level function 'a,b' (σ² = a·x + b, x in [0,1]); repeat for several.",
        show_default="1e-3,1e-5 4e-3,4e-5 1e-2,1e-4")] = None,
    methods: Annotated[list[str] | None, typer.Option(
        help="Methods, e.g. n3net,bm3d,nlm. Denoise: " + _spelled("denoise") + "; sr: " + _spelled("sr")
        + "; raw: " + _spelled("raw") + "; real: " + _spelled("real") + ".",
        show_default=" / ".join(DEFAULT_METHODS.values()))] = None,
    weights: Annotated[list[str] | None, typer.Option(help="Also benchmark this weights file "
                                                      "(.safetensors or an authors' .t7).")] = None,
    official_dir: Annotated[Path | None, typer.Option(help="Folder of the authors' n3net_sigma*.t7 for method "
                                                      f"'official' (default: ${ENV_OFFICIAL}, else "
                                                      f"{OFFICIAL_BESIDE}, relative to the current folder, "
                                                      "if it exists).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N images (sorted by name).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON records "
                                                  "(e.g. results/NAME.json).")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write a markdown table (with the command).")] = None,
    update_manifest: Annotated[bool, typer.Option("--update-manifest", hidden=True)] = False,  # removed: refused
    save_images: Annotated[Path | None, typer.Option(help="Write comparison strips (and zoomed crops) "
                                                     "per image into this folder.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps (for model methods).")] = "auto",
    tile: Annotated[int | None, typer.Option(help="Tile size for model methods (default: from memory).")] = None,
    precision: Annotated[str, typer.Option(help="Arithmetic of model methods: fp32 (default, for figures comparable "
                                           "across machines), bf16, fp16 or auto (labelled -bf16 / -fp16).")] = "fp32",
    ensemble: Annotated[bool, typer.Option("--ensemble", help="Run model methods with the 8-fold self-ensemble "
                                           "(labelled -x8).")] = False,
    color: Annotated[str, typer.Option(help="Colour sets: how model methods treat colour (auto, opponent, rgb; "
                                       "see n3 denoise --help); a forced mode is labelled -opponent / -rgb.")] = "auto",
    threads: ThreadsOpt = None,
    force: ForceOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or notes.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Benchmark denoisers / super-resolution against the paper's tables and the usual alternatives.

    The figures go where --json / --markdown say (e.g. results/); n3 never writes into its installed package.
    """
    if update_manifest:
        raise N3Error(f"--update-manifest was removed: n3 bench writes its figures with --json/--markdown (e.g. "
                      f"into results/) and never into the installed package; {RELEASE_STEP}")
    request = parse_request(dataset, data_dir, task, sigma, scale, nlf, methods, weights, limit, color)
    outputs = Outputs(json_out, markdown, save_images, force)
    options = MethodOptions(device=device, tile=tile, official_dir=official_dir, ensemble=ensemble, color=color,
                            precision=precision)
    ds, built = plan_bench(request, outputs, options, threads, quiet)
    result = run_with_progress(ds, built, BenchConfig(task, request.settings, limit, save_images), quiet)
    report(result, request, outputs, quiet)


@dataclass
class BenchRequest:
    """What to benchmark, parsed and checked from the options."""

    dataset: str
    data_dir: Path | None
    task: str
    settings: list[Any]  # σ values, integer scales, NLFs (a, b) or [REAL_SETTING]
    names: list[str]  # method names, weights:PATH included
    limit: int | None


@dataclass
class Outputs:
    """Where the results go besides the table on stdout."""

    json: Path | None = None
    markdown: Path | None = None
    images: Path | None = None
    force: bool = False  # replace existing files


def parse_request(dataset: str, data_dir: Path | None, task: str, sigma: list[str] | None, scale: list[str] | None,
                  nlf: list[str] | None, methods: list[str] | None, weights: list[str] | None, limit: int | None,
                  color: str) -> BenchRequest:
    """Check the options against each other and the task; settings and method names as lists."""
    if task not in TASKS:
        raise N3Error(f"--task must be denoise, sr, raw or real, got {task!r}")
    if limit is not None and limit < 1:
        raise N3Error(f"--limit must be at least 1, got {limit}")
    if nlf and task != "raw":
        raise N3Error("--nlf applies to --task raw")
    if color not in api.COLOR_MODES:
        raise N3Error(f"--color must be one of {', '.join(api.COLOR_MODES)}, got {color!r}")
    settings: list[Any]
    if task == "real":
        if sigma or scale or nlf:
            raise N3Error("--sigma, --scale and --nlf do not apply to --task real (real pairs carry their own noise)")
        settings = [REAL_SETTING]
    elif task == "raw":
        if sigma or scale:
            raise N3Error("--sigma and --scale do not apply to --task raw; use --nlf a,b")
        settings = list(dict.fromkeys(parse_nlf_values(nlf)))
    elif task == "denoise":
        settings = parse_numbers(sigma, "--sigma", [25.0])
        if scale:
            raise N3Error("--scale applies to --task sr; use --sigma for denoising")
    else:
        settings = parse_numbers(scale, "--scale", [2.0, 3.0, 4.0], integer=True)
        if sigma:
            raise N3Error("--sigma applies to --task denoise; use --scale for sr")
    names = list(dict.fromkeys(split_values(methods) or DEFAULT_METHODS[task].split(",")))
    names += [f"weights:{w}" for w in weights or [] if f"weights:{w}" not in names]
    return BenchRequest(dataset, data_dir, task, settings, names, limit)


def _spelled(task: str) -> str:
    """The methods of a task as they are given (``weights`` needs its file: ``weights:PATH``)."""
    return ", ".join("weights:PATH" if name == "weights" else name for name in known_methods(task))


#: What a CLI user can do when a method cannot run, by method name.
UNAVAILABLE_HINTS = {"official": f"pass --official-dir DIR or set ${ENV_OFFICIAL}"}


def plan_bench(request: BenchRequest, outputs: Outputs, options: MethodOptions, threads: int | None, quiet: bool
               ) -> tuple[datasets.Dataset, list[Method]]:
    """The dataset and the methods that can run (with notes on the others), before any work; output folders
    are checked here too, so that a long run does not fail at its end."""
    for path in (outputs.json, outputs.markdown):
        if path is not None and not Path(path).parent.is_dir():
            raise N3Error(f"{Path(path).parent}: output folder does not exist")
        if path is not None and Path(path).is_dir():
            raise N3Error(f"{path}: is a folder; give a file name")
        if path is not None and Path(path).exists() and not outputs.force:
            raise OutputExistsError(f"{path}: already exists")
    folder = outputs.images
    if folder is not None and folder.is_dir() and any(folder.iterdir()) and not outputs.force:
        raise OutputExistsError(f"{folder}: already holds files (comparison images of an earlier run?)")
    ds = datasets.resolve_dataset(request.dataset, request.data_dir, request.task)
    if not quiet:
        if ds.warning:
            err_console.print(f"[yellow]warning:[/] {ds.warning}", highlight=False)
        if ds.spec is not None and request.task not in ds.spec.tasks and request.task != "raw":
            err_console.print(f"note: {ds.name} is a {'/'.join(ds.spec.tasks)} set", highlight=False)
    set_threads(threads)
    built, missing = build_methods(request.names, request.task, options)
    reasons = []
    for name, reason in missing:
        hint = UNAVAILABLE_HINTS.get(name.partition(":")[0].strip().lower())
        reasons.append(f"{reason} ({hint})" if hint else reason)
        err_console.print(f"[yellow]unavailable:[/] {reasons[-1]}", highlight=False)
    if not built:
        raise N3Error("no method can run: " + "; ".join(reasons))
    return ds, built


def run_with_progress(ds: datasets.Dataset, methods: list[Method], config: BenchConfig, quiet: bool
                      ) -> BenchResult:
    """:func:`run_bench` under the shared progress display: on a terminal a bar naming the current image and
    method, in logs a plain line now and then for the whole run."""
    with ProgressDisplay(err_console, None, enabled=not quiet) as display:
        started = False

        def progress(done: int, total: int, desc: str) -> None:
            nonlocal started
            if display.live or not started:  # plain lines: one item, the whole run, so that they show its pace
                display.start(desc if display.live else f"bench {ds.name}")
                started = True
            display.work(done, total)

        result = run_bench(ds, methods, config, progress)
        display.finish()
    return result


def report(result: BenchResult, request: BenchRequest, outputs: Outputs, quiet: bool) -> None:
    """The table on stdout, notes on stderr, and the JSON / markdown / comparison images asked for."""
    for _method, _setting, reason in result.skipped:
        err_console.print(f"[yellow]skipped:[/] {reason}", highlight=False)
    _print_table(result)
    if not quiet:
        for w in dict.fromkeys(s.warning for s in result.summaries if s.warning):
            err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
        if request.task in ("denoise", "sr") and any(not s.full_set for s in result.summaries):
            err_console.print("note: paper figures are over the full set; this run used a subset", highlight=False)
    if outputs.json is not None:
        _write_text(outputs.json, to_json(result))
    if outputs.markdown is not None:
        _write_text(outputs.markdown, to_markdown(result, command_line(fallback_command(request))))
    if outputs.images is not None and not quiet:
        err_console.print(f"wrote {len(result.saved)} comparison images to {outputs.images}", highlight=False)


def fallback_command(request: BenchRequest) -> list[str]:
    """The command of a run in its canonical spelling (for the markdown when not run as ``n3``)."""
    task, settings = request.task, request.settings
    if task == "raw":
        values = [v for a, b in settings for v in ("--nlf", f"{a:g},{b:g}")]
    elif task == "real":
        values = []
    else:
        values = ["--sigma" if task == "denoise" else "--scale", ",".join(f"{s:g}" for s in settings)]
    command = ["n3", "bench", "--dataset", request.dataset, "--task", task, *values,
               "--methods", ",".join(request.names)]
    if request.data_dir is not None:
        command += ["--data-dir", str(request.data_dir)]
    if request.limit is not None:
        command += ["--limit", str(request.limit)]
    return command


def _print_table(result: BenchResult) -> None:
    table = Table(title=f"n3 bench: {result.dataset} ({result.task})", title_justify="left")
    for i, name in enumerate(TABLE_HEADER):
        table.add_column(name, justify="left" if i < 3 else "right", no_wrap=i < 3)
    for row in table_rows(result):
        table.add_row(*row)
    out_console.print(table)


def _write_text(path: Path, text: str) -> None:
    """Write a small text file atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise N3Error(f"{path.parent}: output folder does not exist")
    write_text_atomic(path, text)


# --- n3 data -------------------------------------------------------------------------------------

data_app = typer.Typer(name="data", rich_markup_mode=None, help="Standard test sets: list them and download them.",
                       no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@data_app.command("list")
@handle_errors
def data_list_cmd(
    data_dir: Annotated[Path | None, typer.Option(help="Data root (default: $N3_DATA, else the user cache).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """The registered test sets, where they are present locally and where they come from."""
    root, origin = datasets.data_root(data_dir)
    origin = "--data-dir" if origin == "data_dir" else origin
    if data_dir is not None and not data_dir.is_dir():
        raise N3Error(f"{data_dir}: {'is not a folder' if data_dir.exists() else 'no such folder'}")
    table = Table(title=f"data root: {root} (from {origin})", title_justify="left")
    for name in ("name", "task", "kind", "images", "present locally", "source"):
        table.add_column(name, justify="right" if name == "images" else "left", no_wrap=name in ("name", "task"),
                         overflow="fold")
    for spec in datasets.REGISTRY.values():
        folder = datasets.local_folder(spec, data_dir)
        if folder is not None:
            n = len(datasets.set_files(folder, spec))
            here = f"{folder} ({n}/{spec.count})"
        else:
            here = "no"
        source = f"{spec.url}\n{spec.source}" if spec.url else f"no URL: {spec.source}"
        table.add_row(spec.name, "/".join(spec.tasks), spec.kind, str(spec.count), here, source)
    out_console.print(table)


@data_app.command("download")
@handle_errors
def data_download_cmd(
    names: Annotated[list[str], typer.Argument(help="Set names (see n3 data list).", show_default=False)],
    data_dir: Annotated[Path | None, typer.Option(help="Data root (default: $N3_DATA, else the user cache).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a present copy that fails verification.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Fetch a set's archive, keep its images, verify their sha256 sums and install it under the data root."""
    specs = [datasets.get_spec(n) for n in names]
    for spec in specs:
        console = err_console if not quiet and is_tty() else None
        folder, fetched = download(spec.name, data_dir, console=console, force=force, spec=spec)
        what = "downloaded and verified" if fetched else "already present and verified"
        err_console.print(f"{spec.name}: {what} in {folder}", highlight=False)
