"""The paper's published PSNR figures (Plötz & Roth, NeurIPS 2018), transcribed for comparison.

Table 3: gray-scale Gaussian denoising, PSNR (dB) on Set12, BSD68 and Urban100 at σ = 25, 50, 70
(None where the paper omits a result). Table 5 (Set5) and supplementary Table 14 (Urban100, BSD100):
single image super-resolution, PSNR (dB) on Y at ×2, ×3, ×4.
"""

from __future__ import annotations

DENOISE_METHODS = ("DnCNN", "BM3D", "NLNet", "UNLNet", "NN3D", "RED30", "FFDNet", "N3Net")
SR_METHODS = ("Bicubic", "SelfEx", "WSD-SR", "MemNet", "MDSR", "VDSR", "N3Net")


def _row(methods: tuple[str, ...], values: tuple[float | None, ...]) -> dict[str, float | None]:
    return dict(zip(methods, values, strict=True))


#: Table 3: {dataset: {sigma: {method: psnr}}}.
TABLE3: dict[str, dict[int, dict[str, float | None]]] = {
    "Set12": {
        25: _row(DENOISE_METHODS, (30.44, 29.96, 30.31, 30.27, 30.45, None, 30.43, 30.55)),
        50: _row(DENOISE_METHODS, (27.19, 26.70, 27.04, 27.07, 27.24, 27.24, 27.31, 27.43)),
        70: _row(DENOISE_METHODS, (25.56, 25.21, None, None, 25.61, 25.71, 25.81, 25.90)),
    },
    "BSD68": {
        25: _row(DENOISE_METHODS, (29.23, 28.56, 29.03, 28.99, 29.19, None, 29.19, 29.30)),
        50: _row(DENOISE_METHODS, (26.23, 25.63, 26.07, 26.07, 26.19, None, 26.29, 26.39)),
        70: _row(DENOISE_METHODS, (24.85, 24.46, None, None, 24.89, None, 25.04, 25.14)),
    },
    "Urban100": {
        25: _row(DENOISE_METHODS, (29.97, 29.71, 29.92, 29.80, 30.09, None, 29.92, 30.19)),
        50: _row(DENOISE_METHODS, (26.28, 25.95, 26.15, 26.14, 26.47, 26.32, 26.52, 26.82)),
        70: _row(DENOISE_METHODS, (24.36, 24.27, None, None, 24.53, 24.63, 24.87, 25.15)),
    },
}

#: Tables 5 and 14: {dataset: {scale: {method: psnr}}}.
SR_TABLES: dict[str, dict[int, dict[str, float | None]]] = {
    "Set5": {  # Table 5
        2: _row(SR_METHODS, (33.68, 36.49, 37.21, 37.78, 38.11, 37.53, 37.57)),
        3: _row(SR_METHODS, (30.41, 32.58, 33.50, 34.09, 34.66, 33.66, 33.84)),
        4: _row(SR_METHODS, (28.43, 30.31, 31.39, 31.74, 32.50, 31.35, 31.50)),
    },
    "Urban100": {  # Table 14
        2: _row(SR_METHODS, (26.88, 29.54, 30.29, 31.31, 32.84, 30.76, 30.80)),
        3: _row(SR_METHODS, (24.46, 26.44, 26.95, 27.56, 28.79, 27.14, 27.19)),
        4: _row(SR_METHODS, (23.14, 24.79, 25.16, 25.50, 26.67, 25.18, 25.23)),
    },
    "BSD100": {  # Table 14 (WSD-SR gives no BSD100 results)
        2: _row(SR_METHODS, (29.56, 31.18, None, 32.05, 32.29, 31.90, 31.98)),
        3: _row(SR_METHODS, (27.21, 28.29, None, 28.95, 29.25, 28.82, 28.91)),
        4: _row(SR_METHODS, (25.96, 26.84, None, 27.38, 27.72, 27.29, 27.34)),
    },
}


def paper_psnr(dataset: str, task: str, setting: float, method: str | None) -> float | None:
    """The paper's PSNR of ``method`` (a column name, e.g. "N3Net", "BM3D", "Bicubic") or None."""
    if method is None:
        return None
    table = TABLE3 if task == "denoise" else SR_TABLES if task == "sr" else {}
    key = int(setting) if float(setting).is_integer() else None
    if key is None:
        return None
    return table.get(dataset, {}).get(key, {}).get(method)
