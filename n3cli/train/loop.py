"""The names older code imports from here (benchmarks, scripts): the run lives in :mod:`.trainer`,
its settings in :mod:`.config`, the optimiser and schedule in :mod:`.optim`, the tasks in :mod:`.tasks`."""

from __future__ import annotations

from .config import ARCHS, LOSSES, OPTIMIZERS, PRECISIONS, TrainConfig
from .optim import autocast_for, dncnn_init, learning_rate, make_optimizer, native_bf16, optimizer_name, param_groups
from .trainer import (
                    REVIVE_GRADIENT_BATCHES,
                    Trainer,
                    build_model,
                    calibration_batches,
                    calibration_inputs,
                    crop_size,
                    load_initial_weights,
                    restore_rng,
                    train,
                    training_bank,
)

__all__ = ["ARCHS", "LOSSES", "OPTIMIZERS", "PRECISIONS", "REVIVE_GRADIENT_BATCHES", "TrainConfig", "Trainer",
           "autocast_for", "build_model", "calibration_batches", "calibration_inputs", "crop_size", "dncnn_init",
           "learning_rate", "load_initial_weights", "make_optimizer", "native_bf16", "optimizer_name", "param_groups",
           "restore_rng", "train", "training_bank"]
