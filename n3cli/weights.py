"""Model weights: the read-only registry of shipped weights, safe loading, and the import of the authors'
published checkpoints.

The registry (:func:`get_weights`, :func:`list_weights`, :func:`default_weights`) is ``weights/manifest.json``:
per model its task, architecture, file, sha256, training facts and measured metrics. Loading a shipped model
checks the file's sha256. The manifest is written by the release step (``benchmarks/release_weights.py``, from a
repository checkout), never by a command at run time: the installed package is read only.

Our format is safetensors: tensors only, with the model configuration and metadata as JSON strings
in the header, so loading an untrusted file never runs code. The authors' ``.t7`` checkpoints are
read with ``torch.load(weights_only=True)`` and mapped onto our modules; they may not be
redistributed, so the project never ships them or anything converted from them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import write_atomic
from .errors import N3Error, OutputExistsError
from .nn.nets import N3Net, build, n3net
from .safeload import load_tensors


class WeightsError(N3Error):
    """Weights could not be found, read or matched to a model."""


class WeightsExistError(WeightsError, OutputExistsError):
    """A weights file to write exists and replacing it was not asked for."""


class NoDefaultWeightsError(WeightsError):
    """No weights given, and no shipped default for the task."""

    about = "weights"


class TrainingCheckpointError(WeightsError):
    """A training checkpoint of ``n3 train`` where a weights file was expected: it must be exported first."""

    about = "export"


@dataclass
class ModelInfo:
    """What a weights file says about itself (stored in its header and in the manifest)."""

    name: str
    task: str = "denoise"  # denoise | sr | raw (noise-level-conditional, trained on camera raw CFA planes)
    planes: list[str] = field(default_factory=lambda: ["image"])  # input planes: image ones, then noise-level ones
    sigma: float | None = None  # fixed Gaussian σ of a per-σ model; None if noise-level-conditional
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def conditional(self) -> bool:
        return "sqrt_a" in self.planes

    @property
    def channels(self) -> int:
        """Image planes in and out: 1 (gray; colour images go channel by channel) or 3 (RGB in one pass)."""
        return image_channels(self.planes)

    @property
    def blind_capable(self) -> bool:
        """Whether the model also denoises without a noise level (it infers it from the image)."""
        return "known" in self.planes

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        d = json.loads(text)
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


#: Names of the noise-level input planes (after the image planes): √a, √b of the NLF and the "level known" flag.
NOISE_PLANE_NAMES = ("sqrt_a", "sqrt_b", "known")
#: Names of the image planes of a colour model.
RGB_PLANES = ("red", "green", "blue")


def image_channels(planes: Sequence[str]) -> int:
    return sum(p not in NOISE_PLANE_NAMES for p in planes)


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
    """The registry file as stored: ``{"default": {task: name}, "models": {name: entry}}`` (read only: it is
    written by the release step, ``benchmarks/release_weights.py``, never at run time)."""
    path = weights_dir() / "manifest.json"
    if not path.exists():
        return {"default": {}, "models": {}}
    return json.loads(path.read_text())


# --- the registry of shipped weights ------------------------------------------------------------

@dataclass(frozen=True)
class Weights:
    """One shipped model: what it is, the file and its sha256, how it was trained and what it measured.

    Read only, built from ``weights/manifest.json``; :meth:`load` checks the file's hash before loading it.
    """

    name: str
    task: str  # denoise | sr | raw
    arch: str
    file: str  # inside :func:`weights_dir`
    sha256: str
    planes: tuple[str, ...] = ("image",)
    sigma: float | None = None
    description: str = ""
    training: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # "Set12/sigma25": {psnr, ssim}
    measured_with: Mapping[str, str] = field(default_factory=dict)  # dataset -> the bench command
    default_for: tuple[str, ...] = ()  # tasks whose default model this is

    @classmethod
    def from_entry(cls, name: str, entry: Mapping[str, Any], defaults: Mapping[str, str] | None = None) -> Weights:
        if not entry.get("file") or not entry.get("sha256"):
            raise WeightsError(f"registry entry {name!r} lacks its file or sha256 (register it with "
                               "benchmarks/release_weights.py)")
        return cls(name=name, task=str(entry.get("task", "denoise")), arch=str(entry.get("arch", "")),
                   file=str(entry["file"]), sha256=str(entry["sha256"]).lower(),
                   planes=tuple(entry.get("planes", ["image"])), sigma=entry.get("sigma"),
                   description=str(entry.get("description", "")),
                   training=MappingProxyType(dict(entry.get("training", {}))),
                   metrics=MappingProxyType({k: MappingProxyType(dict(v)) if isinstance(v, dict) else v
                                             for k, v in entry.get("metrics", {}).items()}),
                   measured_with=MappingProxyType(dict(entry.get("measured_with", {}))),
                   default_for=tuple(t for t, n in (defaults or {}).items() if n == name))

    @property
    def path(self) -> Path:
        return weights_dir() / self.file

    @property
    def conditional(self) -> bool:
        return "sqrt_a" in self.planes

    @property
    def channels(self) -> int:
        return image_channels(self.planes)

    def verify(self) -> Path:
        """The file's path once its sha256 matches the registry's; a :class:`WeightsError` otherwise."""
        path = self.path
        if not path.is_file():
            raise WeightsError(f"shipped weights {self.name!r}: file {path} is missing (reinstall n3cli)")
        actual = file_sha256(path)
        if actual != self.sha256:
            raise WeightsError(f"shipped weights {self.name!r}: {path} has sha256 {actual[:16]}…, the registry "
                               f"says {self.sha256[:16]}… (changed or corrupted file; reinstall n3cli)")
        return path

    def load(self) -> tuple[N3Net, ModelInfo]:
        """The model (eval mode) and its info, with the registry's measured metrics."""
        model, info = load_weights(self.verify())
        info.metrics = {k: dict(v) if isinstance(v, Mapping) else v for k, v in self.metrics.items()}
        return model, info


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file (remembered per path, size and modification time within a process)."""
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def registry() -> dict[str, Weights]:
    """Every shipped model by name."""
    reg = manifest()
    defaults = reg.get("default", {})
    return {name: Weights.from_entry(name, entry, defaults) for name, entry in reg.get("models", {}).items()}


def list_weights(task: str | None = None) -> list[Weights]:
    """The shipped models (of ``task`` if given), in registry order."""
    return [w for w in registry().values() if task is None or w.task == task]


def get_weights(name: str) -> Weights:
    """A shipped model by name; a :class:`WeightsError` naming the known ones otherwise."""
    reg = registry()
    if name not in reg:
        raise WeightsError(f"no shipped weights named {name!r} (known: {', '.join(reg) or 'none shipped'})")
    return reg[name]


def default_weights(task: str) -> Weights | None:
    """The shipped default model of ``task`` (with :data:`DEFAULT_FALLBACK`), or None."""
    name = default_name(manifest(), task)
    return get_weights(name) if name is not None else None


def save_weights(path: Path, model: N3Net, info: ModelInfo, overwrite: bool = False) -> Path:
    """Write safetensors with the model config and info in the header (atomic)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise WeightsExistError(f"{path} exists")
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
            config["noise_inputs"] = len(info.planes) - info.channels
        model = build(config)
        model.load_state_dict(state)
    except (ValueError, RuntimeError, TypeError, KeyError) as exc:
        raise WeightsError(f"{path}: weights do not match the model ({_first_reason(exc)})") from None
    return model.eval(), info


def _first_reason(exc: BaseException) -> str:
    """The first line of an error that says what is wrong (load_state_dict's first line only announces a list)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    reason = lines[1] if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return reason if len(reason) <= 200 else reason[:197] + "..."


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
    return _official_from(path, load_tensors(path, WeightsError), sigma)


def _official_state(blob: Any) -> dict[str, Any] | None:
    """The state dict of an authors' checkpoint, or None if ``blob`` is not laid out like one."""
    state = blob.get("net", blob) if isinstance(blob, dict) else None
    return state if isinstance(state, dict) and "blocks.0.conv1.weight" in state else None


def official_sigma(path: Path) -> float | None:
    """The noise level in an authors' checkpoint's file name (``n3net_sigma25.t7``: 25), or None."""
    m = re.search(r"sigma(\d+(?:\.\d+)?)(?!\d)", path.stem)
    if m is None:
        return None
    value = float(m.group(1))
    if not 0 < value <= 255:
        raise WeightsError(f"{path}: its file name says sigma {value:g}, not a noise level in (0, 255]")
    return value


def _official_from(path: Path, blob: Any, sigma: float | None = None) -> tuple[N3Net, ModelInfo]:
    state = _official_state(blob)
    if state is None:
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
    named = official_sigma(path)
    if sigma is not None and named is not None and sigma != named:
        raise WeightsError(f"{path}: its file name says sigma {named:g}, not {sigma:g}")
    sigma = named if sigma is None else sigma
    info = ModelInfo(name=f"official-{path.stem}", task="denoise", sigma=sigma,
                     description="authors' published N3Net checkpoint (not redistributable)",
                     training={"source": str(path.name)})
    return model.eval(), info


def is_official_checkpoint(path: Path) -> bool:
    """An authors' Torch checkpoint by its suffix (``.t7``); ``.pt``/``.pth`` files are looked into instead."""
    return Path(path).suffix.lower() == ".t7"


def load_path(path: Path) -> tuple[N3Net, ModelInfo]:
    """A model from a file: our safetensors, an authors' ``.t7``, or a ``.pt``/``.pth`` looked into (safely):
    the authors' layout is imported, an ``n3 train`` checkpoint is refused with what to do instead."""
    path = Path(path)
    suffix = path.suffix.lower()
    if is_official_checkpoint(path):
        return import_official(path)
    if suffix not in (".pt", ".pth"):
        return load_weights(path)
    blob = load_tensors(path, WeightsError)
    if isinstance(blob, dict) and "net_config" in blob and "model" in blob:
        raise TrainingCheckpointError(f"{path} is a training checkpoint of n3 train; export it to a .safetensors "
                                      "weights file first")
    if _official_state(blob) is not None:
        return _official_from(path, blob)
    raise WeightsError(f"{path} is neither an n3 weights file (.safetensors) nor an authors' N3Net checkpoint")


def resolve(weights: str | Path | None, task: str = "denoise") -> tuple[N3Net, ModelInfo]:
    """A model from a shipped name, a safetensors path or an official checkpoint path.

    ``None`` picks the shipped default for ``task``. Shipped files are checked against their sha256.
    """
    if weights is None:
        entry = default_weights(task)
        if entry is None:
            raise NoDefaultWeightsError(f"no shipped weights for task {task!r} yet")
        return entry.load()
    text = str(weights)
    reg = registry()
    if text in reg:
        return reg[text].load()
    path = Path(text).expanduser()
    if path.is_file():
        return load_path(path)
    known = ", ".join(reg) or "none shipped"
    raise WeightsError(f"unknown weights {text!r}: not a file and not a shipped name (known: {known})")


#: A task without a default of its own uses another's: raw denoising falls back to the default denoiser
#: (noise-level-conditional, so it takes an NLF); colour photos (``denoise-color``: the default for colour images,
#: one pass) to the gray default (channel by channel).
DEFAULT_FALLBACK = {"raw": "denoise", "denoise-color": "denoise"}


def shipped_default(task: str) -> str | None:
    """The registry's own default for ``task`` (no fallback), or None."""
    return manifest().get("default", {}).get(task)


def default_name(reg: dict[str, Any], task: str) -> str | None:
    """The shipped default model's name for ``task`` (with :data:`DEFAULT_FALLBACK`), or None."""
    defaults = reg.get("default", {})
    return defaults.get(task) or defaults.get(DEFAULT_FALLBACK.get(task, ""))


