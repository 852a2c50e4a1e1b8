"""The trainer: set a run up (new or resumed), take steps, evaluate, checkpoint; optionally distributed."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..atomic import write_text_atomic
from ..errors import N3Error
from ..nn.n3 import set_bf16_cnns_in_training
from ..nn.narrow import use_narrow_convs
from ..nn.nets import BUILDERS, N3Net
from . import checkpoint
from .config import RESUME_SWITCHES, TrainConfig, coerce
from .data import ImageBank
from .ema import WeightAverage
from .frozen_bn import freeze_batchnorm
from .health import revive_silent_channels, silent_fraction
from .optim import autocast_for, dncnn_init, learning_rate, make_optimizer, optimizer_name, param_groups
from .precise_bn import recalibrate_bn
from .runlog import records, trim_to_step
from .tasks import Batch, Task, Validation, same_kind, task_for
from .widen import color_from_gray

#: Training batches whose gradients set the Adam second moments of revived channels (``revive``).
REVIVE_GRADIENT_BATCHES = 4
#: Seed of the batches drawn for BN statistics and probes (the run's own generator is untouched).
CALIBRATION_SEED = 20181203


def run_task(cfg: TrainConfig) -> Task:
    return task_for(cfg.task, cfg.noise, cfg.patch)


def training_bank(cfg: TrainConfig) -> ImageBank:
    """The run's training images, decoded once as gray (the task says which luma)."""
    return ImageBank(cfg.data, min_size=1, luma=run_task(cfg).luma)


def crop_size(cfg: TrainConfig) -> int:
    """Side of the clean crops drawn per sample (sr needs a margin for the resampling, CFA planes twice
    the patch)."""
    return run_task(cfg).crop_size(cfg.patch)


def calibration_batches(cfg: TrainConfig, bank: ImageBank, n: int, seed: int = CALIBRATION_SEED) -> Iterator[Batch]:
    """``n`` batches drawn as in training, from a generator of their own."""
    task = run_task(cfg)
    gen = torch.Generator()
    gen.manual_seed(seed)
    for _ in range(n):
        yield task.batch(bank.crops(cfg.batch_size, task.crop_size(cfg.patch), gen), gen)


def calibration_inputs(cfg: TrainConfig, bank: ImageBank, n: int, seed: int = CALIBRATION_SEED
                       ) -> Iterator[tuple[Tensor, ...]]:
    """The model inputs (forward's arguments) of :func:`calibration_batches`."""
    return (b.inputs for b in calibration_batches(cfg, bank, n, seed))


def build_model(cfg: TrainConfig, in_planes: int, noise_inputs: int = 0, out_channels: int = 1) -> N3Net:
    """The run's network: ``in_planes`` input channels, of which ``noise_inputs`` the model builds itself; its
    narrow convolutions train through the C kernels on the CPU (:mod:`n3cli.nn.narrow`)."""
    try:
        model = BUILDERS[cfg.arch](in_channels=in_planes, out_channels=out_channels, noise_inputs=noise_inputs,
                                   **cfg.model)
    except (TypeError, ValueError) as exc:  # builder overrides from the run's settings (model.KEY)
        raise N3Error(f"invalid model options {cfg.model}: {exc}") from None
    return use_narrow_convs(model)


def load_initial_weights(model: nn.Module, path: Path) -> None:
    """``init``: a new run starts from trained weights (fine-tuning); the optimizer and schedule start fresh.

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
        if isinstance(model, N3Net) and model.config.out_channels == 3 and \
                weights.get("blocks.0.conv1.weight", torch.empty(0, 0)).shape[1] == 3:
            color_from_gray(weights, model)  # a colour run started from a gray conditional model
        else:
            model.load_state_dict(weights)
    except (RuntimeError, ValueError) as exc:
        raise N3Error(f"--init: {path} does not fit this run's model ({str(exc).splitlines()[0]}); "
                      "use the same --arch and --noise kind") from None


def _repointed(cfg: TrainConfig, data: Any, val: Any, announce: bool = True) -> TrainConfig:
    """A resumed run's folders where they are now: ``data`` (any given folders: the run's images elsewhere, or
    others by choice) and ``val`` (only in place of a stored validation folder that is gone, as in a moved run: the
    run's best score was measured on it)."""
    if data:
        folders = coerce("data", data)
        if folders != cfg.data:
            if announce:
                print(f"training data: {', '.join(folders)} (the run had {', '.join(cfg.data)})", file=sys.stderr)
            cfg = cfg.with_overrides(data=folders)
    if val is not None and str(val) != cfg.val:
        if cfg.val is None or Path(cfg.val).is_dir():
            raise N3Error(f"--resume keeps the run's validation folder ({cfg.val}); --val may only point a moved "
                          "run at its validation images when the stored folder is gone")
        cfg = cfg.with_overrides(val=str(val))
    return cfg


def resume_config(stored: dict[str, Any], out: Path, step: int, switches: dict[str, Any],
                  announce: bool = True) -> TrainConfig:
    """A checkpoint's run settings in the folder ``out`` (a run may be moved or copied), with the switches
    a resumed run may make (:data:`n3cli.train.config.RESUME_SWITCHES`)."""
    cfg = TrainConfig.from_dict({**stored, "out": str(out)})
    cfg = _repointed(cfg, switches.get("data"), switches.get("val"), announce)
    # the folder is the run's own; settings as stored are no change (a run file)
    switches = {k: v for k, v in switches.items() if v is not None and k not in ("out", "data", "val")}
    switches = {k: v for k, v in switches.items() if k in RESUME_SWITCHES or coerce(k, v) != getattr(cfg, k)}
    fixed = sorted(set(switches) - set(RESUME_SWITCHES))
    if fixed:
        raise N3Error(f"--resume continues the run as it was: {', '.join(fixed)} cannot change "
                      f"(switchable: {', '.join(RESUME_SWITCHES)})")
    if "steps" in switches and switches["steps"] < step:
        raise N3Error(f"--steps {switches['steps']} is below the run's current step {step}")
    if "noise" in switches and str(switches["noise"]) != cfg.noise:
        old_task, new_task = task_for(cfg.task, cfg.noise, cfg.patch), task_for(cfg.task, str(switches["noise"]),
                                                                               cfg.patch)
        # the model's planes and the validation (hence the run's best score) must stay as they were
        if not same_kind(old_task, new_task):
            raise N3Error(f"--resume can change the noise only within its kind (same model planes, same "
                          f"validation): not {cfg.noise!r} to {switches['noise']!r}")
    new_opt, old_opt = switches.get("optimizer"), optimizer_name(cfg)
    if new_opt is not None and new_opt != old_opt and {new_opt, old_opt} != {"adam", "adamw"}:
        raise N3Error(f"--resume can switch between adam and adamw only, not {old_opt} to {new_opt}")
    return cfg.with_overrides(**switches)


def restore_rng(gen: torch.Generator, states: list[Tensor], rank: int, seed: int, step: int) -> None:
    """Set a rank's crop generator from a checkpoint. A rank the saved run did not have (resumed under more
    processes) gets a stream of its own: reusing another rank's state would repeat that rank's crops."""
    if rank < len(states):
        gen.set_state(states[rank])
    else:
        gen.manual_seed(seed * 1000 + rank + 1_000_003 * (step + 1))


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


@dataclass
class Progress:
    """Where a run stands: steps, best validation, seconds (wall and CPU of every process)."""

    step: int = 0
    best: float = -math.inf
    seconds: float = 0.0
    cpu_seconds: float = 0.0


class Trainer:
    """One run: :meth:`setup` builds (or restores) it, :meth:`step` trains a batch, :meth:`evaluate` validates,
    :meth:`checkpoint` saves; :meth:`run` loops them."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, device: str | torch.device = "cpu",
                 on_log: Callable[[dict[str, Any]], None] | None = None, switches: dict[str, Any] | None = None
                 ) -> None:
        self.device = torch.device(device)
        self.dist = _init_distributed(self.device)
        self.out = Path(cfg.out)
        self.last_path, self.best_path = self.out / "last.pt", self.out / "best.pt"
        self.log_path = self.out / "log.jsonl"
        self.on_log = on_log
        self.setup(cfg, resume, switches or {})

    # --- setup ------------------------------------------------------------------------------

    def setup(self, cfg: TrainConfig, resume: bool, switches: dict[str, Any]) -> None:
        state = self._load_state(resume)
        if state is not None:
            cfg = resume_config(state["train_config"], self.out, state["step"], switches, announce=self.dist.main)
        else:
            cfg = cfg.with_overrides(**{k: v for k, v in switches.items() if v is not None})
        cfg.validate()
        if state is None and cfg.init and not Path(cfg.init).is_file():
            raise N3Error(f"--init: weights file not found: {cfg.init}")
        self.cfg, self.task = cfg, run_task(cfg)
        self._build_model(state)
        try:
            self.bank = training_bank(cfg)
            self.validation: Validation | None = None
            if cfg.val and self.dist.main:
                self.validation = self.task.validation(cfg.val, cfg.val_limit, cfg.val_sigma)
        except N3Error as exc:
            if state is None or switches.get("data") or switches.get("val") is not None:
                raise
            raise N3Error(f"{exc} (as the run stored it, relative to where it started; point a moved run at its "
                          "images with --data FOLDER and --val FOLDER)") from None
        # a finished run, measured at its end, is left as it is (not validated and logged again)
        self._resumed_at_end = state is not None and self.finished and self._end_measured()
        if self.dist.main and not self._resumed_at_end:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.out / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
            if state is not None and (dropped := trim_to_step(self.log_path, self.progress.step)):
                print(f"resuming at step {self.progress.step}: dropped {dropped} log records written after that "
                      "checkpoint", file=sys.stderr)

    @property
    def resumed_finished(self) -> bool:
        """Whether a resumed run had already reached its end, and its final model been measured, when this call
        started."""
        return self._resumed_at_end

    def _end_measured(self) -> bool:
        """Whether the log holds the validation of the current step (a run killed during its final validation,
        after a timed checkpoint at its last step, has none). Runs without validation have nothing to measure."""
        if not self.cfg.val:
            return True
        return any(r.get("step") == self.progress.step and "val_psnr" in r for r in records(self.log_path))

    def _load_state(self, resume: bool) -> dict[str, Any] | None:
        if resume and self.last_path.exists():
            return checkpoint.load(self.last_path)
        if not resume and self.last_path.exists():
            raise N3Error(f"{self.last_path} exists; pass --resume to continue that run or choose another --out")
        # A run that ended before its first checkpoint: a new one would mix its log and best.pt in. (The main
        # process only: it writes config.json, which another rank could otherwise find here.)
        stale = [name for name in ("config.json", "log.jsonl", "best.pt") if (self.out / name).exists()]
        if stale and self.dist.main:
            raise N3Error(f"{self.out} holds another run's {', '.join(stale)} but no checkpoint (last.pt); remove "
                          "them or choose another --out")
        if resume and self.dist.main:
            print(f"no checkpoint in {self.out}; starting a new run", file=sys.stderr)
        return None

    def _build_model(self, state: dict[str, Any] | None) -> None:
        """Model (seeded initialisation, identical on every rank), optimizer, weight average, crop generator."""
        cfg, d = self.cfg, self.dist
        self.gen = torch.Generator()
        self.gen.manual_seed(cfg.seed)
        model = build_model(cfg, self.task.in_planes, self.task.noise_inputs, self.task.channels)
        set_bf16_cnns_in_training(model, cfg.precision == "bf16-all")
        dncnn_init(model, self.gen)
        self.gen.manual_seed(cfg.seed * 1000 + d.rank)  # then each rank draws its own crops
        if state is None and cfg.init:
            load_initial_weights(model, Path(cfg.init))
        if cfg.freeze_bn:  # before the optimizer and the weight average take the parameters
            freeze_batchnorm(model)
        self.model = model.to(self.device).to(memory_format=torch.channels_last)  # faster convolutions
        self.opt = make_optimizer(cfg, param_groups(self.model, cfg.weight_decay))
        self.progress = Progress()
        if state is not None:
            self._restore(state)
        self.averager = WeightAverage(self.model, cfg.ema) if cfg.ema > 0 else None
        if self.averager is not None and state is not None and "ema" in state:
            self.averager.load_state_dict(state["ema"], int(state.get("ema_updates", 0)))
        self.net: nn.Module = nn.parallel.DistributedDataParallel(self.model) if d.world > 1 else self.model

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])  # old checkpoints: the same weights, planes now built inside
        self.opt.load_state_dict(state["optimizer"])
        if isinstance(self.opt, torch.optim.Adam):  # loading restores the stored groups' flags: a switch wins
            for g in self.opt.param_groups:
                g["decoupled_weight_decay"] = optimizer_name(self.cfg) == "adamw"
        p = self.progress
        p.step, p.best, p.seconds = state["step"], state["best"], state["train_seconds"]
        p.cpu_seconds = state.get("cpu_seconds", p.seconds)  # older checkpoints: wall time only
        restore_rng(self.gen, state["rng"], self.dist.rank, self.cfg.seed, p.step)

    def revive(self) -> None:
        """Redraw the local blocks' silent channels with the output kept
        (:func:`n3cli.train.health.revive_silent_channels`); logged as a ``revived`` record. The same probe
        batches and redraw seed on every rank: the ranks stay identical."""
        step = self.progress.step
        redraw = torch.Generator()
        redraw.manual_seed(self.cfg.seed * 7919 + step)
        batches = [b.to(self.device) for b in calibration_batches(self.cfg, self.bank, 1 + REVIVE_GRADIENT_BATCHES,
                                                                 seed=step)]
        revived = revive_silent_channels(self.model, batches[0].inputs, redraw, self.opt,
                                         gradient_batches=[(b.inputs, b.target) for b in batches[1:]])
        if self.averager is not None and self.averager.updates == 0:  # a new average starts from the revived weights
            self.averager = WeightAverage(self.model, self.cfg.ema)
        self.log({"step": step, "revived": sum(revived.values()), "revived_by_layer": revived})

    # --- steps --------------------------------------------------------------------------------

    def step(self, amp: torch.autocast | None = None) -> tuple[float, float]:
        """One optimiser step on a fresh batch; returns (loss, learning rate)."""
        cfg, p = self.cfg, self.progress
        t0, c0 = time.monotonic(), time.process_time()
        batch = self.task.batch(self.bank.crops(cfg.batch_size, self.task.crop_size(cfg.patch), self.gen), self.gen)
        batch = batch.to(self.device)
        lr = learning_rate(cfg, p.step, p.cpu_seconds)
        for g in self.opt.param_groups:
            g["lr"] = lr
        if amp is not None:
            with amp:
                pred = self.net(*batch.inputs)
        else:
            pred = self.net(*batch.inputs)
        err = (pred.float() - batch.target).square()
        if cfg.loss == "nmse":  # every noise level (sr: every scale) weighs alike, in dB
            floor = (cfg.nmse_floor / 255.0) ** 2
            blind = None if cfg.nmse_blind_floor is None else (cfg.nmse_blind_floor / 255.0) ** 2
            objective = (err.mean(dim=(1, 2, 3)) * self.task.loss_weights(batch, floor, blind)).mean()
        else:
            objective = err.mean()
        self.opt.zero_grad(set_to_none=True)
        objective.backward()
        if isinstance(self.opt, torch.optim.SGD) and cfg.grad_clip > 0:
            nn.utils.clip_grad_value_(self.model.parameters(), cfg.grad_clip / lr)
        self.opt.step()
        if self.averager is not None:
            self.averager.update(self.model)
        p.step += 1
        p.seconds += time.monotonic() - t0
        cpu_step = torch.tensor([time.process_time() - c0], dtype=torch.float64)  # all threads' CPU time
        if self.dist.world > 1:  # the budget in CPU-hours counts every process, and all of them agree on it
            dist.all_reduce(cpu_step)
        p.cpu_seconds += cpu_step.item()
        return objective.item(), lr

    @property
    def finished(self) -> bool:
        cfg, p = self.cfg, self.progress
        return p.step >= cfg.steps or bool(cfg.budget_hours and p.cpu_seconds >= cfg.budget_hours * 3600.0)

    def log(self, record: dict[str, Any]) -> None:
        if not self.dist.main:
            return
        with self.log_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.on_log is not None:
            self.on_log(record)

    # --- evaluation and checkpoints -------------------------------------------------------------

    def _measure(self, net: nn.Module) -> tuple[float, nn.Module]:
        """PSNR of a copy of ``net`` with precise BN statistics (the run's own state is untouched)."""
        assert self.validation is not None
        probe = copy.deepcopy(net)
        if self.cfg.validation_bn_batches > 0:
            inputs = calibration_inputs(self.cfg, self.bank, self.cfg.validation_bn_batches)
            recalibrate_bn(probe, (tuple(t.to(self.device) for t in x) for x in inputs))
        return self.validation(probe, self.device), probe

    def evaluate(self) -> None:
        """Validate the weights, and the weight average likewise when there is one; keep the best of either
        in best.pt."""
        if self.validation is None:
            return
        cfg, d, p = self.cfg, self.dist, self.progress
        threads = torch.get_num_threads()
        if d.world > 1 and self.device.type == "cpu":  # the other processes wait for this one: it borrows their cores
            torch.set_num_threads(threads * d.world)
        try:
            candidates = [self._measure(self.model)]
            if self.averager is not None:
                candidates.append(self._measure(self.averager.averaged(self.model)))
        finally:
            torch.set_num_threads(threads)
        probe_in = tuple(t.to(self.device) for t in next(calibration_inputs(cfg, self.bank, 1)))
        record: dict[str, Any] = {"step": p.step, "val_psnr": candidates[0][0]}
        if self.averager is not None:
            record.update(val_psnr_ema=candidates[1][0], ema_decay=round(self.averager.current_decay(), 6))
        self.log({**record, "task": cfg.task, "precise_bn": cfg.validation_bn_batches,
                  "silent_channels": round(silent_fraction(candidates[0][1], probe_in), 4),
                  **self.validation.fields})
        top, top_probe = max(candidates, key=lambda c: c[0])
        if top > p.best:
            p.best = top
            self.checkpoint(self.best_path, gather=False, weights=top_probe.state_dict())

    def _rng_states(self, gather: bool) -> list[Tensor]:
        state = self.gen.get_state()
        if not gather or self.dist.world == 1:
            return [state]
        states: list[Any] = [None] * self.dist.world
        dist.all_gather_object(states, state)
        return states

    def checkpoint(self, path: Path, gather: bool = True, weights: dict[str, Tensor] | None = None) -> None:
        """Save the run; with ``gather`` every rank must call it (RNG states of all ranks are kept)."""
        states = self._rng_states(gather)
        if not self.dist.main:
            return
        p, avg = self.progress, self.averager
        checkpoint.save_atomic({
            "model": self.model.state_dict() if weights is None else weights, "optimizer": self.opt.state_dict(),
            "step": p.step, "best": p.best, "train_seconds": p.seconds, "cpu_seconds": p.cpu_seconds,
            "rng": states, "train_config": self.cfg.to_dict(), "net_config": self.model.config.to_dict(),
            "noise": self.task.describe(),
            **({"ema": avg.state_dict(self.model), "ema_updates": avg.updates} if avg and weights is None else {}),
        }, path)

    # --- the loop -------------------------------------------------------------------------------

    def run(self, stop_after: int | None = None) -> Path:
        """Train until the run is finished, ``stop_after`` steps were taken in this call, or a signal came;
        returns the path of the last checkpoint."""
        stop = {"flag": False}
        handlers = {s: signal.signal(s, lambda *_: stop.__setitem__("flag", True)) for s in (signal.SIGINT,
                                                                                              signal.SIGTERM)}
        try:
            self._loop(stop, stop_after)
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
        if self.finished and self.progress.step % self.cfg.eval_every != 0:  # the final model is always measured
            self.evaluate()
        self.checkpoint(self.last_path)
        if self.dist.main and stop["flag"]:
            print(f"interrupted: state saved at step {self.progress.step} in {self.last_path}", file=sys.stderr)
        return self.last_path

    def _loop(self, stop: dict[str, bool], stop_after: int | None) -> None:
        cfg, p = self.cfg, self.progress
        amp = autocast_for(cfg.precision, self.device)
        self.net.train()
        last_save = time.monotonic()
        taken = 0
        window_t, window_n, loss_acc = time.monotonic(), 0, 0.0
        while not self.finished:
            loss, lr = self.step(amp)
            taken += 1
            loss_acc += loss
            window_n += 1
            if p.step % cfg.log_every == 0 or p.step == cfg.steps:
                now = time.monotonic()
                self.log({"step": p.step, "steps": cfg.steps, "loss": loss_acc / window_n, "lr": lr,
                          "steps_per_s": window_n / max(now - window_t, 1e-9), "train_seconds": round(p.seconds, 1),
                          "cpu_seconds": round(p.cpu_seconds, 1)})
                window_t, window_n, loss_acc = now, 0, 0.0
            if p.step % cfg.eval_every == 0:
                self.evaluate()
            want_save = time.monotonic() - last_save > cfg.checkpoint_minutes * 60
            want_stop = stop["flag"] or (stop_after is not None and taken >= stop_after)
            if self.dist.world > 1:  # every rank takes the same decisions
                flags = torch.tensor([float(want_save), float(want_stop)])
                dist.all_reduce(flags, op=dist.ReduceOp.MAX)
                want_save, want_stop = bool(flags[0]), bool(flags[1])
            if want_save:
                self.checkpoint(self.last_path)
                last_save = time.monotonic()
            if want_stop:
                break


def train(cfg: TrainConfig, *, resume: bool = False, device: str | torch.device = "cpu",
          stop_after: int | None = None, on_log: Callable[[dict[str, Any]], None] | None = None,
          revive: bool = False, **switches: Any) -> Path:
    """Train (or continue) a run in ``cfg.out``; returns the path of the last checkpoint.

    ``switches``: settings to change (on resume only those of :data:`~n3cli.train.config.RESUME_SWITCHES`,
    e.g. ``steps`` a new length, ``lr`` a new initial rate: the schedule follows them from the current step).
    ``stop_after``: stop (with a checkpoint) after this many steps in this call, as if killed.
    ``revive``: before the first step, redraw the local blocks' silent channels (:meth:`Trainer.revive`).
    """
    ours = dist.is_available() and not dist.is_initialized()  # a process group this call starts, it also ends
    finished = False
    try:
        trainer = Trainer(cfg, resume=resume, device=device, on_log=on_log, switches=switches)
        if resume and trainer.resumed_finished:  # measured and saved at its end already: nothing to do
            if trainer.dist.main:
                step, c = trainer.progress.step, trainer.cfg
                why = (f"its budget of {c.budget_hours:g} CPU-hours is spent" if step < c.steps else
                       f"step {step} of {c.steps}; give a longer --steps to extend it")
                print(f"the run in {trainer.out} is finished ({why}); nothing was changed", file=sys.stderr)
            finished = True
            return trainer.last_path
        if revive:
            trainer.revive()
        last = trainer.run(stop_after)
        finished = True
        return last
    finally:
        if ours and dist.is_initialized():
            _end_distributed(wait=finished)


def _end_distributed(*, wait: bool) -> None:
    """Leave the process group before the interpreter exits: left to exit-time destructors, gloo's threads can
    abort a process whose work is done ('terminate called without an active exception'). ``wait``: first a barrier,
    so that no rank leaves while another still saves; a barrier that fails (a peer gone) is reported, not raised, so
    that it neither hides this rank's result or error nor keeps the group from being left."""
    try:
        if wait:
            dist.barrier()
    except RuntimeError as exc:
        print(f"warning: the processes' final barrier failed ({str(exc).splitlines()[0]})", file=sys.stderr)
    finally:
        dist.destroy_process_group()
