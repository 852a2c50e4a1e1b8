"""Training health: how many feature channels of a network still carry a signal.

A channel is *silent* when its output after BatchNorm and ReLU is the same at every pixel of every
sample of a batch: either its ReLU never opens, or its BN input has no variance left. Its ReLU then
passes no gradient, so it stays silent. Under Adam with L2 weight decay (the paper's optimiser) the
decay term of such a channel is normalised like a gradient, which drives its weights to zero by about
the learning rate per step. ``n3 train`` logs :func:`silent_fraction` at each validation so that a
collapse is visible while it happens.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn

#: An output range (max - min over batch and pixels) at or below this counts as constant.
SILENT_RANGE = 1e-6


#: A model's input: the image batch, or forward's arguments ``(x, noise)`` of a noise-level-conditional model.
Inputs = Tensor | tuple[Tensor, ...]


def _forward(model: nn.Module, x: Inputs) -> Tensor:
    return model(*x) if isinstance(x, tuple) else model(x)


def _channels(out: Tensor) -> Tensor:
    """A (N, C, H, W) activation as (C, N*H*W) rows, one per channel."""
    return out.detach().float().transpose(0, 1).flatten(1)


def _constant(flat: Tensor, threshold: float) -> Tensor:
    """Which rows of :func:`_channels` are constant (output range at or below ``threshold``)."""
    return (flat.amax(1) - flat.amin(1)) <= threshold


def _eval_pass(model: nn.Module, x: Inputs, handles: list[torch.utils.hooks.RemovableHandle]) -> None:
    """One forward pass of ``x`` in eval mode for the given hooks, which are removed afterwards; the model's
    mode is restored."""
    was_training = model.training
    model.eval()
    try:
        _forward(model, x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()


def sequential_pairs(model: nn.Module) -> Iterator[tuple[nn.Module, nn.Module]]:
    """Consecutive children (a, b) of every ``nn.Sequential`` in ``model``: a's output goes straight into b."""
    for m in model.modules():
        if isinstance(m, nn.Sequential):
            kids = list(m.children())
            yield from zip(kids, kids[1:], strict=False)


def bn_relus(model: nn.Module) -> list[nn.ReLU]:
    """ReLU modules that directly follow a multi-channel ``BatchNorm2d`` in an ``nn.Sequential``."""
    return [b for a, b in sequential_pairs(model)
            if isinstance(a, nn.BatchNorm2d) and a.num_features > 1 and isinstance(b, nn.ReLU)]


@torch.no_grad()
def silent_by_layer(model: nn.Module, x: Inputs, threshold: float = SILENT_RANGE) -> dict[str, tuple[int, int]]:
    """(silent, total) channels of each BN + ReLU layer of ``model`` on the batch ``x`` (evaluated in eval
    mode), keyed by the ReLU's qualified name."""
    names = {id(m): n for n, m in model.named_modules()}
    counts: dict[str, tuple[int, int]] = {}

    def hook(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
        flat = _channels(out)
        counts[names[id(module)]] = (int(_constant(flat, threshold).sum()), flat.shape[0])

    _eval_pass(model, x, [r.register_forward_hook(hook) for r in bn_relus(model)])
    return counts


def silent_channels(model: nn.Module, x: Inputs, threshold: float = SILENT_RANGE) -> tuple[int, int]:
    """(silent, total) BN + ReLU channels of ``model`` on the batch ``x`` (evaluated in eval mode)."""
    layers = silent_by_layer(model, x, threshold).values()
    return sum(s for s, _ in layers), sum(t for _, t in layers)


def silent_fraction(model: nn.Module, x: Inputs, threshold: float = SILENT_RANGE) -> float:
    """Share of silent BN + ReLU channels on ``x`` (0: all carry a signal; nan: no such layers)."""
    silent, total = silent_channels(model, x, threshold)
    return silent / total if total else float("nan")


def _local_units(model: nn.Module) -> Iterator[tuple[str, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d,
                                                     nn.BatchNorm2d | None]]:
    """(name, conv, BN, ReLU, consumer conv, consumer's BN or None) for every conv + BN + ReLU layer of the
    local CNN blocks: the consumer is the next layer's convolution, or the block's output convolution."""
    from ..nn.nets import LocalBlock

    names = {id(m): n for n, m in model.named_modules()}
    for block in model.modules():
        if not isinstance(block, LocalBlock):
            continue
        layers = list(block.layer1)
        for j in range(len(layers) - 2):
            conv, bn, relu = layers[j: j + 3]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and isinstance(relu, nn.ReLU)):
                continue
            nxt = layers[j + 3] if j + 3 < len(layers) else block.conv2
            nxt_bn = layers[j + 4] if j + 4 < len(layers) and isinstance(layers[j + 4], nn.BatchNorm2d) else None
            yield names[id(relu)], conv, bn, relu, nxt, nxt_bn


def _reset_adam(optimizer: torch.optim.Optimizer | None, param: Tensor, revived: Tensor,
                grad_sq: Tensor | None = None) -> None:
    """Adam moments of the ``revived`` elements of ``param``: first moment 0; second moment the larger of
    ``grad_sq`` (their mean squared gradient measured after the redraw) and the mean of the tensor's other
    elements. Adam's bias correction counts the tensor's steps, not the element's: with a second moment of
    0 (or a live neighbour's, far below a fresh weight's gradient) a redrawn weight would move by many times
    the rate per step for its first hundreds of steps instead of by about the rate (docs/results.md)."""
    state = optimizer.state.get(param) if optimizer is not None else None
    if not state or "exp_avg" not in state:
        return
    state["exp_avg"][revived] = 0.0
    v = state["exp_avg_sq"]
    floor = v[~revived].mean() if (~revived).any() else v.new_zeros(())
    fresh = grad_sq[revived].to(v.dtype) if grad_sq is not None else v.new_zeros(int(revived.sum()))
    v[revived] = torch.maximum(fresh, floor)


def _mean_squared_gradients(model: nn.Module, batches: Iterable[tuple[Inputs, Tensor]]) -> dict[int, Tensor]:
    """Mean squared gradient of the MSE loss over ``batches`` (input, target) for each parameter (keyed by
    ``id``), computed on a copy in training mode so that the model's BN running statistics are untouched."""
    probe = copy.deepcopy(model)
    probe.train()
    pairs = list(zip(model.parameters(), probe.parameters(), strict=True))
    sums = {id(p): torch.zeros_like(p) for p, _ in pairs}
    n = 0
    with torch.enable_grad():
        for x, target in batches:
            probe.zero_grad(set_to_none=True)
            (_forward(probe, x).float() - target).square().mean().backward()
            for p, q in pairs:
                if q.grad is not None:
                    sums[id(p)] += q.grad.square()
            n += 1
    return {k: v / max(n, 1) for k, v in sums.items()}


@torch.no_grad()
def revive_silent_channels(model: nn.Module, x: Inputs, gen: torch.Generator,
                           optimizer: torch.optim.Optimizer | None = None,
                           gradient_batches: Iterable[tuple[Inputs, Tensor]] = (),
                           threshold: float = SILENT_RANGE) -> dict[str, int]:
    """Give the silent channels of the local CNN blocks new weights, keeping the network's output.

    A channel silent on the batch ``x`` (:func:`silent_by_layer`) is redrawn like ReDo (Sokar et al., 2023):
    incoming convolution Kaiming-normal, BN scale the median magnitude of the layer's live channels, BN shift 0,
    BN running statistics those of its new input on ``x``;
    its weights in the consuming convolution are set to 0, so it changes nothing until training grows them.
    The constant it used to send on (its ReLU's constant output times those weights) is moved into the
    consumer's BN running mean or bias, so the output is unchanged away from the image border (where zero
    padding made that constant's contribution uneven) and exactly unchanged where the constant was 0.
    The Adam moments of every redrawn element are reset (:func:`_reset_adam`), with second moments measured on
    ``gradient_batches`` (training pairs). Returns the count per layer.
    """
    units = list(_local_units(model))
    outs: dict[str, Tensor] = {}
    _eval_pass(model, x, [relu.register_forward_hook(lambda m, a, o, name=name: outs.__setitem__(name, _channels(o)))
                          for name, _, _, relu, _, _ in units])
    revived: dict[str, int] = {}
    fresh_bns: list[tuple[nn.BatchNorm2d, Tensor]] = []
    masks: list[tuple[Tensor, Tensor]] = []
    for name, conv, bn, _, nxt, nxt_bn in units:
        flat = outs[name]
        silent = _constant(flat, threshold)
        if not silent.any():
            continue
        idx = silent.nonzero().flatten()
        const = flat[idx, 0].to(nxt.weight.dtype)  # each silent channel's constant output
        w_out = nxt.weight[:, idx]  # (out, silent, kh, kw)
        shift = (w_out.sum(dim=(2, 3)) * const).sum(dim=1)  # what it added to each consumer output (interior)
        if nxt_bn is not None:
            nxt_bn.running_mean -= shift.to(nxt_bn.running_mean.dtype)
        elif nxt.bias is not None:
            nxt.bias += shift
        nxt.weight[:, idx] = 0.0
        fan_in = conv.weight[0].numel()
        fresh = torch.randn((len(idx), *conv.weight.shape[1:]), generator=gen) * math.sqrt(2.0 / fan_in)
        conv.weight[idx] = fresh.to(conv.weight.dtype)
        live = bn.weight[~silent].abs()
        bn.weight[idx] = live.median() if live.numel() else 0.025
        bn.bias[idx] = 0.0
        fresh_bns.append((bn, idx))
        mask_in = torch.zeros_like(conv.weight, dtype=torch.bool)
        mask_in[idx] = True
        mask_out = torch.zeros_like(nxt.weight, dtype=torch.bool)
        mask_out[:, idx] = True
        masks += [(conv.weight, mask_in), (bn.weight, silent), (bn.bias, silent), (nxt.weight, mask_out)]
        revived[name] = len(idx)
    _calibrate_channels(model, x, fresh_bns)
    if optimizer is not None and masks:
        grad_sq = _mean_squared_gradients(model, gradient_batches)
        for p, mask in masks:
            _reset_adam(optimizer, p, mask, grad_sq.get(id(p)))
    return revived


def _calibrate_channels(model: nn.Module, x: Inputs, channels: list[tuple[nn.BatchNorm2d, Tensor]]) -> None:
    """Running mean and variance of the given BN channels set to their input's statistics on ``x`` (one pass:
    redrawn channels send nothing on, so one layer's redraw does not change another's input)."""
    if not channels:
        return

    def hook(bn: nn.Module, args: tuple[Tensor, ...], idx: Tensor) -> None:
        z = args[0].detach().transpose(0, 1)[idx].flatten(1).to(bn.running_mean.dtype)
        bn.running_mean[idx] = z.mean(1)
        bn.running_var[idx] = z.var(1)

    _eval_pass(model, x, [bn.register_forward_pre_hook(lambda m, a, idx=idx: hook(m, a, idx)) for bn, idx in channels
                          if bn.running_mean is not None and bn.running_var is not None])
