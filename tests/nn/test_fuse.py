from __future__ import annotations

import torch

from n3cli.nn.fuse import fold_batchnorm
from n3cli.nn.nets import n3net


def test_folded_model_matches() -> None:
    torch.manual_seed(0)
    model = n3net(depth=3, features=8, embed_features=8)
    model.train()
    with torch.no_grad():
        for _ in range(3):  # give the BN layers non-trivial statistics
            model(torch.rand(2, 1, 40, 40))
    model.eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(1, 1, 37, 45)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # original untouched
