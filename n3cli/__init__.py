"""n3: image restoration with Neural Nearest Neighbors Networks (Plötz & Roth, NeurIPS 2018).

The Python API: :func:`denoise`, :func:`plan_denoise`, :func:`super_resolve`, :func:`raw_denoise`, :func:`load_model`,
:func:`estimate_sigma`; the networks live in :mod:`n3cli.nn` (``from n3cli.nn import n3net, dncnn``).
The API is imported on first use, so that ``import n3cli`` (and the ``n3`` command's start) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["DenoisePlan", "Restorer", "denoise", "estimate_sigma", "load_model", "plan_denoise", "raw_denoise",
           "super_resolve", "__version__"]

if TYPE_CHECKING:
    from .api import (
        DenoisePlan,
        Restorer,
        denoise,
        estimate_sigma,
        load_model,
        plan_denoise,
        raw_denoise,
        super_resolve,
    )


def __getattr__(name: str) -> Any:
    import importlib

    if name in __all__:
        return getattr(importlib.import_module(".api", __name__), name)
    try:  # submodules (n3cli.api, n3cli.nn, ...) as attributes, as an eager import made them
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError:
        raise AttributeError(f"module 'n3cli' has no attribute {name!r}") from None
