"""The training loop: paper protocols (Sec. 5 and supplement), resumable, optionally distributed."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..atomic import write_text_atomic
from ..errors import N3Error
from ..imaging import noise
from ..imaging.resize import imresize
from ..nn.nets import BUILDERS, N3Net
from . import checkpoint
from .data import ImageBank
from .ema import WeightAverage
from .health import revive_silent_channels, silent_fraction
from .precise_bn import recalibrate_bn
from .runlog import trim_to_step
from .tasks import SR_SCALES, NoiseSpec, denoise_batch, sample_weights, sr_batch, sr_crop_size, sr_sample_weights

LOSSES = ("mse", "nmse")
#: adam: the paper's (L2 weight decay added to the gradient); adamw: decoupled weight decay (Loshchilov &
#: Hutter): Adam normalises every gradient, so the L2 term alone moves a weight that gets little gradient
#: (a channel whose ReLU went silent) by about the rate per step and zeroes it for good; sgd: VDSR's.
OPTIMIZERS = ("adam", "adamw", "sgd")
ARCHS = ("n3net", "n3net-light", "dncnn", "knn", "vdsr", "n3net-sr")
PRECISIONS = ("fp32", "bf16", "auto")
#: Training batches whose gradients set the Adam second moments of revived channels (``--revive``).
REVIVE_GRADIENT_BATCHES = 4


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 convolutions run natively (CUDA with bf16 support; CPUs with AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def autocast_for(precision: str, device: torch.device) -> torch.autocast | None:
    """The autocast context of a run's precision on ``device`` (None: full float32).

    Only the local CNNs run in bfloat16: the N3 blocks (embedding, temperature, selection, Eq. 11) stay
    float32 (:meth:`n3cli.nn.n3.N3Block2d.forward`). Measured on this project's 2-core CPU (AVX512-BF16),
    N3Net training step, batch 16 × 80², one thread: 4.7 s float32, 4.1 s channels-last, 3.2 s
    bf16 local CNNs + channels-last (2.3 s with the N3 blocks in bf16 too, whose gradients went astray).
    """
    use = precision == "bf16" or (precision == "auto" and native_bf16(device))
    if not use or device.type not in ("cpu", "cuda"):
        return None
    return torch.autocast(device.type, dtype=torch.bfloat16)


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
    precision: str = "fp32"  # fp32 | bf16 (autocast; the N3 math stays float32) | auto (bf16 where native)
    loss: str = "mse"  # mse (paper) | nmse: each sample's MSE relative to its noise variance / bicubic input's MSE
    init: str | None = None  # start a new run from these weights (a run's .pt checkpoint or a .safetensors file)
    ema: float = 0.0  # decay per step of a moving average of the weights, validated and exportable (0: off)
    model: dict[str, Any] = field(default_factory=dict)  # builder overrides

    def validate(self) -> None:
        if self.task not in ("denoise", "sr"):
            raise N3Error(f"unknown task {self.task!r}; expected denoise or sr")
        if self.arch not in ARCHS:
            raise N3Error(f"unknown architecture {self.arch!r}; expected one of {', '.join(ARCHS)}")
        if self.schedule not in ("paper", "cosine"):
            raise N3Error(f"unknown schedule {self.schedule!r}; expected paper or cosine")
        if self.optimizer not in (None, *OPTIMIZERS):
            raise N3Error(f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        if self.precision not in PRECISIONS:
            raise N3Error(f"unknown precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        if self.loss not in LOSSES:
            raise N3Error(f"unknown loss {self.loss!r}; expected one of {', '.join(LOSSES)}")
        if self.lr is not None and not self.lr > 0:
            raise N3Error(f"--lr must be positive, got {self.lr:g}")
        if not 0.0 <= self.ema < 1.0:
            raise N3Error(f"--ema must be a decay in [0, 1) (0: off), got {self.ema:g}")
        if not self.weight_decay >= 0:
            raise N3Error(f"--weight-decay must be >= 0, got {self.weight_decay:g}")
        if self.steps < 1 or self.batch_size < 1 or self.patch < 8:
            raise N3Error("steps and batch size must be >= 1 and the patch size >= 8")


def optimizer_name(cfg: TrainConfig) -> str:
    return cfg.optimizer or ("adam" if cfg.task == "denoise" else "sgd")


def make_optimizer(cfg: TrainConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    name = optimizer_name(cfg)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=learning_rate(cfg, 0), momentum=0.9)
    return torch.optim.Adam(groups, lr=learning_rate(cfg, 0), betas=(0.9, 0.999),
                            decoupled_weight_decay=name == "adamw")


def learning_rate(cfg: TrainConfig, step: int, cpu_seconds: float = 0.0) -> float:
    """Learning rate at ``step`` (0-based) of ``cfg.steps``.

    denoise/paper: 1e-3 decayed exponentially to 1e-8 over the run (Sec. 5, training details);
    sr/paper (SGD): 0.1, divided by 10 every quarter of the run (supplement, following VDSR);
    cosine: half a cosine from the initial rate down to 1e-3 of it, for short CPU budgets.
    """
    base = cfg.lr if cfg.lr is not None else (0.1 if optimizer_name(cfg) == "sgd" else 1e-3)
    if cfg.budget_hours:  # progress through a CPU-time budget instead of a step count
        frac = min(cpu_seconds / (cfg.budget_hours * 3600.0), 1.0)
    else:
        frac = min(step / max(cfg.steps, 1), 1.0)
    if cfg.schedule == "cosine":
        return base * (1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * frac)))
    if optimizer_name(cfg) == "sgd":
        return base * 0.1 ** min(int(frac * 4), 3)
    return base * (1e-8 / base) ** frac


def dncnn_init(model: nn.Module, gen: torch.Generator) -> None:
    """DnCNN-style initialisation: Kaiming-normal convolutions; BN scales drawn as
    sqrt(2/(9·64))·N(0, 1) with magnitude at least 0.025, BN shifts zero."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            with torch.no_grad():
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                w = torch.randn(m.num_features, generator=gen) * math.sqrt(2.0 / (9 * 64))
                w = torch.where(w.abs() < 0.025, torch.copysign(torch.full_like(w, 0.025), w), w)
                m.weight.copy_(w)
                m.bias.zero_()


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on convolution weights and BN scales only (as in the DnCNN code)."""
    decay, no_decay = [], []
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            is_conv_w = isinstance(m, nn.Conv2d) and name == "weight"
            is_bn_scale = isinstance(m, nn.modules.batchnorm._BatchNorm) and name == "weight"
            (decay if is_conv_w or is_bn_scale else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def training_bank(cfg: TrainConfig) -> ImageBank:
    """The run's training images, decoded once: luma Y (MATLAB ``rgb2ycbcr``) for sr, PIL gray otherwise."""
    return ImageBank(cfg.data, min_size=1, luma="y" if cfg.task == "sr" else "L")


def crop_size(cfg: TrainConfig) -> int:
    """Side of the clean crops drawn per sample (sr needs a margin for the resampling, CFA planes twice
    the patch)."""
    if cfg.task == "sr":
        return sr_crop_size(cfg.patch)
    return cfg.patch * NoiseSpec.parse(cfg.noise).crop_scale


def make_batch(cfg: TrainConfig, spec: NoiseSpec, clean: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """(network input, target) for one batch of clean crops, as the task trains."""
    return sr_batch(clean, cfg.patch, gen) if cfg.task == "sr" else denoise_batch(clean, spec, gen)


def calibration_batches(cfg: TrainConfig, bank: ImageBank, n: int, seed: int = 20181203
                        ) -> Iterator[tuple[Tensor, Tensor]]:
    """``n`` (input, target) batches drawn as in training, from a generator of their own (the run's is
    untouched)."""
    spec = NoiseSpec.parse(cfg.noise) if cfg.task == "denoise" else NoiseSpec(0.0)
    gen = torch.Generator()
    gen.manual_seed(seed)
    for _ in range(n):
        yield make_batch(cfg, spec, bank.crops(cfg.batch_size, crop_size(cfg), gen), gen)


def calibration_inputs(cfg: TrainConfig, bank: ImageBank, n: int, seed: int = 20181203) -> Iterator[Tensor]:
    """The inputs of :func:`calibration_batches`."""
    return (x for x, _ in calibration_batches(cfg, bank, n, seed))


def load_initial_weights(model: nn.Module, path: Path) -> None:
    """``--init``: a new run starts from trained weights (fine-tuning); the optimizer and schedule start fresh.

    ``path``: a run's checkpoint (``last.pt`` / ``best.pt``, read without pickle) or an unfused
    ``.safetensors`` file; the weights must fit the run's architecture and input planes exactly."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            weights = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise N3Error(f"--init: {path} is not a valid safetensors file ({str(exc).splitlines()[0]})") from None
    else:
        weights = checkpoint.load(path).get("model")
        if not isinstance(weights, dict):
            raise N3Error(f"--init: {path} holds no model weights")
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise N3Error(f"--init: {path} does not fit this run's model ({str(exc).splitlines()[0]}); "
                      "use the same --arch and --noise kind") from None


def build_model(cfg: TrainConfig, in_planes: int) -> N3Net:
    try:
        return BUILDERS[cfg.arch](in_channels=in_planes, out_channels=1, **cfg.model)
    except (TypeError, ValueError) as exc:  # builder overrides from the command line (--model KEY=VALUE)
        raise N3Error(f"invalid model options {cfg.model}: {exc}") from None


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size())


class Validator:
    """PSNR of the model on a validation folder, with noise drawn from a seed fixed per image.

    Gaussian noise at σ (the run's own, else ``cfg.val_sigma``); for a camera raw run (``--noise raw``)
    the benchmark's raw protocol instead: each image made raw-like (Eq. 13, f_e 2.2), used as its own
    mosaic, exact Poisson-Gaussian noise at the middle benchmark NLF, denoised as its four CFA planes.
    """

    def __init__(self, folder: str, limit: int, cfg: TrainConfig, spec: NoiseSpec) -> None:
        bank = ImageBank([folder])
        self.images = [im.float()[None, None] / 255.0 for im in bank.images[:limit]]
        self.cfg, self.spec = cfg, spec
        sigma = spec.sigma if spec.sigma is not None else cfg.val_sigma
        self.sigma: float | None = sigma
        self.nlf: tuple[float, float] | None = None
        self.inputs = []
        if spec.camera:
            self.sigma, self.nlf = None, noise.RAW_NLFS[1]
            a, b = self.nlf
            planes = [noise.cfa_plane(noise.raw_like(im.expand(4, -1, -1, -1), noise.RAW_F_E, noise.RAW_F_C),
                                      torch.arange(4)) for im in self.images]
            self.images = planes
            for i, clean in enumerate(planes):
                noisy = noise.add_poisson_gaussian(clean, a, b, noise.generator(noise.seed_for("val-raw", i, a, b)))
                self.inputs.append(torch.cat([noisy, noise.nlf_planes(a, b, noisy)], dim=1))
            return
        for i, clean in enumerate(self.images):
            noisy = noise.add_gaussian(clean, sigma, noise.generator(noise.seed_for("val", i, sigma)))
            if spec.conditional:
                a, b = noise.sigma_to_nlf(sigma)
                noisy = torch.cat([noisy, noise.nlf_planes(a, b, noisy)], dim=1)
            self.inputs.append(noisy)

    @torch.inference_mode()
    def __call__(self, model: nn.Module, device: torch.device) -> float:
        was_training = model.training
        model.eval()
        psnrs = []
        for x, clean in zip(self.inputs, self.images, strict=True):
            out = model(x.to(device)).float().cpu()
            mse = (out - clean).square().mean().item()
            psnrs.append(10 * math.log10(1.0 / max(mse, 1e-12)))
        model.train(was_training)
        return sum(psnrs) / len(psnrs)


class SRValidator:
    """Mean PSNR on Y (border of ``scale`` pixels cropped) over the validation images and scales 2, 3, 4."""

    def __init__(self, folder: str, limit: int) -> None:
        bank = ImageBank([folder], luma="y")
        self.pairs: list[tuple[int, Tensor, Tensor]] = []
        for im in bank.images[:limit]:
            hr = im.float()[None, None] / 255.0
            for s in SR_SCALES:
                h, w = hr.shape[-2] // s * s, hr.shape[-1] // s * s
                crop = hr[:, :, :h, :w]
                lr = (imresize(crop, 1.0 / s) * 255.0).round().clamp(0, 255) / 255.0
                self.pairs.append((s, imresize(lr, float(s)), crop))
        self.sigma, self.nlf = None, None

    @torch.inference_mode()
    def __call__(self, model: nn.Module, device: torch.device) -> float:
        was_training = model.training
        model.eval()
        psnrs = []
        for s, x, hr in self.pairs:
            out = (model(x.to(device)).float().cpu() * 255.0).round().clamp(0, 255) / 255.0
            mse = (out - hr)[:, :, s:-s, s:-s].square().mean().item()
            psnrs.append(10 * math.log10(1.0 / max(mse, 1e-12)))
        model.train(was_training)
        return sum(psnrs) / len(psnrs)


def _rng_state(gen: torch.Generator, d: _Dist) -> list[Tensor]:
    state = gen.get_state()
    if d.world == 1:
        return [state]
    states: list[Any] = [None] * d.world
    dist.all_gather_object(states, state)
    return states


def restore_rng(gen: torch.Generator, states: list[Tensor], rank: int, seed: int, step: int) -> None:
    """Set a rank's crop generator from a checkpoint. A rank the saved run did not have (resumed under more
    processes) gets a stream of its own: reusing another rank's state would repeat that rank's crops."""
    if rank < len(states):
        gen.set_state(states[rank])
    else:
        gen.manual_seed(seed * 1000 + rank + 1_000_003 * (step + 1))


def train(cfg: TrainConfig, *, resume: bool = False, device: str | torch.device = "cpu",
          stop_after: int | None = None, on_log: Callable[[dict[str, Any]], None] | None = None,
          steps: int | None = None, precision: str | None = None, lr: float | None = None,
          loss: str | None = None, optimizer: str | None = None, revive: bool = False,
          ema: float | None = None, batch_size: int | None = None) -> Path:
    """Train (or continue) a run in ``cfg.out``; returns the path of the last checkpoint.

    ``stop_after``: stop (with a checkpoint) after this many steps in this call, as if killed.
    ``steps``: on resume, a new length for the run (the schedule follows it from the current step on);
    ``precision``: on resume, switch the run's arithmetic (see :func:`autocast_for`).
    ``lr``: on resume, a new initial rate: the schedule's curve is rescaled from the current step on.
    ``loss``: on resume, switch the training loss (``mse`` or ``nmse``, see :func:`sample_weights`).
    ``optimizer``: on resume, switch between ``adam`` and ``adamw`` (their states are the same).
    ``ema``: on resume, a new decay of the weight average (:mod:`n3cli.train.ema`; 0 turns it off); an
    average switched on at resume starts from the current weights.
    ``batch_size``: on resume, a new number of crops per step and process (e.g. half the run's under two
    processes: the same crops per optimiser step, the work spread over both).
    ``revive``: before the first step, redraw the local blocks' silent channels with the output kept
    (:func:`n3cli.train.health.revive_silent_channels`); logged as a ``revived`` record.
    """
    dev = torch.device(device)
    d = _init_distributed(dev)
    out = Path(cfg.out)
    last_path, best_path, log_path = out / "last.pt", out / "best.pt", out / "log.jsonl"
    state: dict[str, Any] | None = None
    if resume and last_path.exists():
        state = checkpoint.load(last_path)
        cfg = replace(TrainConfig(**state["train_config"]), out=str(out))  # a run folder may be moved or copied
        if steps is not None and steps != cfg.steps:
            if steps < state["step"]:
                raise N3Error(f"--steps {steps} is below the run's current step {state['step']}")
            cfg = replace(cfg, steps=steps)
        if optimizer is not None and optimizer != optimizer_name(cfg):
            if {optimizer, optimizer_name(cfg)} != {"adam", "adamw"}:
                raise N3Error(f"--resume can switch between adam and adamw only, not {optimizer_name(cfg)} "
                              f"to {optimizer}")
        switches = {"precision": precision, "lr": lr, "loss": loss, "optimizer": optimizer, "ema": ema,
                    "batch_size": batch_size}
        cfg = replace(cfg, **{k: v for k, v in switches.items() if v is not None})
    elif resume and d.main:
        print(f"no checkpoint in {out}; starting a new run", file=sys.stderr)
    elif not resume and last_path.exists():
        raise N3Error(f"{last_path} exists; pass --resume to continue that run or choose another --out")
    cfg.validate()
    if state is None and cfg.init and not Path(cfg.init).is_file():
        raise N3Error(f"--init: weights file not found: {cfg.init}")
    spec = NoiseSpec.parse(cfg.noise) if cfg.task == "denoise" else NoiseSpec(0.0)
    gen = torch.Generator()
    gen.manual_seed(cfg.seed)
    model = build_model(cfg, spec.in_planes)
    dncnn_init(model, gen)  # deterministic from the seed, identical on every rank
    gen.manual_seed(cfg.seed * 1000 + d.rank)  # then each rank draws its own crops
    if state is None and cfg.init:
        load_initial_weights(model, Path(cfg.init))
    model.to(dev)
    model = model.to(memory_format=torch.channels_last)  # faster convolutions (CPU: 4.6 -> 4.4 s per step)
    groups = param_groups(model, cfg.weight_decay)
    opt = make_optimizer(cfg, groups)
    step, best, seconds, cpu_seconds = 0, -math.inf, 0.0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if isinstance(opt, torch.optim.Adam):  # loading restores the stored groups' flags: a switch wins
            for g in opt.param_groups:
                g["decoupled_weight_decay"] = optimizer_name(cfg) == "adamw"
        step, best, seconds = state["step"], state["best"], state["train_seconds"]
        cpu_seconds = state.get("cpu_seconds", seconds)  # older checkpoints: wall time only
        restore_rng(gen, state["rng"], d.rank, cfg.seed, step)
    averager = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
    if averager is not None and state is not None and "ema" in state:
        averager.load_state_dict(state["ema"], int(state.get("ema_updates", 0)))
    net: nn.Module = model
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(model)
    bank = training_bank(cfg)
    validator: Validator | SRValidator | None = None
    if cfg.val and d.main:
        validator = Validator(cfg.val, cfg.val_limit, cfg, spec) if cfg.task == "denoise" else \
            SRValidator(cfg.val, cfg.val_limit)
    crop = crop_size(cfg)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.json", json.dumps(asdict(cfg), indent=2) + "\n")
        if state is not None and (dropped := trim_to_step(log_path, step)):
            print(f"resuming at step {step}: dropped {dropped} log records written after that checkpoint",
                  file=sys.stderr)
    revived: dict[str, int] = {}
    if revive:  # same probe batch and redraw seed on every rank: the ranks stay identical
        redraw = torch.Generator()
        redraw.manual_seed(cfg.seed * 7919 + step)
        batches = [(x.to(dev), t.to(dev)) for x, t in calibration_batches(cfg, bank, 1 + REVIVE_GRADIENT_BATCHES,
                                                                          seed=step)]
        revived = revive_silent_channels(model, batches[0][0], redraw, opt, gradient_batches=batches[1:])
        if averager is not None and averager.updates == 0:  # a new average starts from the revived weights
            averager = WeightAverage(model, cfg.ema)

    def log(record: dict[str, Any]) -> None:
        if not d.main:
            return
        with log_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if on_log is not None:
            on_log(record)

    def save(path: Path, gather: bool = True, weights: dict[str, Tensor] | None = None) -> None:
        """Checkpoint; with ``gather`` every rank must call it (RNG states of all ranks are kept)."""
        states = _rng_state(gen, d) if gather else [gen.get_state()]
        if d.main:
            checkpoint.save_atomic({
                "model": model.state_dict() if weights is None else weights, "optimizer": opt.state_dict(),
                "step": step, "best": best,
                "train_seconds": seconds, "cpu_seconds": cpu_seconds, "rng": states, "train_config": asdict(cfg),
                "net_config": model.config.to_dict(), "noise": spec.describe(),
                **({"ema": averager.state_dict(model), "ema_updates": averager.updates} if averager and weights is None
                   else {}),
            }, path)

    def evaluate(validator: Validator | SRValidator) -> None:
        """Validate a copy with precise BN statistics (the run's own state is untouched), and the weight
        average likewise when there is one; keep the best of either in best.pt."""
        nonlocal best

        def measure(net: nn.Module) -> tuple[float, nn.Module]:
            probe = copy.deepcopy(net)
            if cfg.precise_bn > 0:
                recalibrate_bn(probe, (x.to(dev) for x in calibration_inputs(cfg, bank, cfg.precise_bn)))
            return validator(probe, dev), probe

        threads = torch.get_num_threads()
        if d.world > 1 and dev.type == "cpu":  # the other processes wait for this one: it borrows their cores
            torch.set_num_threads(threads * d.world)
        try:
            psnr, probe = measure(model)
            psnr_ema, probe_ema = measure(averager.averaged(model)) if averager is not None else (0.0, None)
        finally:
            torch.set_num_threads(threads)
        silent = silent_fraction(probe, next(calibration_inputs(cfg, bank, 1)).to(dev))
        record: dict[str, Any] = {"step": step, "val_psnr": psnr}
        candidates = [(psnr, probe)]
        if averager is not None and probe_ema is not None:
            record.update(val_psnr_ema=psnr_ema, ema_decay=round(averager.current_decay(), 6))
            candidates.append((psnr_ema, probe_ema))
        log({**record, "val_sigma": validator.sigma, "task": cfg.task, "precise_bn": cfg.precise_bn,
             "silent_channels": round(silent, 4), **({"val_nlf": list(validator.nlf)} if validator.nlf else {})})
        top, top_probe = max(candidates, key=lambda c: c[0])
        if top > best:
            best = top
            save(best_path, gather=False, weights=top_probe.state_dict())

    if revive:
        log({"step": step, "revived": sum(revived.values()), "revived_by_layer": revived})

    stop = {"flag": False}

    def _on_signal(signum: int, frame: Any) -> None:
        stop["flag"] = True

    old_handlers = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    amp = autocast_for(cfg.precision, dev)
    net.train()
    last_save = time.monotonic()
    steps_this_call = 0
    window_t, window_n, loss_acc = time.monotonic(), 0, 0.0
    try:
        while step < cfg.steps and not (cfg.budget_hours and cpu_seconds >= cfg.budget_hours * 3600.0):
            t0, c0 = time.monotonic(), time.process_time()
            x, target = make_batch(cfg, spec, bank.crops(cfg.batch_size, crop, gen), gen)
            x, target = x.to(dev), target.to(dev)
            lr = learning_rate(cfg, step, cpu_seconds)
            for g in opt.param_groups:
                g["lr"] = lr
            if amp is not None:
                with amp:
                    pred = net(x)
            else:
                pred = net(x)
            err = (pred.float() - target).square()
            if cfg.loss == "nmse":  # every noise level (sr: every scale) weighs alike, in dB
                weights = sr_sample_weights(x, target) if cfg.task == "sr" else sample_weights(x, target, spec)
                objective = (err.mean(dim=(1, 2, 3)) * weights).mean()
            else:
                objective = err.mean()
            opt.zero_grad(set_to_none=True)
            objective.backward()
            if isinstance(opt, torch.optim.SGD) and cfg.grad_clip > 0:
                nn.utils.clip_grad_value_(model.parameters(), cfg.grad_clip / lr)
            opt.step()
            if averager is not None:
                averager.update(model)
            step += 1
            steps_this_call += 1
            seconds += time.monotonic() - t0
            cpu_step = torch.tensor([time.process_time() - c0], dtype=torch.float64)  # all threads' CPU time
            if d.world > 1:  # the budget in CPU-hours counts every process, and all of them agree on it
                dist.all_reduce(cpu_step)
            cpu_seconds += cpu_step.item()
            loss_acc += objective.item()
            window_n += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.monotonic()
                rate = window_n / max(now - window_t, 1e-9)
                log({"step": step, "steps": cfg.steps, "loss": loss_acc / window_n, "lr": lr, "steps_per_s": rate,
                     "train_seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1)})
                window_t, window_n, loss_acc = now, 0, 0.0
            if validator is not None and step % cfg.eval_every == 0:
                evaluate(validator)
            want_save = time.monotonic() - last_save > cfg.checkpoint_minutes * 60
            want_stop = stop["flag"] or (stop_after is not None and steps_this_call >= stop_after)
            if d.world > 1:  # every rank takes the same decisions
                flags = torch.tensor([float(want_save), float(want_stop)])
                dist.all_reduce(flags, op=dist.ReduceOp.MAX)
                want_save, want_stop = bool(flags[0]), bool(flags[1])
            if want_save:
                save(last_path)
                last_save = time.monotonic()
            if want_stop:
                break
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
    finished = step >= cfg.steps or bool(cfg.budget_hours and cpu_seconds >= cfg.budget_hours * 3600.0)
    if validator is not None and finished and step % cfg.eval_every != 0:  # the final model is always measured
        evaluate(validator)
    save(last_path)
    if d.main and stop["flag"]:
        print(f"interrupted: state saved at step {step} in {last_path}", file=sys.stderr)
    return last_path
