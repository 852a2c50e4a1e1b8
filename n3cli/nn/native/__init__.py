"""The fused image N3 aggregation in C, for inference on the CPU, and for training the selection's forward and
backward and the block path's spread matrix, output assembly and distance norm, each way (``aggregate.c``).

Eager PyTorch spends two thirds of the aggregation's time on element-wise passes it cannot fuse (the
selection loop, the distance assembly, layout changes; ``docs/speed.md``). ``aggregate.c`` does the whole
aggregation of a band of rows in one pass over the image, in the caches. It is plain C (no Python or torch
headers), compiled at first use with the system's C compiler (``$CC``, else ``cc``, ``gcc``, ``clang``) for
the CPU it runs on, cached under the user's cache folder, and loaded with :mod:`ctypes`. Where no compiler
works, :func:`library` returns None and the PyTorch implementation runs instead (same results).

``N3_NATIVE=0`` in the environment turns it off.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import hashlib
import os
import platform
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

_SOURCE = Path(__file__).with_name("aggregate.c")
_ABI = 8000 + 18  # n3_abi_version(): 18 integer parameters, in the order of aggregate(); 2000: n3_knn_* present;
# 3000: and n3_spread_whole_*, n3_blocks_to_pixels_*, n3_distance_norm_*; 4000: and n3_conv3x3_narrow;
# 5000: and n3_conv3x3_narrow_wgrad; 6000: and n3_conv3x3_narrow_batch, n3_run_range, n3_parallel_rows, n3_openmp;
# 7000: and n3_conv3x3_narrow_bf16, n3_has_bf16_conv; 8000: and n3_conv3x3_narrow_wgrad_bf16
_KNN_AUX = 3  # floats per row and step that n3_knn_forward keeps for the backward
_FLAGS = ["-O3", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math", "-fassociative-math",
          "-fno-signed-zeros"]
_BUILD_SECONDS = 120

_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_size = 0


def _cpu_features() -> str | None:
    """The CPU's feature flags (Linux /proc/cpuinfo), or None where they cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return None


def _arch_flags(features: str | None) -> list[str]:
    """-march=native only where the cache key can name the CPU's features (a cached build must not meet a CPU without
    the instructions it was compiled for); elsewhere a portable build."""
    return ["-march=native"] if features is not None else []


def _cache_dir() -> Path:
    env = os.environ.get("N3_CACHE_DIR")
    if env:
        return Path(env) / "native"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("n3")) / "native"


def _compilers() -> list[list[str]]:
    found: list[list[str]] = []
    if os.environ.get("CC"):
        cmd = shlex.split(os.environ["CC"])  # e.g. "ccache gcc"
        if cmd and shutil.which(cmd[0]):
            found.append(cmd)
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path and [path] not in found:
            found.append([path])
    return found


def _build(target: Path, arch_flags: list[str], openmp: bool) -> bool | None:
    """Compile aggregate.c to ``target`` (atomically): True when built; False when a compiler ran and refused every
    variant; None when none could run (no compiler, a timeout, an OS error)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = target.stem.split("-")[1]
    refused = False
    for cc in _compilers():
        for arch in ([arch_flags, []] if arch_flags else [[]]):
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
            os.close(fd)
            try:
                done = subprocess.run([*cc, *_FLAGS, *arch, *(["-fopenmp"] if openmp else []), "-o", tmp,
                                       str(_SOURCE)], capture_output=True, timeout=_BUILD_SECONDS, check=False)
                if done.returncode == 0:
                    os.replace(tmp, target)
                    for old in target.parent.glob("aggregate-*"):  # builds of earlier versions (best effort)
                        if digest not in old.name:
                            old.unlink(missing_ok=True)
                    return True
                refused = True
            except (OSError, subprocess.SubprocessError):
                pass
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    return False if refused else None


def _build_and_load(target: Path, arch_flags: list[str], openmp: bool) -> tuple[ctypes.CDLL | None, bool]:
    """The library at ``target``, built first where it is not cached (a cached file that does not load, truncated or
    foreign, is rebuilt once), and whether a failure is this build's own (the compiler refused it, or it built but
    does not load) rather than the machine's (no compiler could run)."""
    for attempt in range(2):
        if not target.exists():
            built = _build(target, arch_flags, openmp)
            if not built:
                return None, built is False
        try:
            lib = _load(target)
        except (OSError, AttributeError):
            lib = None
        if lib is not None or attempt:
            return lib, True
        target.unlink(missing_ok=True)
    return None, True


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first call; None when disabled (``N3_NATIVE=0``) or impossible here. Built with
    OpenMP where the compiler takes it and the result loads (:func:`_run_rows`), else without (remembered by a
    marker file, so that a compiler without OpenMP is not asked again at every start)."""
    if os.environ.get("N3_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        features = _cpu_features()
        arch_flags = _arch_flags(features)
        key = _SOURCE.read_bytes() + " ".join(_FLAGS + arch_flags).encode()
        key += f"{platform.system()} {platform.machine()} {features or platform.processor()}".encode()
        suffix = ".dll" if os.name == "nt" else ".so"
        digest = hashlib.sha256(key).hexdigest()[:20]
        no_openmp = _cache_dir() / f"aggregate-{digest}-no-openmp"
        if not no_openmp.exists():
            lib, own_failure = _build_and_load(_cache_dir() / f"aggregate-{digest}-openmp{suffix}", arch_flags, True)
            if lib is not None:
                return lib
            if own_failure:  # the compiler refused -fopenmp, or the build does not load: remember it
                no_openmp.parent.mkdir(parents=True, exist_ok=True)
                no_openmp.touch()
        return _build_and_load(_cache_dir() / f"aggregate-{digest}{suffix}", arch_flags, False)[0]
    except OSError:
        pass
    return None


def _load(path: Path) -> ctypes.CDLL | None:
    lib = ctypes.CDLL(str(path))
    if lib.n3_abi_version() != _ABI:
        raise OSError("stale native library")
    fn = lib.n3_aggregate_band
    fn.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    i64, i32 = ctypes.c_int64, ctypes.c_int
    lib.n3_knn_forward.argtypes = [ctypes.c_void_p] * 5 + [i64, i64, i64, i32, i32]
    lib.n3_knn_forward.restype = i32
    lib.n3_knn_backward.argtypes = [ctypes.c_void_p] * 8 + [i64, i64, i64, i32, i32]
    lib.n3_knn_backward.restype = i32
    for fn in (lib.n3_spread_whole_forward, lib.n3_spread_whole_backward):
        fn.argtypes = [ctypes.c_void_p] * 2 + [i64, i64] + [i32] * 6
        fn.restype = i32
    lib.n3_blocks_to_pixels_forward.argtypes = [ctypes.c_void_p] * 5 + [i64, i64]
    lib.n3_blocks_to_pixels_backward.argtypes = [ctypes.c_void_p] * 5 + [i64, i64]
    lib.n3_blocks_to_pixels_forward.restype = lib.n3_blocks_to_pixels_backward.restype = i32
    f64 = ctypes.c_double
    lib.n3_distance_norm_forward.argtypes = [ctypes.c_void_p] * 4 + [i64] * 3 + [f64] * 3
    lib.n3_distance_norm_backward.argtypes = [ctypes.c_void_p] * 5 + [i64] * 3 + [f64] * 4
    lib.n3_distance_norm_forward.restype = lib.n3_distance_norm_backward.restype = i32
    lib.n3_conv3x3_narrow.argtypes = [ctypes.c_void_p, i64, i64, i64, ctypes.c_void_p, ctypes.c_void_p, i64,
                                      ctypes.c_void_p, i64, i64]
    lib.n3_conv3x3_narrow.restype = i32
    lib.n3_conv3x3_narrow_wgrad.argtypes = [ctypes.c_void_p] * 2 + [i64] * 5 + [ctypes.c_void_p, i64, i64]
    lib.n3_conv3x3_narrow_wgrad.restype = i32
    lib.n3_run_range.argtypes = [i32, ctypes.c_void_p, i64, i64, i64]
    lib.n3_parallel_rows.argtypes = [i32, ctypes.c_void_p, i64, i64]
    lib.n3_run_range.restype = lib.n3_parallel_rows.restype = lib.n3_openmp.restype = i32
    lib.n3_has_bf16_conv.restype = i32
    return lib


def available() -> bool:
    return library() is not None


def _required_library(what: str) -> ctypes.CDLL:
    """The compiled kernel, for a caller that checked :func:`available` (``what``: the kernel, for the message)."""
    lib = library()
    if lib is None:
        raise RuntimeError(f"the native {what} is not available")
    return lib


def _executor(threads: int) -> concurrent.futures.ThreadPoolExecutor:
    """The worker pool for ``threads`` (a pool in use by another caller is never shut down: it is only replaced)."""
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != threads:
            _pool, _pool_size = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="n3-native"), threads
        return _pool


def _forget_pool() -> None:
    """After fork(): the child has none of the parent's worker threads."""
    global _pool, _pool_size, _lock
    _pool, _pool_size, _lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def aggregate(xp: Tensor, ep: Tensor, t_grid: Tensor, *, patch: int, stride: int, window: int, k: int,
              norm: tuple[float, float] | None, update_alpha: bool, size: tuple[int, int], offset: tuple[int, int],
              progress: Callable[[int, int], None] | None = None) -> Tensor:
    """The N3 aggregation of padded channels-last images: concat(x, N_1 - x, ..., N_k - x).

    xp (B, Hp, Wp, C) and ep (B, Hp, Wp, E) contiguous float32 on the CPU, padded so that the patch grid covers
    them exactly; t_grid (B, nh, nw) the temperature of each patch; ``norm`` (scale, shift) of the distance norm
    in eval mode (α = shift − scale·D) or None (α = −D); ``size`` (H, W) and ``offset`` (top, left) of the
    unpadded image. Returns (B, (k + 1)·C, H, W), stored channels-last.
    """
    lib = _required_library("N3 aggregation")
    b, hp, wp, c = xp.shape
    e = ep.shape[-1]
    nh, nw = t_grid.shape[-2:]
    h, w = size
    if not (xp.is_contiguous() and ep.is_contiguous() and t_grid.is_contiguous()):
        raise ValueError("native aggregation needs contiguous inputs")
    if any(t.dtype != torch.float32 or t.device.type != "cpu" for t in (xp, ep, t_grid)):
        raise ValueError("native aggregation needs float32 CPU tensors")
    wh, ww = min(window, nh), min(window, nw)
    params = (ctypes.c_int64 * 18)(hp, wp, c, e, patch, stride, nh, nw, wh, ww, window, k,
                                   norm is not None, update_alpha, h, w, offset[0], offset[1])
    floats = (ctypes.c_float * 2)(*(norm if norm is not None else (1.0, 0.0)))
    out = torch.empty(b, h, w, (k + 1) * c, dtype=torch.float32)
    bh = hp // stride
    threads = max(1, torch.get_num_threads())
    # Bands of block rows: enough for every thread and for progress; each band recomputes the nb - 1 query rows
    # above it, so bands are kept to >= 16 block rows where the image allows.
    n_bands = max(1, min(bh, max(threads, -(-bh // 16))))
    edges = [bh * i // n_bands for i in range(n_bands + 1)]
    jobs = [(i, edges[j], edges[j + 1]) for i in range(b) for j in range(n_bands) if edges[j + 1] > edges[j]]

    def run(job: tuple[int, int, int]) -> int:
        i, r0, r1 = job
        return lib.n3_aggregate_band(xp[i].data_ptr(), ep[i].data_ptr(), t_grid[i].data_ptr(), out[i].data_ptr(),
                                     ctypes.addressof(params), ctypes.addressof(floats), r0, r1)

    if threads == 1 or len(jobs) == 1:
        done: Iterable[int] = map(run, jobs)
    else:
        pool = _executor(threads)
        done = (f.result() for f in concurrent.futures.as_completed([pool.submit(run, job) for job in jobs]))
    results = []
    for n, result in enumerate(done):
        results.append(result)
        if progress is not None:
            progress(n + 1, len(jobs))
    if any(r == -1 for r in results):
        raise MemoryError("native N3 aggregation: out of memory for its scratch buffers")
    if any(r != 0 for r in results):
        raise ValueError("native N3 aggregation: unsupported parameters")
    return out.permute(0, 3, 1, 2)


# The row-split kernels, by their number in n3_run_range (aggregate.c)
_KNN_F, _KNN_B, _SPREAD_F, _SPREAD_B, _B2P_F, _B2P_B, _CONV_F, _CONV_WGRAD, _CONV_BF16, _CONV_WGRAD_BF16 = range(1, 11)


def _chunks(rows: int, min_rows: int) -> int:
    """How many row ranges (one per thread) a kernel's rows are split into: ranges of at least ``min_rows``."""
    return max(1, min(torch.get_num_threads(), rows // min_rows))


@functools.lru_cache(maxsize=1)
def _torch_team() -> bool:
    """Whether the kernels can run on torch's own OpenMP threads: the library was built with OpenMP and the process
    has one OpenMP runtime (torch's; a second one, e.g. clang's libomp beside torch's libgomp, would bring a second
    set of threads). Checked where the loader's map can be read (Linux); elsewhere the Python pool runs them."""
    lib = library()
    if lib is None or not lib.n3_openmp():
        return False
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            rows = [line.split(maxsplit=5) for line in maps]
        paths = {fields[5].strip().removesuffix(" (deleted)") for fields in rows if len(fields) == 6}
    except OSError:
        return False
    runtimes = {path for path in paths if _OPENMP_RUNTIME.match(os.path.basename(path))}
    return len(runtimes) == 1


#: File names of OpenMP runtimes: GNU's libgomp, LLVM's libomp, Intel's libiomp5 (not libomptarget)
_OPENMP_RUNTIME = re.compile(r"(libgomp|libomp|libiomp\d*)([.-]|$)")


def _run_rows(kernel: int, args: Sequence[int], rows: int, min_rows: int = 64, chunks: int | None = None) -> None:
    """Rows [0, rows) of ``kernel`` (its arguments but the row range: pointers and integers) in ``chunks`` ranges
    (default :func:`_chunks`; a kernel with a buffer per range passes the count it allocated), one per thread: on
    torch's OpenMP threads where :func:`_torch_team` allows, else on the Python pool (ctypes releases the GIL); raises
    on a kernel's error code."""
    lib = _required_library("N3 kernel")
    chunks = _chunks(rows, min_rows) if chunks is None else chunks
    words = (ctypes.c_int64 * len(args))(*args)
    if _torch_team():
        results = [lib.n3_parallel_rows(kernel, words, rows, chunks)]
    else:
        jobs = [(rows * i // chunks, rows * (i + 1) // chunks, i) for i in range(chunks)]
        if chunks == 1:
            results = [lib.n3_run_range(kernel, words, *job) for job in jobs]
        else:
            pool = _executor(torch.get_num_threads())
            results = [f.result() for f in [pool.submit(lib.n3_run_range, kernel, words, *job) for job in jobs]]
    if any(r == -1 for r in results):
        raise MemoryError("native N3 kernel: out of memory for its scratch buffers")
    if any(r != 0 for r in results):
        raise ValueError("native N3 kernel: unsupported parameters")


def knn_forward(alpha: Tensor, temperature: Tensor, k: int, update_alpha: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The continuous k-nearest-neighbour weights (rows, k, m) of logits alpha (rows, m) (-inf: excluded) at the
    temperatures (rows,) (Eqs. 8-10), and what :func:`knn_backward` needs: the top candidate of every step
    (rows, k) and three floats per row and step. Contiguous float32 CPU tensors."""
    _required_library("selection")
    rows, m = alpha.shape
    w = torch.empty(rows, k, m, dtype=torch.float32)
    top = torch.empty(rows, k, dtype=torch.int32)
    aux = torch.empty(rows, k, _KNN_AUX, dtype=torch.float32)
    _run_rows(_KNN_F, [alpha.data_ptr(), temperature.data_ptr(), w.data_ptr(), top.data_ptr(), aux.data_ptr(), m, k,
                       update_alpha], rows)
    return w, top, aux


def knn_backward(grad_w: Tensor, w: Tensor, top: Tensor, aux: Tensor, alpha: Tensor, temperature: Tensor,
                 update_alpha: bool) -> tuple[Tensor, Tensor]:
    """The gradients of alpha (rows, m) and of the temperatures (rows,) from that of the weights (rows, k, m)."""
    _required_library("selection")
    rows, k, m = w.shape
    grad_alpha = torch.empty(rows, m, dtype=torch.float32)
    grad_t = torch.empty(rows, dtype=torch.float32)
    _run_rows(_KNN_B, [grad_w.data_ptr(), w.data_ptr(), top.data_ptr(), aux.data_ptr(), alpha.data_ptr(),
                       temperature.data_ptr(), grad_alpha.data_ptr(), grad_t.data_ptr(), m, k, update_alpha], rows)
    return grad_alpha, grad_t


def _require(ok: bool, what: str) -> None:
    """The kernels trust their callers' shapes (they index raw memory): a mismatch is refused here instead."""
    if not ok:
        raise ValueError(f"native N3 kernel: {what}")


def _plain(*tensors: Tensor) -> bool:
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def spread_size(shape: tuple[int, int, int, int, int, int]) -> int:
    """Floats per item of the spread matrix (DH, DW, k, SH, SW) of shape (tr, tc, k, wh, ww, nb)."""
    tr, tc, k, wh, ww, nb = shape
    return (tr + nb - 1) * (tc + nb - 1) * k * (wh + nb - 1) * (ww + nb - 1)


def spread_whole(weights: Tensor, shape: tuple[int, int, int, int, int, int]) -> Tensor:
    """The block spread matrix (B, DH·DW·k·SH·SW) of weights (B, tr·tc·k·wh·ww), shape (tr, tc, k, wh, ww, nb), of
    training tiles whose windows are the whole region (``n3._SpreadWhole``; n3_spread_whole_forward). Contiguous
    float32 CPU tensors."""
    _required_library("spread")
    tr, tc, k, wh, ww, nb = shape
    b = weights.shape[0]
    _require(_plain(weights) and weights.is_contiguous() and tuple(weights.shape) == (b, tr * tc * k * wh * ww),
             "spread weights of another shape")
    spread = torch.empty(b, spread_size(shape), dtype=torch.float32)
    _run_rows(_SPREAD_F, [weights.data_ptr(), spread.data_ptr(), *shape], b * (tr + nb - 1), min_rows=4)
    return spread


def spread_whole_backward(grad: Tensor, shape: tuple[int, int, int, int, int, int]) -> Tensor:
    """The gradient (B, tr·tc·k·wh·ww) of :func:`spread_whole`'s weights from that of its matrix (contiguous)."""
    _required_library("spread")
    tr, tc, k, wh, ww, nb = shape
    b = grad.shape[0]
    _require(_plain(grad) and grad.is_contiguous() and tuple(grad.shape) == (b, spread_size(shape)),
             "spread matrix of another shape")
    out = torch.empty(b, tr * tc * k * wh * ww, dtype=torch.float32)
    _run_rows(_SPREAD_B, [grad.data_ptr(), out.data_ptr(), *shape],
              b * tr, min_rows=4)
    return out


def _b2p_params(acc_shape: tuple[int, ...], size: tuple[int, int], offset: tuple[int, int],
                strides: tuple[int, ...]) -> ctypes.Array[ctypes.c_int64]:
    b, bh, bw, k, c, s, _ = acc_shape
    return (ctypes.c_int64 * 14)(b, c, size[0], size[1], k, s, bh, bw, offset[0], offset[1], *strides)


def blocks_to_pixels(acc: Tensor, x: Tensor, inv_count: Tensor, offset: tuple[int, int]) -> Tensor:
    """``n3._BlocksToPixels``'s forward in one pass: concat(x, N_1 - x, ..., N_k - x) (B, (k + 1)·C, H, W), stored
    channels-last, from acc (B, bh, bw, k, C, s, s) contiguous, x (B, C, H, W) any strides, inv_count (bh, bw)
    contiguous; float32 CPU tensors."""
    _required_library("blocks-to-pixels")
    b, bh, bw, k, c, s, _ = acc.shape
    h, w = x.shape[-2:]
    _require(_plain(acc, x, inv_count) and acc.is_contiguous() and inv_count.is_contiguous()
             and acc.shape[-1] == s and tuple(x.shape) == (b, c, h, w) and tuple(inv_count.shape) == (bh, bw),
             "blocks and image of other shapes")
    out = torch.empty(b, h, w, (k + 1) * c, dtype=torch.float32)
    q = _b2p_params(tuple(acc.shape), (h, w), offset, x.stride())
    _run_rows(_B2P_F, [acc.data_ptr(), x.data_ptr(), inv_count.data_ptr(), out.data_ptr(), ctypes.addressof(q)],
              b * h, min_rows=8)
    return out.permute(0, 3, 1, 2)


def blocks_to_pixels_backward(grad: Tensor, inv_count: Tensor, acc_shape: tuple[int, ...],
                              offset: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Its backward: the gradients of acc (contiguous) and of x (channels-last) from grad (any strides)."""
    _required_library("blocks-to-pixels")
    b, bh, bw, k, c, _, _ = acc_shape
    h, w = grad.shape[-2:]
    _require(_plain(grad, inv_count) and inv_count.is_contiguous() and tuple(grad.shape) == (b, (k + 1) * c, h, w)
             and tuple(inv_count.shape) == (bh, bw), "gradient of another shape")
    grad_acc = torch.empty(acc_shape, dtype=torch.float32)
    grad_x = torch.empty(b, h, w, c, dtype=torch.float32)
    q = _b2p_params(acc_shape, (h, w), offset, grad.stride())
    _run_rows(_B2P_B, [grad.data_ptr(), inv_count.data_ptr(), grad_acc.data_ptr(), grad_x.data_ptr(),
                       ctypes.addressof(q)], b * bh, min_rows=8)
    return grad_acc, grad_x.permute(0, 3, 1, 2)


def distance_norm(alpha: Tensor, valid: Tensor, eps: float, weight: float, bias: float) -> tuple[Tensor, float, float,
                                                                                                 int]:
    """``n3.DistanceNorm``'s training forward (n3_distance_norm_forward): alpha (rows, m) normalised by the mean and
    biased variance of its entries where valid (vrows, m), rows a multiple of vrows, repeated) is set, computed in
    double; (out, mean, var, count). Contiguous float32 / bool CPU tensors; ValueError where no entry is valid."""
    lib = _required_library("distance norm")
    rows, m = alpha.shape
    _require(_plain(alpha) and alpha.is_contiguous() and valid.dtype == torch.bool and valid.is_contiguous()
             and valid.dim() == 2 and valid.shape[1] == m and valid.shape[0] > 0 and rows % valid.shape[0] == 0,
             "distances and mask of other shapes")
    out = torch.empty_like(alpha)
    stats = (ctypes.c_double * 3)()
    err = lib.n3_distance_norm_forward(alpha.data_ptr(), valid.data_ptr(), out.data_ptr(), ctypes.addressof(stats),
                                       rows, valid.shape[0], m, eps, weight, bias)
    if err:
        raise ValueError("native distance norm: no valid entry")
    return out, stats[0], stats[1], int(stats[2])


def distance_norm_backward(grad: Tensor, alpha: Tensor, valid: Tensor, mean: float, var: float, eps: float,
                           weight: float) -> tuple[Tensor, float, float]:
    """Its backward: the gradient of alpha, and those of the bias and the weight (sum g, sum g x^)."""
    lib = _required_library("distance norm")
    rows, m = alpha.shape
    _require(_plain(grad, alpha) and grad.is_contiguous() and grad.shape == alpha.shape and valid.shape[1] == m
             and rows % valid.shape[0] == 0, "gradient of another shape")
    out = torch.empty_like(alpha)
    sums = (ctypes.c_double * 2)()
    err = lib.n3_distance_norm_backward(grad.data_ptr(), alpha.data_ptr(), valid.data_ptr(), out.data_ptr(),
                                        ctypes.addressof(sums), rows, valid.shape[0], m, mean, var, eps, weight)
    if err:
        raise ValueError("native distance norm: no valid entry")
    return out, sums[0], sums[1]


#: What :func:`conv3x3_narrow` serves: input channels a multiple of 16 up to 128, 1 to 8 output channels.
NARROW_MAX_IN, NARROW_MAX_OUT = 128, 8


def conv3x3_narrow(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The 3×3 convolution (stride 1, zero padding 1) of x (B, C, H, W), stored channels-last, with ``weight``
    (O, 3, 3, C) contiguous (the layout of ``Conv2d.weight.permute(0, 2, 3, 1)``) and ``bias`` (O,) or None, for
    O <= 8 output channels; float32 CPU tensors. Returns (B, O, H, W), stored channels-last. oneDNN runs such
    narrow convolutions several times below its rate for wide ones (docs/speed.md)."""
    _required_library("narrow convolution")
    b, c, h, w = x.shape
    o = weight.shape[0]
    _require(_plain(x, weight) and x.is_contiguous(memory_format=torch.channels_last) and weight.is_contiguous(),
             "the narrow convolution needs float32 CPU tensors, x channels-last, the weight contiguous")
    _require(tuple(weight.shape) == (o, 3, 3, c) and 1 <= o <= NARROW_MAX_OUT and c % 16 == 0
             and 0 < c <= NARROW_MAX_IN, f"no narrow 3x3 convolution of {c} to {o} channels")
    if bias is None:
        bias = torch.zeros(o)
    _require(_plain(bias) and tuple(bias.shape) == (o,) and bias.is_contiguous(), "bias of the wrong shape")
    out = torch.empty(b, o, h, w, dtype=torch.float32, memory_format=torch.channels_last)  # not a view (autograd)
    if out.numel() == 0:
        return out
    _run_rows(_CONV_F, [x.data_ptr(), b, h, w, c, weight.data_ptr(), bias.data_ptr(), o, out.data_ptr()], b * h,
              min_rows=8)
    return out


def conv3x3_narrow_wgrad(x: Tensor, grad: Tensor) -> Tensor:
    """The weights' gradient of :func:`conv3x3_narrow` (float32 x and grad) or of :func:`conv3x3_narrow_bf16`
    (bf16 x and grad; C a multiple of 32): float32 (O, 3, 3, C) contiguous (the layout of
    ``Conv2d.weight.permute(0, 2, 3, 1)``) for x (B, C, H, W) and grad (B, O, H, W), both stored channels-last on the
    CPU. Each thread sums its rows of the batch into its own buffer; the buffers are added at the end."""
    _required_library("narrow convolution")
    b, c, h, w = x.shape
    o = grad.shape[1]
    bf16 = x.dtype == torch.bfloat16
    _require((_plain(x, grad) or (bf16 and grad.dtype == torch.bfloat16 and x.device.type == grad.device.type == "cpu"))
             and x.is_contiguous(memory_format=torch.channels_last)
             and grad.is_contiguous(memory_format=torch.channels_last),
             "the narrow convolution's gradient needs float32 or bf16 CPU tensors stored channels-last")
    _require(tuple(grad.shape) == (b, o, h, w) and 1 <= o <= NARROW_MAX_OUT and c % (32 if bf16 else 16) == 0
             and 0 < c <= NARROW_MAX_IN and (has_bf16_conv() or not bf16),
             f"no narrow 3x3 convolution of {c} to {o} channels for a gradient of shape {tuple(grad.shape)}")
    rows = b * h
    chunks = _chunks(rows, 16)
    parts = torch.zeros(chunks, o, 3, 3, c, dtype=torch.float32)  # one per range of rows, added at the end
    if rows and w:
        _run_rows(_CONV_WGRAD_BF16 if bf16 else _CONV_WGRAD,
                  [x.data_ptr(), grad.data_ptr(), b, h, w, c, o, parts.data_ptr(), o * 9 * c], rows, chunks=chunks)
    return parts.sum(0) if chunks > 1 else parts[0]


def has_bf16_conv() -> bool:
    """Whether :func:`conv3x3_narrow_bf16` is built (a CPU with AVX512-BF16 and a compiler that targets it)."""
    lib = library()
    return lib is not None and bool(lib.n3_has_bf16_conv())


def conv3x3_narrow_bf16(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """:func:`conv3x3_narrow` in bfloat16: x (B, C, H, W) bf16 stored channels-last, ``weight`` (O, 3, 3, C) bf16
    contiguous, ``bias`` (O,) float32; products summed in float32, the result rounded to bf16 (B, O, H, W),
    stored channels-last. C a multiple of 32."""
    _required_library("narrow convolution")
    b, c, h, w = x.shape
    o = weight.shape[0]
    _require(x.dtype == weight.dtype == torch.bfloat16 and bias.dtype == torch.float32
             and all(t.device.type == "cpu" for t in (x, weight, bias))
             and x.is_contiguous(memory_format=torch.channels_last) and weight.is_contiguous()
             and bias.is_contiguous(), "the bf16 narrow convolution needs bf16 CPU tensors, x channels-last")
    _require(tuple(weight.shape) == (o, 3, 3, c) and tuple(bias.shape) == (o,) and 1 <= o <= NARROW_MAX_OUT
             and c % 32 == 0 and 0 < c <= NARROW_MAX_IN and has_bf16_conv(),
             f"no bf16 narrow 3x3 convolution of {c} to {o} channels here")
    out = torch.empty(b, o, h, w, dtype=torch.bfloat16, memory_format=torch.channels_last)
    if out.numel():
        _run_rows(_CONV_BF16, [x.data_ptr(), b, h, w, c, weight.data_ptr(), bias.data_ptr(), o, out.data_ptr()],
                  b * h, min_rows=8)
    return out
