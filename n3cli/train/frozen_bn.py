"""Batch norm with fixed statistics while training ("frozen BN", ``n3 train --set freeze_bn=true``).

In training mode BN normalises each batch by that batch's own mean and variance, and inference uses population
statistics recomputed afterwards (precise BN). For a model trained on a mix of noise levels the two differ, and
which batches the population statistics come from sets how much noise a blind model removes
(docs/real-photos.md, session 46). A frozen run keeps the statistics it started with (those of its ``--init``
weights) and trains every other parameter, the BN scales and shifts included: the function trained is then the
function measured and shipped, and only the loss sets the model's strength. Nothing is recomputed before a
validation or an export (precise BN leaves frozen layers alone).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.n3 import DistanceNorm


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that always normalises with its stored statistics and never updates them; its affine
    parameters still train. Same state dict as BatchNorm2d (exports load into a plain model)."""

    frozen = True

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def freeze_batchnorm(model: nn.Module) -> int:
    """Freeze every BN layer of ``model`` in place (BatchNorm2d replaced by :class:`FrozenBatchNorm2d` holding the
    same tensors; the N3 blocks' distance norms marked ``frozen``). Returns the number of layers frozen."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d:
                frozen = FrozenBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                           child.track_running_stats)
                frozen.load_state_dict(child.state_dict())
                setattr(parent, name, frozen.to(child.running_mean.device))  # type: ignore[union-attr]
                count += 1
            elif isinstance(child, DistanceNorm) and not child.frozen:
                child.frozen = True
                count += 1
    return count


def is_frozen(module: nn.Module) -> bool:
    """Whether a BN layer keeps its statistics (see :func:`freeze_batchnorm`)."""
    return bool(getattr(module, "frozen", False))
