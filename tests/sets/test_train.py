"""A few training steps reduce the loss; the command line runs end to end on a tiny problem."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from n3cli.sets.data import TwoViewConfig, make_batch
from n3cli.sets.model import CNNNet
from n3cli.sets.train import balanced_bce, essential_loss, load_weights, main, train_step


def test_balanced_bce_weights_classes_equally() -> None:
    labels = torch.tensor([[1.0, 0, 0, 0]])
    logits = torch.tensor([[0.0, 2.0, 2.0, 2.0]])
    bce_pos = torch.log(torch.tensor(2.0))
    bce_neg = torch.nn.functional.softplus(torch.tensor(2.0))
    assert torch.allclose(balanced_bce(logits, labels), 0.5 * (bce_pos + bce_neg))


def test_a_few_steps_reduce_the_loss() -> None:
    torch.manual_seed(0)
    batch = make_batch("train", range(4), TwoViewConfig(n=128))
    for n3 in (False, True):
        net = CNNNet(channels=32, blocks=2, n3=n3, n3_after=1, k=2, embed_dim=8, embed_hidden=16)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        losses = [train_step(net, opt, batch)["loss"] for _ in range(20)]
        assert sum(losses[-3:]) / 3 < 0.75 * sum(losses[:3]) / 3, (n3, losses)


def test_essential_loss_is_zero_for_the_true_matrix_and_differentiable() -> None:
    b = make_batch("test", range(2), TwoViewConfig(n=100, noise_px=0.0))
    perfect = torch.where(b.generated, 10.0, -10.0).float()
    assert float(essential_loss(b.x, perfect, b.E)) < 1e-8
    logits = (0.5 * perfect + torch.randn_like(perfect)).requires_grad_()
    loss = essential_loss(b.x, logits, b.E)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_main_end_to_end(tmp_path: Path, capsys) -> None:
    res = main(["--steps", "2", "--n", "64", "--batch", "2", "--test-sets", "4", "--val-sets", "2",
                "--val-every", "1", "--channels", "16", "--blocks", "2", "--k", "2", "--embed-dim", "4",
                "--log-every", "1", "--out", str(tmp_path)])
    assert set(res["test"]) == {"No Net", "CNNNet", "CNNNet+N3"}
    assert "CNNNet+N3" in capsys.readouterr().out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["config"]["steps"] == 2 and "mAP@20" in saved["test"]["CNNNet"]
    for name, n3 in (("cnnnet", False), ("cnnnet_n3", True)):
        net, meta = load_weights(tmp_path / f"{name}.safetensors")
        assert net.config.n3 == n3 and net.config.k == 2 and meta["steps"] == 2
        x = make_batch("test", range(1), TwoViewConfig(n=64)).x
        assert net(x).shape == (1, 64)


def test_the_best_validation_weights_are_tested(tmp_path: Path) -> None:
    res = main(["--steps", "3", "--n", "64", "--batch", "2", "--test-sets", "2", "--val-sets", "2",
                "--val-every", "1", "--channels", "8", "--blocks", "2", "--models", "cnnnet", "--log-every", "1",
                "--out", str(tmp_path)])
    rec = res["models"]["cnnnet"]
    vals = [(h["step"], sum(h["val"][f"mAP@{t}"] for t in (5, 10, 20))) for h in rec["history"] if "val" in h]
    assert [s for s, _ in vals] == [1, 2, 3]
    best = max(v for _, v in vals)
    assert rec["selected_step"] == max(s for s, v in vals if v == best)
    _, meta = load_weights(tmp_path / "cnnnet.safetensors")
    assert meta["selected_step"] == rec["selected_step"]
    last = main(["--steps", "2", "--n", "64", "--batch", "2", "--test-sets", "2", "--val-sets", "2",
                 "--val-every", "1", "--channels", "8", "--blocks", "2", "--models", "cnnnet", "--select", "last",
                 "--schedule", "constant"])
    assert last["models"]["cnnnet"]["selected_step"] == 2
