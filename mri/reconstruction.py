"""Classical reconstructions from k-space lines: what an MRI user would run instead of a diffusion prior.

Every reconstructor takes the same inputs as the diffusion pipeline's fixed-mask path, so any acquisition
strategy's mask (including ADS's final masks) can be reconstructed by any of them:

- ``zero_filled``: x = F^H (M y), the adjoint of the measurement.
- ``cs_tv``: compressed sensing with total variation (Lustig, Donoho, Pauly 2007), solved by FISTA (Beck and
  Teboulle 2009) with the TV proximal step of scikit-image (Chambolle's projection):
      min_x  1/2 || M F x - y ||_2^2 + lam * (TV(Re x) + TV(Im x)),
  TV the isotropic total variation with forward differences (scikit-image's discretisation).
- ``cs_wavelet``: the same with lam * || W x ||_1 (orthonormal Daubechies-4 wavelets of PyWavelets,
  periodised, 3 levels (fewer for images under 64 pixels), approximation band not penalised); the proximal step is complex soft-thresholding.

FISTA (all with step 1, since ||M F|| <= 1 for an orthonormal F and a 0/1 mask):
  1. x_0 = z_1 = F^H y (zero-filled), t_1 = 1;
  2. x_k = prox_{lam R}(z_k - F^H M (M F z_k - y));                            (FISTA step 1)
  3. t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2;  z_{k+1} = x_k + (t_k - 1) / t_{k+1} (x_k - x_{k-1}).  (steps 2-3)
The output is |x_K|. Images use the benchmark's normalisation (each slice's magnitude max is 1), so one weight
serves every slice; :func:`choose_weight` picks it on validation slices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gendiff.operators import KSpaceLineOperator

__all__ = ["RECONSTRUCTORS", "ReconSettings", "choose_weight", "cs_objective", "fista", "reconstruct", "total_variation"]

RECONSTRUCTORS = ("dps", "zero_filled", "cs_tv", "cs_wavelet")  # "dps" is the diffusion pipeline (mri/benchmark.py)


@dataclass
class ReconSettings:
    """Weights (lam) and iterations of the classical reconstructors."""

    cs_tv_weight: float = 0.01
    cs_wavelet_weight: float = 0.01
    cs_iterations: int = 100


def _fft2c(x: np.ndarray) -> np.ndarray:
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), norm="ortho"), axes=ax)


def _ifft2c(k: np.ndarray) -> np.ndarray:
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=ax), norm="ortho"), axes=ax)


def total_variation(x: np.ndarray) -> float:
    """TV(Re x) + TV(Im x), isotropic per channel, forward differences (zero at the last row / column)."""
    tv = 0.0
    for c in (x.real, x.imag):
        dh = np.zeros_like(c)
        dv = np.zeros_like(c)
        dh[:, :-1] = c[:, 1:] - c[:, :-1]
        dv[:-1, :] = c[1:, :] - c[:-1, :]
        tv += float(np.sqrt(dh**2 + dv**2).sum())
    return tv


def _tv_prox(x: np.ndarray, lam: float) -> np.ndarray:
    from skimage.restoration import denoise_tv_chambolle

    out = denoise_tv_chambolle(np.stack([x.real, x.imag], -1), weight=lam, channel_axis=-1)
    return out[..., 0] + 1j * out[..., 1]


def _wavelet(x: np.ndarray):
    try:
        import pywt
    except ModuleNotFoundError:
        raise ModuleNotFoundError("cs_wavelet needs PyWavelets: pip install 'gendiff[mri-cs]'") from None
    level = min(3, pywt.dwt_max_level(min(x.shape), pywt.Wavelet("db4").dec_len))
    arr, slices = pywt.coeffs_to_array(pywt.wavedec2(x, "db4", mode="periodization", level=level))
    return pywt, arr, slices


def _wavelet_l1(x: np.ndarray) -> float:
    _, arr, slices = _wavelet(x)
    detail = np.ones(arr.shape, dtype=bool)
    detail[slices[0]] = False
    return float(np.abs(arr[detail]).sum())


def _wavelet_prox(x: np.ndarray, lam: float) -> np.ndarray:
    pywt, arr, slices = _wavelet(x)
    approx = arr[slices[0]].copy()
    mag = np.abs(arr)
    arr = arr * np.maximum(1.0 - lam / np.maximum(mag, 1e-12), 0.0)  # complex soft threshold
    arr[slices[0]] = approx
    coeffs = pywt.array_to_coeffs(arr, slices, output_format="wavedec2")
    return pywt.waverec2(coeffs, "db4", mode="periodization")


_PRIORS: dict[str, tuple[Callable[[np.ndarray, float], np.ndarray], Callable[[np.ndarray], float]]] = {
    "cs_tv": (_tv_prox, total_variation),
    "cs_wavelet": (_wavelet_prox, _wavelet_l1),
}


def cs_objective(name: str, x: np.ndarray, y: np.ndarray, mask: np.ndarray, lam: float) -> float:
    """1/2 || M F x - y ||^2 + lam R(x) for one complex image ``x [H, W]``, k-space ``y [H, W]``, mask ``[W]``."""
    r = mask[None, :] * _fft2c(x) - y
    return 0.5 * float((np.abs(r) ** 2).sum()) + lam * _PRIORS[name][1](x)


def fista(name: str, y: np.ndarray, mask: np.ndarray, lam: float, iterations: int,
          history: list[float] | None = None) -> np.ndarray:
    """Steps 1-3 for one slice: complex image ``[H, W]`` from masked k-space ``y [H, W]`` and mask ``[W]``.

    ``history``, when given, receives the objective of x_0 and of every iterate (for tests and plots).
    """
    if name not in _PRIORS:
        raise ValueError(f"unknown CS reconstructor {name!r}; expected one of {sorted(_PRIORS)}")
    if lam < 0 or iterations < 0:
        raise ValueError(f"need lam >= 0 and iterations >= 0, got {lam}, {iterations}")
    prox = _PRIORS[name][0]
    m = mask.astype(np.float64)[None, :]
    y = m * y
    x = z = _ifft2c(y)  # Step 1
    t = 1.0
    if history is not None:
        history.append(cs_objective(name, x, y, mask, lam))
    for _ in range(iterations):
        grad = _ifft2c(m * _fft2c(z) - y)
        x_new = prox(z - grad, lam)  # Step 2
        t_new = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0  # Step 3
        z = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
        if history is not None:
            history.append(cs_objective(name, x, y, mask, lam))
    return x


def reconstruct(name: str, targets: Tensor, masks: Tensor, settings: ReconSettings | None = None) -> Tensor:
    """Reconstruct ``targets [S, 2, H, W]`` (complex images, read only through k-space lines) from ``masks [S, W]``.

    Returns magnitudes ``[S, H, W]`` (float32, CPU).
    """
    settings = settings or ReconSettings()
    if targets.ndim != 4 or targets.shape[1] != 2:
        raise ValueError(f"targets must be complex images [S, 2, H, W], got {tuple(targets.shape)}")
    if tuple(masks.shape) != (targets.shape[0], targets.shape[-1]):
        raise ValueError(f"masks must be [S, W] = {(targets.shape[0], targets.shape[-1])}, got {tuple(masks.shape)}")
    op = KSpaceLineOperator(tuple(targets.shape[1:]), targets.shape[0])
    op.mask = masks.bool().to(targets.device)
    y = op.adjoint(op.forward(targets))  # zero-filled images [S, 2, H, W]: only the measured lines enter
    y = y.detach().cpu().double().numpy()
    zf = y[:, 0] + 1j * y[:, 1]
    if name == "zero_filled":
        return torch.from_numpy(np.abs(zf)).float()
    lam = {"cs_tv": settings.cs_tv_weight, "cs_wavelet": settings.cs_wavelet_weight}.get(name)
    if lam is None:
        raise ValueError(f"unknown reconstructor {name!r}; expected one of {list(RECONSTRUCTORS)}")
    m = masks.cpu().numpy().astype(bool)
    out = [np.abs(fista(name, _fft2c(zf[i]), m[i], lam, settings.cs_iterations)) for i in range(zf.shape[0])]
    return torch.from_numpy(np.stack(out)).float()


def choose_weight(name: str, targets: Tensor, masks: Tensor, weights: list[float],
                  iterations: int = 100) -> tuple[float, list[dict]]:
    """The weight of ``weights`` with the highest mean SSIM on validation ``targets`` / ``masks``.

    Returns the chosen weight and one row per weight (mean SSIM and PSNR).
    """
    from gendiff.mri.metrics import slice_metrics

    truth = targets.pow(2).sum(1).sqrt().cpu().numpy()
    rows = []
    for w in weights:
        s = ReconSettings(cs_tv_weight=w, cs_wavelet_weight=w, cs_iterations=iterations)
        met = slice_metrics(truth, reconstruct(name, targets, masks, s).numpy())
        rows.append({"weight": float(w), "ssim": float(met["ssim"].mean()), "psnr": float(met["psnr"].mean())})
    best = max(rows, key=lambda r: r["ssim"])
    return best["weight"], rows
