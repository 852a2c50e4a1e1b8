"""Shared test fixtures: tiny tensors, and the shared data folder beside the repository (skipped when absent)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("N3_SHARED", REPO.parent / "shared"))
DATA = Path(os.environ.get("N3_DATA", SHARED / "data"))
OFFICIAL = SHARED / "reference" / "n3net-official"


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _fp32_by_default() -> Iterator[None]:
    """Tests compare outputs exactly (tiles, batches, ensembles), so ``precision="auto"`` means float32 in them on
    every CPU (session-wide, before any module's model is loaded); the bfloat16 default of CPUs that have it is
    tested on its own (tests/test_engine.py)."""
    from n3cli import api

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(api, "CPU_AUTO_PRECISION", "fp32")
        yield


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def tiny_nlf_weights(folder: Path, name: str = "tiny", seed: int = 0) -> Path:
    """A tiny untrained noise-level-conditional model saved as safetensors (enough to exercise the tool)."""
    from n3cli.nn.nets import n3net_light
    from n3cli.weights import ModelInfo, save_weights

    torch.manual_seed(seed)
    model = n3net_light(in_channels=3, depth=3, features=8, embed_features=8).eval()
    info = ModelInfo(name=name, planes=["image", "sqrt_a", "sqrt_b"])
    return save_weights(folder / f"{name}.safetensors", model, info)


def tiny_color_weights(folder: Path, name: str = "tiny-color", seed: int = 0) -> Path:
    """A tiny untrained colour, blind-capable model (RGB in and out, planes √a, √b, known) saved as safetensors."""
    from n3cli.nn.nets import n3net_light
    from n3cli.weights import NOISE_PLANE_NAMES, RGB_PLANES, ModelInfo, save_weights

    torch.manual_seed(seed)
    model = n3net_light(in_channels=6, out_channels=3, noise_inputs=3, depth=3, features=8, embed_features=8,
                        inter_channels=11).eval()
    info = ModelInfo(name=name, planes=[*RGB_PLANES, *NOISE_PLANE_NAMES])
    return save_weights(folder / f"{name}.safetensors", model, info)


def shipped_tiny_default(folder: Path, monkeypatch: pytest.MonkeyPatch, name: str = "tiny-shipped",
                         color: str | None = None) -> Path:
    """A registry folder whose model, a tiny noise-level-conditional one, is the shipped ``denoise`` default (and,
    given ``color``, a tiny colour blind-capable model of that name the ``denoise-color`` default); the package is
    pointed at it for the test. Returns the folder."""
    import hashlib
    import json

    import n3cli.weights
    from n3cli.weights import NOISE_PLANE_NAMES, RGB_PLANES

    def entry(w: Path, task: str, planes: list[str]) -> dict[str, object]:
        return {"file": w.name, "sha256": hashlib.sha256(w.read_bytes()).hexdigest(), "task": task,
                "arch": "n3net", "planes": planes, "metrics": {}}

    models = {name: entry(tiny_nlf_weights(folder, name), "denoise", ["image", "sqrt_a", "sqrt_b"])}
    default = {"denoise": name}
    if color is not None:
        models[color] = entry(tiny_color_weights(folder, color), "denoise-color", [*RGB_PLANES, *NOISE_PLANE_NAMES])
        default["denoise-color"] = color
    (folder / "manifest.json").write_text(json.dumps({"default": default, "models": models}))
    monkeypatch.setattr(n3cli.weights, "weights_dir", lambda: folder)
    return folder
