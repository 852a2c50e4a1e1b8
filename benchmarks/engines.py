"""Inference engines compared on this CPU: eager PyTorch, torch.compile, ONNX Runtime and OpenVINO, for DnCNN-17
and the shipped N3Net (issue #48, item 3). Each engine runs the same folded fp32 model on the same gray image;
printed: seconds per forward (median of ``--repeat``), the ratio to eager, the largest difference to eager's output,
and the one-time cost (compile / export + load). An engine that fails says why.

    python benchmarks/engines.py --side 1024 --threads 2

ONNX Runtime and OpenVINO are optional (``pip install onnxruntime openvino onnx onnxscript``); missing ones are
reported as unavailable. Models are exported for the benchmarked size only (the N3 block's layout depends on it).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from n3cli import api  # noqa: E402
from n3cli.devices import cpu_name  # noqa: E402
from n3cli.nn.fuse import fold_batchnorm  # noqa: E402
from n3cli.nn.nets import dncnn  # noqa: E402


class Wrapped(torch.nn.Module):
    """The model with its noise level fixed (a plain one-input graph for exporters)."""

    def __init__(self, model: torch.nn.Module, noise: tuple[float, float] | None) -> None:
        super().__init__()
        self.model, self.noise = model, noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.noise is None:
            return self.model(x)
        return self.model(x, torch.tensor([self.noise], dtype=x.dtype))


def timed(fn: Callable[[], np.ndarray], repeat: int) -> tuple[float, np.ndarray]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def engines(model: torch.nn.Module, x: torch.Tensor, threads: int) -> dict[str, Callable[[], Callable[[], np.ndarray]]]:
    """Engine name → a builder (the one-time cost) returning the forward to time."""

    def eager() -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            with torch.inference_mode():
                return model(x).numpy()
        return run

    def eager_cl() -> Callable[[], np.ndarray]:
        """What n3 runs today: channels-last model and input (api.prepare_for_inference)."""
        cl = model.to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)

        def run() -> np.ndarray:
            with torch.inference_mode():
                return cl(xc).contiguous().numpy()
        return run

    def eager_bf16() -> Callable[[], np.ndarray]:
        """n3's default on CPUs with native bfloat16: channels-last, bf16 autocast of the local CNNs."""
        cl = model.to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)

        def run() -> np.ndarray:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return cl(xc).float().contiguous().numpy()
        return run

    def compiled_blocks() -> Callable[[], np.ndarray]:
        """torch.compile of the local CNN blocks only (the N3 blocks stay eager)."""
        inner = getattr(model, "model", model)
        blocks = getattr(inner, "blocks", None)
        if blocks is None:
            raise RuntimeError("no local blocks")
        for i, block in enumerate(blocks):
            blocks[i] = torch.compile(block, dynamic=False)
        try:
            with torch.inference_mode():
                model(x)
        except Exception:
            raise

        def run() -> np.ndarray:
            with torch.inference_mode():
                return model(x).numpy()
        return run

    def compiled() -> Callable[[], np.ndarray]:
        fn = torch.compile(model, dynamic=False)
        with torch.inference_mode():
            fn(x)

        def run() -> np.ndarray:
            with torch.inference_mode():
                return fn(x).numpy()
        return run

    def onnx_file(folder: str) -> str:
        path = str(Path(folder) / "model.onnx")
        torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["y"], dynamo=True,
                          external_data=False)
        return path

    def ort() -> Callable[[], np.ndarray]:
        import onnxruntime as rt

        folder = tempfile.mkdtemp()
        opts = rt.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = rt.InferenceSession(onnx_file(folder), opts, providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy()}
        return lambda: sess.run(None, feed)[0]

    def openvino() -> Callable[[], np.ndarray]:
        import openvino as ov

        core = ov.Core()
        ov_model = ov.convert_model(model, example_input=x)
        compiled_model = core.compile_model(ov_model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                              "INFERENCE_PRECISION_HINT": "f32"})
        feed = x.numpy()
        return lambda: compiled_model(feed)[0]

    def openvino_blocks(precision: str = "f32") -> Callable[[], np.ndarray]:
        """OpenVINO for the local CNN blocks only (compiled for this size), the N3 blocks eager."""
        import openvino as ov

        inner = getattr(model, "model", model)
        blocks = getattr(inner, "blocks", None)
        if blocks is None:
            raise RuntimeError("no local blocks")
        shapes: dict[int, torch.Size] = {}
        hooks = [b.register_forward_pre_hook(lambda m, a, i=i: shapes.__setitem__(i, a[0].shape))
                 for i, b in enumerate(blocks)]
        with torch.inference_mode():
            model(x)
        for h in hooks:
            h.remove()
        core = ov.Core()

        class OVBlock(torch.nn.Module):
            def __init__(self, block: torch.nn.Module, shape: torch.Size) -> None:
                super().__init__()
                self.conv1 = block.conv1  # N3Net.forward looks at its layout
                example = torch.zeros(shape)
                self.compiled = core.compile_model(ov.convert_model(block, example_input=example), "CPU",
                                                   {"INFERENCE_NUM_THREADS": threads,
                                                    "INFERENCE_PRECISION_HINT": precision})

            def forward(self, t: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(self.compiled(t.contiguous().numpy())[0])

        for i in range(len(blocks)):
            blocks[i] = OVBlock(blocks[i], shapes[i])

        def run() -> np.ndarray:
            with torch.inference_mode():
                return model(x).numpy()
        return run

    return {"eager": eager, "eager-cl": eager_cl, "eager-bf16": eager_bf16, "torch.compile": compiled,
            "onnxruntime": ort, "openvino": openvino, "compile-blocks": compiled_blocks,
            "openvino-blocks": openvino_blocks, "openvino-blocks-bf16": lambda: openvino_blocks("bf16")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--models", default="dncnn,n3net")
    p.add_argument("--engines",
                   default="eager,eager-cl,eager-bf16,torch.compile,onnxruntime,openvino,compile-blocks,"
                           "openvino-blocks,openvino-blocks-bf16")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    rng = np.random.default_rng(0)
    clean = np.clip(np.cumsum(rng.normal(0, 0.02, (args.side, args.side)), axis=1) % 1.0, 0, 1)
    x = torch.from_numpy((clean + rng.normal(0, 25 / 255, clean.shape)).astype(np.float32))[None, None]
    print(f"CPU: {cpu_name()}, {args.threads} threads, torch {torch.__version__}, gray {args.side}², fp32")
    print(f"{'model':8} {'engine':14} {'s/forward':>10} {'vs eager':>9} {'max |diff|':>11} {'one-time s':>11}")
    for name in args.models.split(","):
        if name == "dncnn":
            torch.manual_seed(0)
            model: torch.nn.Module = fold_batchnorm(dncnn().eval())
            noise = None
        else:
            model = api.load_model(None, "denoise", "cpu", precision="fp32").model.to(
                memory_format=torch.contiguous_format)
            noise = (0.0, (25 / 255) ** 2)
        wrapped = Wrapped(model, noise).eval()
        base_t, base_out = None, None
        for engine in engines(wrapped, x, args.threads):
            if engine not in args.engines.split(","):
                continue
            build = engines(copy.deepcopy(wrapped), x, args.threads)[engine]  # engines may change the model
            t0 = time.perf_counter()
            try:
                run = build()
                setup = time.perf_counter() - t0
                t, out = timed(run, args.repeat)
            except Exception as exc:  # an engine that cannot take the model is a result too
                reason = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__
                print(f"{name:8} {engine:14} failed: {type(exc).__name__}: {reason}")
                continue
            if base_t is None:
                base_t, base_out = t, out
            diff = float(np.abs(out - base_out).max()) if base_out is not None else 0.0
            print(f"{name:8} {engine:14} {t:10.3f} {t / base_t:9.2f} {diff:11.2e} {setup:11.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
