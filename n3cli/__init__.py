"""n3: image restoration with Neural Nearest Neighbors Networks (Plötz & Roth, NeurIPS 2018).

The Python API: :func:`denoise`, :func:`super_resolve`, :func:`raw_denoise`, :func:`load_model`, :func:`estimate_sigma`;
the networks live in :mod:`n3cli.nn` (``from n3cli.nn import n3net, dncnn``).
"""

from .api import DenoisePlan, Restorer, denoise, estimate_sigma, load_model, plan_denoise, raw_denoise, super_resolve

__version__ = "0.1.0"
__all__ = ["DenoisePlan", "Restorer", "denoise", "estimate_sigma", "load_model", "plan_denoise", "raw_denoise",
           "super_resolve", "__version__"]
