"""What defines a training run (:class:`TrainConfig`), read from TOML / JSON files and ``key=value`` overrides."""

from __future__ import annotations

import json
import typing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import tomllib

from ..errors import N3Error
from ..imaging.noise import SIGMA_LIMIT
from ..nn.nets import BUILDERS, NetConfig

LOSSES = ("mse", "nmse")
#: The loss ``nmse``'s default floor: σ (0-255) added in quadrature to each sample's noise level.
NMSE_FLOOR_SIGMA = 2.0
#: adam: the paper's (L2 weight decay added to the gradient); adamw: decoupled weight decay (Loshchilov &
#: Hutter): Adam normalises every gradient, so the L2 term alone moves a weight that gets little gradient
#: (a channel whose ReLU went silent) by about the rate per step and zeroes it for good; sgd: VDSR's.
OPTIMIZERS = ("adam", "adamw", "sgd")
ARCHS = tuple(BUILDERS)
PRECISIONS = ("fp32", "bf16", "auto", "bf16-all")
#: Settings a resumed run may change; the others define the run and stay as they were. ``noise`` may change only
#: within one kind of task whose model takes the same planes (e.g. the mix of a ``real:...`` run).
RESUME_SWITCHES = ("steps", "precision", "lr", "loss", "optimizer", "ema", "batch_size", "noise", "nmse_floor",
                   "nmse_blind_floor")
#: Builder overrides (``model.KEY``): the fields of :class:`n3cli.nn.nets.NetConfig` a run may set.
MODEL_KEYS = frozenset(NetConfig.__dataclass_fields__) - {"arch", "in_channels", "noise_inputs", "out_channels",
                                                          "extra"}


@dataclass
class TrainConfig:
    """Everything that defines a run (stored in every checkpoint; ``--resume`` reuses it)."""

    out: str
    data: list[str]
    task: str = "denoise"
    arch: str = "n3net"
    val: str | None = None
    noise: str = "25"
    steps: int = 1000
    budget_hours: float | None = None  # CPU-hours: schedule by budget used, stop when spent (equal-budget runs)
    batch_size: int = 16
    patch: int = 80
    lr: float | None = None  # default per task: 1e-3 (Adam, denoise) or 0.1 (SGD, sr)
    schedule: str = "paper"  # paper | cosine
    optimizer: str | None = None  # adam | adamw | sgd; default: adam for denoise, sgd (VDSR) for sr
    weight_decay: float = 1e-4
    grad_clip: float = 0.01  # SGD only: VDSR's adjustable clipping of each gradient to ±grad_clip/lr
    seed: int = 0
    eval_every: int = 250
    val_limit: int = 4
    val_sigma: float = 25.0
    checkpoint_minutes: float = 5.0
    log_every: int = 10
    precise_bn: int = 40  # batches for recomputing BN statistics before each validation (0: off)
    precision: str = "fp32"  # fp32 | bf16 (autocast; the N3 math stays float32) | auto (bf16 where native) |
    # bf16-all (bf16, the N3 blocks' embedding and temperature CNNs too: faster, but their gradients can go astray)
    loss: str = "mse"  # mse (paper) | nmse: each sample's MSE relative to its noise variance / bicubic input's MSE
    nmse_floor: float = NMSE_FLOOR_SIGMA  # nmse: σ (0-255) added in quadrature to each sample's noise level (bounds
    # the weight of nearly clean samples; for SR the same value as an error floor)
    nmse_blind_floor: float | None = None  # nmse, noise=real: the floor of the samples whose level the model is not
    # given (camera and blind Gaussian); None: nmse_floor
    init: str | None = None  # start a new run from these weights (a run's .pt checkpoint or a .safetensors file)
    freeze_bn: bool = False  # train with the BN statistics of the --init weights, fixed (n3cli.train.frozen_bn)
    ema: float = 0.0  # decay per step of a moving average of the weights, validated and exportable (0: off)
    model: dict[str, Any] = field(default_factory=dict)  # builder overrides

    @property
    def validation_bn_batches(self) -> int:
        """Batches that recompute the BN statistics before each validation: none where they are fixed (freeze_bn)."""
        return 0 if self.freeze_bn else self.precise_bn

    def validate(self, resolved: bool = True) -> None:
        """Name the first bad setting (before any run folder is looked at). ``resolved``: these are the run's
        settings, not only those a command line gives to ``--resume`` (whose noise and task come from the run)."""
        choices = {"task": ("denoise", "sr"), "arch": ARCHS, "schedule": ("paper", "cosine"),
                   "optimizer": (None, *OPTIMIZERS), "precision": PRECISIONS, "loss": LOSSES}
        for key, allowed in choices.items():
            value = getattr(self, key)
            if value not in allowed:
                names = ", ".join(a for a in allowed if a is not None)
                raise N3Error(f"unknown {'architecture' if key == 'arch' else key} {value!r}; expected one of {names}")
        if self.lr is not None and not self.lr > 0:
            raise N3Error(f"--lr must be positive, got {self.lr:g}")
        if not 0.0 <= self.ema < 1.0:
            raise N3Error(f"--ema must be a decay in [0, 1) (0: off), got {self.ema:g}")
        if not self.weight_decay >= 0:
            raise N3Error(f"--weight-decay must be >= 0, got {self.weight_decay:g}")
        if not self.nmse_floor > 0:
            raise N3Error(f"nmse_floor must be a positive σ (0-255), got {self.nmse_floor:g}")
        if self.nmse_blind_floor is not None:
            if not self.nmse_blind_floor > 0:
                raise N3Error(f"nmse_blind_floor must be a positive σ (0-255), got {self.nmse_blind_floor:g}")
            if resolved and (self.task != "denoise" or not self.noise.strip().lower().startswith("real")):
                raise N3Error("nmse_blind_floor applies to --noise real runs (the only ones with blind samples)")
        if self.freeze_bn and not self.init:
            raise N3Error("freeze_bn keeps the BN statistics of the init weights: give --set init=WEIGHTS")
        if self.steps < 1 or self.batch_size < 1 or self.patch < 8:
            raise N3Error("steps and batch size must be >= 1 and the patch size >= 8")
        at_least_one = {"eval_every": self.eval_every, "log_every": self.log_every, "val_limit": self.val_limit}
        for key, count in at_least_one.items():
            if count < 1:
                raise N3Error(f"{key} must be >= 1, got {count}")
        if self.precise_bn < 0:
            raise N3Error(f"precise_bn must be >= 0 batches (0: off), got {self.precise_bn}")
        # (0: checkpoints at every step, no clipping, no budget)
        non_negative = {"checkpoint_minutes": self.checkpoint_minutes, "grad_clip": self.grad_clip,
                        "budget_hours": self.budget_hours}
        for key, value in non_negative.items():
            if value is not None and not value >= 0:
                raise N3Error(f"{key} must be >= 0, got {value:g}")
        if not 0 <= self.val_sigma <= SIGMA_LIMIT:
            raise N3Error(f"val_sigma must be a σ in [0, {SIGMA_LIMIT:g}] (0-255 scale), got {self.val_sigma:g}")

    def with_overrides(self, **kw: Any) -> TrainConfig:
        """A copy with some settings changed (values checked and converted to the field's type)."""
        return replace(self, **{k: coerce(k, v) for k, v in kw.items()})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """From a stored or written configuration; unknown keys are refused by name."""
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise N3Error(f"unknown training setting(s): {', '.join(unknown)}")
        missing = [k for k in ("out", "data") if k not in d]
        if missing:
            raise N3Error(f"the run needs {' and '.join('--' + k for k in missing)}")
        return cls(**{k: coerce(k, v) for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def coerce(key: str, value: Any) -> Any:
    """``value`` as the type of the setting ``key`` (an int for a float setting, a number for a text one)."""
    hint = _hints().get(key)
    if hint is None:
        raise N3Error(f"unknown training setting {key!r}; expected one of {', '.join(_hints())}")
    kinds = typing.get_args(hint) if typing.get_origin(hint) is not None else (hint,)
    if value is None and type(None) in kinds:
        return None
    if key == "model":
        if not isinstance(value, dict):
            raise N3Error(f"model: expected a table of builder overrides, got {value!r}")
        bad = sorted(set(value) - MODEL_KEYS)
        if bad:
            raise N3Error(f"model: unknown key {bad[0]!r}; expected one of {', '.join(sorted(MODEL_KEYS))}")
        return dict(value)
    if key == "data":
        items = [value] if isinstance(value, str | Path) else value
        if not isinstance(items, list):
            raise N3Error(f"data: expected a list of folders, got {value!r}")
        return [str(v) for v in items]
    if isinstance(value, bool) or value is None:
        if bool in kinds or (value is None and type(None) in kinds):
            return value
    elif float in kinds and isinstance(value, int | float):
        return float(value)
    elif int in kinds and isinstance(value, int):
        return value
    elif str in kinds and isinstance(value, str | int | float | Path):
        return str(value)
    raise N3Error(f"{key}: {value!r} is not a valid value (expected {hint})")


def parse_value(text: str) -> Any:
    """A command-line value: true/false, an integer, a float, none, or else the text itself."""
    text = text.strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip("\"'")


def parse_sets(items: list[str], flag: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` items (``model.KEY=VALUE`` for builder overrides) as settings; text settings keep the text
    as written (``noise=25`` stays "25")."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not text.strip() or not key:
            raise N3Error(f"{flag} {item!r}: expected KEY=VALUE")
        if key.startswith("model."):
            sub = key.split(".", 1)[1]
            if sub not in MODEL_KEYS:
                raise N3Error(f"{flag} {item!r}: unknown key {sub!r}; expected one of {', '.join(sorted(MODEL_KEYS))}")
            out.setdefault("model", {})[sub] = parse_value(text)
            continue
        hint = _hints().get(key)
        if hint is None:
            raise N3Error(f"{flag} {item!r}: unknown setting {key!r}")
        value = parse_value(text)
        if "str" in str(hint) and isinstance(value, int | float) and not isinstance(value, bool):
            value = text.strip()
        out[key] = coerce(key, value)
    return out


def read_config(path: Path) -> dict[str, Any]:
    """The settings of a run file: TOML (``run.toml``) or a run's own ``config.json``."""
    if path.is_dir():
        raise N3Error(f"--config: {path} is a folder; give a run file (TOML) or a run's config.json")
    kind = "JSON" if path.suffix == ".json" else "TOML"
    try:
        if kind == "JSON":
            d = json.loads(path.read_text())
        else:
            with path.open("rb") as fh:
                d = tomllib.load(fh)
    except FileNotFoundError:
        raise N3Error(f"--config: file not found: {path}") from None
    except OSError as exc:
        raise N3Error(f"--config: cannot read {path} ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise N3Error(f"--config: {path} is not valid {kind} (run files are TOML, or a run's config.json): "
                      f"{exc}") from None
    if not isinstance(d, dict):
        raise N3Error(f"--config: {path} holds no settings table")
    return {k: coerce(k, v) for k, v in d.items() if v is not None}


def to_toml(cfg: TrainConfig) -> str:
    """The run as a TOML file that ``n3 train --config`` reads back (unset optional settings are left out)."""
    lines, model = [], cfg.model
    for k, v in asdict(cfg).items():
        if k != "model" and v is not None:
            lines.append(f"{k} = {json.dumps(v)}")
    if model:
        lines += ["", "[model]", *(f"{k} = {json.dumps(v)}" for k, v in model.items())]
    return "\n".join(lines) + "\n"


