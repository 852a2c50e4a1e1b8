"""Model weights: the shipped registry (manifest with measured metrics), safe loading, and the import
of the authors' published checkpoints.

Our format is safetensors: tensors only, with the model configuration and metadata as JSON strings
in the header, so loading an untrusted file never runs code. The authors' ``.t7`` checkpoints are
read with ``torch.load(weights_only=True)`` and mapped onto our modules; they may not be
redistributed, so the project never ships them or anything converted from them.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import write_atomic, write_text_atomic
from .errors import N3Error
from .nn.nets import N3Net, build, n3net
from .safeload import load_tensors


class WeightsError(N3Error):
    """Weights could not be found, read or matched to a model."""


@dataclass
class ModelInfo:
    """What a weights file says about itself (stored in its header and in the manifest)."""

    name: str
    task: str = "denoise"  # denoise | sr | raw (noise-level-conditional, trained on camera raw CFA planes)
    planes: list[str] = field(default_factory=lambda: ["image"])  # input planes after the image
    sigma: float | None = None  # fixed Gaussian σ of a per-σ model; None if noise-level-conditional
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def conditional(self) -> bool:
        return "sqrt_a" in self.planes

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        d = json.loads(text)
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def weights_dir() -> Path:
    """The shipped weights folder: inside the installed package, else the repository's ``weights/``."""
    try:  # weights/ is installed as a namespace data package: take its folder from the import spec
        spec = importlib.util.find_spec("n3cli.weights_data")
    except ModuleNotFoundError:
        spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(location) / "manifest.json").exists():
            return Path(location)
    return Path(__file__).resolve().parents[1] / "weights"


def manifest() -> dict[str, Any]:
    """The registry of shipped weights: ``{"default": {task: name}, "models": {name: entry}}``."""
    path = weights_dir() / "manifest.json"
    if not path.exists():
        return {"default": {}, "models": {}}
    return json.loads(path.read_text())


def save_weights(path: Path, model: N3Net, info: ModelInfo, overwrite: bool = False) -> Path:
    """Write safetensors with the model config and info in the header (atomic)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise WeightsError(f"{path} exists (use --force to overwrite)")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"n3_config": json.dumps(model.config.to_dict()), "n3_info": info.to_json(), "format": "n3-v1"}
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda tmp: save_file(state, tmp, metadata=meta))


def load_weights(path: Path) -> tuple[N3Net, ModelInfo]:
    """Build the model described in a safetensors file and load its weights (eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"{path} is not a valid safetensors weights file ({reason})") from None
    if "n3_config" not in meta:
        raise WeightsError(f"{path} has no n3 model configuration in its header")
    try:
        info = ModelInfo.from_json(meta.get("n3_info", json.dumps({"name": path.stem})))
        config = json.loads(meta["n3_config"])
        if info.conditional:  # files written before the model built its own noise planes
            config["noise_inputs"] = len(info.planes) - 1
        model = build(config)
        model.load_state_dict(state)
    except (ValueError, RuntimeError, TypeError, KeyError) as exc:
        raise WeightsError(f"{path}: weights do not match the model ({str(exc).splitlines()[0]})") from None
    return model.eval(), info


# --- the authors' published checkpoints -------------------------------------------------------

def _official_key(key: str) -> str | None:
    """Map a key of the published state dict to ours; None for tensors the forward pass never uses."""
    if ".bn1." in key:  # present in the files, not applied in the reference forward pass
        return None
    return key.replace("n3aggregation.aggregation.nnn.bn.", "n3aggregation.bn.")


def import_official(path: Path, sigma: float | None = None) -> tuple[N3Net, ModelInfo]:
    """Load an authors' N3Net denoising checkpoint (``n3net_sigma25.t7`` etc.) into our N3Net.

    Facts of those files: state dict under ``"net"``; three DnCNN blocks of depth 6, two N3 blocks
    (k = 7, 10×10 patches, stride 5, 15×15 window), BN on distances, and the log(1 - w) update
    applied to the temperature-scaled logits (``update="logits"``).
    """
    path = Path(path)
    blob = load_tensors(path, WeightsError)
    state = blob.get("net", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or "blocks.0.conv1.weight" not in state:
        raise WeightsError(f"{path} does not look like an N3Net denoising checkpoint")
    mapped = {}
    for key, value in state.items():
        new = _official_key(key)
        if new is not None:
            mapped[new] = value
    model = n3net(in_channels=int(state["blocks.0.conv1.weight"].shape[1]), update="logits")
    try:
        model.load_state_dict(mapped)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: unexpected checkpoint layout ({str(exc).splitlines()[0]})") from None
    if sigma is None:
        digits = "".join(ch for ch in path.stem.split("sigma")[-1] if ch.isdigit())
        sigma = float(digits) if "sigma" in path.stem and digits else None
    info = ModelInfo(name=f"official-{path.stem}", task="denoise", sigma=sigma,
                     description="authors' published N3Net checkpoint (not redistributable)",
                     training={"source": str(path.name)})
    return model.eval(), info


def is_official_checkpoint(path: Path) -> bool:
    return Path(path).suffix.lower() in (".t7", ".pth", ".pt")


def resolve(weights: str | Path | None, task: str = "denoise") -> tuple[N3Net, ModelInfo]:
    """A model from a shipped name, a safetensors path or an official checkpoint path.

    ``None`` picks the shipped default for ``task``.
    """
    reg = manifest()
    if weights is None:
        name = default_name(reg, task)
        if name is None:
            raise WeightsError(f"no shipped weights for task {task!r} yet; pass --weights FILE")
        weights = name
    text = str(weights)
    if text in reg.get("models", {}):
        entry = reg["models"][text]
        model, info = load_weights(weights_dir() / entry["file"])
        info.metrics = entry.get("metrics", info.metrics)
        return model, info
    path = Path(text).expanduser()
    if path.is_file():
        return import_official(path) if is_official_checkpoint(path) else load_weights(path)
    known = ", ".join(reg.get("models", {})) or "none shipped"
    raise WeightsError(f"unknown weights {text!r}: not a file and not a shipped name (known: {known})")


#: A task without a default of its own uses another's: raw denoising falls back to the default denoiser
#: (noise-level-conditional, so it takes an NLF).
DEFAULT_FALLBACK = {"raw": "denoise"}


def default_name(reg: dict[str, Any], task: str) -> str | None:
    """The shipped default model's name for ``task`` (with :data:`DEFAULT_FALLBACK`), or None."""
    defaults = reg.get("default", {})
    return defaults.get(task) or defaults.get(DEFAULT_FALLBACK.get(task, ""))


def register(path: Path, model: N3Net, info: ModelInfo, default: bool = False) -> None:
    """Add (or replace) a shipped model's entry in ``weights/manifest.json`` (file must be in that folder)."""
    folder = weights_dir()
    path = Path(path).resolve()
    if path.parent != folder.resolve():
        raise WeightsError(f"shipped weights must live in {folder}, not {path.parent}")
    with manifest_update() as reg:
        old = reg.get("models", {}).get(info.name, {})
        reg.setdefault("models", {})[info.name] = {
            "file": path.name, "task": info.task, "arch": model.config.arch, "planes": info.planes,
            "sigma": info.sigma, "description": info.description, "training": info.training,
            "metrics": {} if old.get("file") != path.name or old.get("training") != info.training else old["metrics"],
        }
        if default:
            reg.setdefault("default", {})[info.task] = info.name


@contextmanager
def manifest_update() -> Iterator[dict[str, Any]]:
    """Read, change and atomically rewrite ``weights/manifest.json`` under an exclusive lock, so that
    writers running at once (e.g. two ``n3 bench --update-manifest``) do not drop each other's changes."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): unlocked read-modify-write
        fcntl = None  # type: ignore[assignment]
    with open(weights_dir() / ".manifest.lock", "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        reg = manifest()
        yield reg
        write_manifest(reg)


def write_manifest(reg: dict[str, Any]) -> None:
    """Atomically rewrite ``weights/manifest.json``."""
    write_text_atomic(weights_dir() / "manifest.json", json.dumps(reg, indent=2, sort_keys=True) + "\n")


def record_metrics(task: str, figures: dict[str, Any], command: str) -> None:
    """Merge benchmark figures into the manifest entry of the default model for ``task``."""
    with manifest_update() as reg:
        name = default_name(reg, task)
        if name is None or name not in reg.get("models", {}):
            raise WeightsError(f"no shipped default model for task {task!r} in the manifest")
        entry = reg["models"][name]
        entry.setdefault("metrics", {}).update(figures)
        commands = entry.get("measured_with", {})
        if isinstance(commands, str):  # older manifests kept only the last command
            commands = {_dataset_of(commands): commands}
        for key in figures:
            commands[key.split("/")[0]] = command
        entry["measured_with"] = commands


def _dataset_of(command: str) -> str:
    words = command.split()
    return words[words.index("--dataset") + 1] if "--dataset" in words[:-1] else "?"
