"""Export of a training run to shipped weights: the model of a checkpoint with its training facts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import N3Error
from ..nn.nets import N3Net, build
from ..weights import ModelInfo, WeightsError
from .checkpoint import load
from .config import TrainConfig
from .optim import optimizer_name
from .precise_bn import recalibrate_bn
from .tasks import Task, same_kind
from .trainer import calibration_inputs, run_task, training_bank

#: Calibration batches of an export when none are given (a run that kept its BN statistics fixed: none).
DEFAULT_PRECISE_BN = 100


def export_run(checkpoint_path: Path, name: str, precise_bn: int | None = 0, ema: bool = False,
               bn_noise: str | None = None) -> tuple[N3Net, ModelInfo]:
    """Model and facts of a training checkpoint, ready to save as safetensors.

    ``precise_bn``: recompute the BN statistics from this many batches drawn from the run's training
    data (:mod:`n3cli.train.precise_bn`) instead of keeping the running averages (None: 100, or 0 for a run
    with fixed statistics).
    ``bn_noise``: draw those batches with this training noise (of the run's kind) instead of the run's own,
    e.g. a larger share of simulated camera photos (for a blind model this sets how much noise it removes).
    ``ema``: export the run's moving average of the weights (``ema`` setting) instead of its last
    weights; its BN statistics must then be recomputed (``precise_bn`` > 0), unless the run kept them fixed
    (``freeze_bn``: then they are the model's and ``precise_bn`` is refused).
    """
    state = load(Path(checkpoint_path))
    if ema and "ema" not in state:
        raise WeightsError(f"{checkpoint_path} holds no weight average (train with --ema to keep one)")
    try:
        tcfg = TrainConfig.from_dict(state["train_config"])
        task = run_task(tcfg)
        # checkpoints written before the model built its noise planes have no noise_inputs: the task says
        model = build({**state["net_config"], "noise_inputs": task.noise_inputs})
        model.load_state_dict(state["ema" if ema else "model"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise WeightsError(f"{checkpoint_path} is not an n3 training checkpoint ({exc})") from None
    if precise_bn is None:
        precise_bn = 0 if tcfg.freeze_bn else DEFAULT_PRECISE_BN
    if tcfg.freeze_bn and precise_bn > 0:
        raise WeightsError(f"{checkpoint_path} was trained with fixed BN statistics (freeze_bn): they are part of "
                           "the model; export without --precise-bn")
    if ema and precise_bn <= 0 and not tcfg.freeze_bn:
        raise WeightsError("--ema needs --precise-bn > 0: the BN statistics of averaged weights must be recomputed")
    calibration = tcfg if bn_noise is None else _calibration_config(tcfg, task, bn_noise, precise_bn)
    if precise_bn > 0:
        _recalibrate(model, calibration, precise_bn)
    training = _training_facts(state, tcfg, task, precise_bn, ema)
    if bn_noise is not None:
        training["precise_bn_noise"] = run_task(calibration).describe()
    info = ModelInfo(name=name, task=task.name, planes=task.plane_names,
                     sigma=task.sigma, training=training,
                     description=f"{tcfg.arch}{_overrides(tcfg.model)} trained with n3 train")
    return model.eval(), info


def _training_facts(state: dict[str, Any], cfg: TrainConfig, task: Task, precise_bn: int, ema: bool
                    ) -> dict[str, Any]:
    """What the registry says about how the weights were trained."""
    training = {
        "data": [Path(d).name for d in cfg.data], "steps": int(state["step"]), "planned_steps": cfg.steps,
        "batch_size": cfg.batch_size, "patch": cfg.patch, "schedule": cfg.schedule,
        "noise": state.get("noise", cfg.noise) if task.describe() is not None else None,
        "cpu_hours": round(float(state.get("cpu_seconds", state["train_seconds"])) / 3600.0, 2),
        "wall_hours": round(float(state["train_seconds"]) / 3600.0, 2), "seed": cfg.seed,
        "precise_bn_batches": precise_bn, "loss": cfg.loss,
        "optimizer": optimizer_name(cfg), "weight_decay": cfg.weight_decay,
    }
    if ema:  # the exported weights are the average, over about 1 / (1 - decay) steps
        training["weights"] = f"moving average, decay {cfg.ema:g}, {int(state.get('ema_updates', 0))} updates"
    if cfg.freeze_bn:
        training["bn_statistics"] = "fixed during training (freeze_bn): those of the init weights"
    if cfg.init:  # fine-tuned: the steps and hours above are this run's own, on top of those weights
        training["init"] = cfg.init
    return training


def _overrides(model: dict[str, Any]) -> str:
    """' (depth 10, features 32, bn True)' for a run's builder overrides, '' for the paper's defaults."""
    return " (" + ", ".join(f"{k} {v}" for k, v in sorted(model.items())) + ")" if model else ""


def _calibration_config(tcfg: TrainConfig, task: Task, bn_noise: str, precise_bn: int) -> TrainConfig:
    """The run's settings with the noise of the BN calibration batches swapped for ``bn_noise``."""
    if precise_bn <= 0:
        raise WeightsError("--bn-noise needs --precise-bn > 0: it says which batches recompute the BN statistics")
    try:
        cfg = tcfg.with_overrides(noise=bn_noise)
        other = run_task(cfg)
    except (N3Error, ValueError) as exc:
        raise WeightsError(f"--bn-noise: {exc}") from None
    if not same_kind(task, other):
        raise WeightsError(f"--bn-noise {bn_noise!r} is not a noise of the run's kind ({tcfg.noise!r})")
    return cfg


def _recalibrate(model: N3Net, tcfg: TrainConfig, batches: int) -> None:
    """Precise BN statistics of ``model`` from ``batches`` batches of the run's own training data."""
    missing = [d for d in tcfg.data if not Path(d).is_dir()]
    if missing:
        raise WeightsError(f"training data {missing[0]} not found (needed to recompute BN statistics; "
                           "run from the directory the run was started in, or pass --precise-bn 0)")
    recalibrate_bn(model, calibration_inputs(tcfg, training_bank(tcfg), batches))
    model.eval()
