"""Weight-free saliency for the CPU demo: colour contrast and spectral residual, a centre prior, pooled to patches.

Why these two: a pedestrian crop is mostly the person, framed by background and occluders. The
frequency-tuned colour contrast (Achanta et al., CVPR 2009: distance of each blurred Lab pixel to the image's
mean Lab colour) lights up whatever differs from the dominant colours, i.e. the person against a uniform
scene; the spectral residual (Hou & Zhang, CVPR 2007: the log-amplitude spectrum minus its local mean,
back-transformed with the original phase) lights up compact structures that break the image's statistics,
i.e. edges and limbs, and is indifferent to overall brightness. Their mean is steadier than either. The
centre prior (a Gaussian over rows and, tighter, over columns) encodes that detectors centre the person
horizontally. Each map is scaled to [0, 1] per image, pooled to the patch grid with the pipeline's pixel
ownership (:meth:`PatchGeometry.pool`) and scaled to [0, 1] again, so binarising at 0.5 keeps the patches at
least half as salient as the most salient one. A flat image has no salient part: its map is all zeros.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.color import rgb2lab
from skimage.transform import resize

from occreid.saliency.config import ClassicalConfig
from occreid.saliency.geometry import PatchGeometry

_EPS = 1e-12


def unit_scale(x: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1]; a constant map becomes all zeros (nothing stands out)."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= 1e-9 * max(1.0, abs(hi)):
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def colour_contrast(rgb: np.ndarray, blur: float = 1.0) -> np.ndarray:
    """Frequency-tuned saliency: ‖Lab(blurred pixel) − mean Lab‖ per pixel, ``[H, W]`` float64."""
    img = np.asarray(rgb, dtype=np.float64) / 255.0
    if blur > 0:
        img = ndimage.gaussian_filter(img, sigma=(blur, blur, 0), mode="nearest")
    lab = rgb2lab(np.clip(img, 0.0, 1.0))
    return np.linalg.norm(lab - lab.reshape(-1, 3).mean(axis=0), axis=-1)


def spectral_residual(gray: np.ndarray, size: int = 64) -> np.ndarray:
    """Spectral-residual saliency of a grey image, computed at longer side ``size``, returned at its size."""
    gray = np.asarray(gray, dtype=np.float64)
    H, W = gray.shape
    scale = size / max(H, W)
    small_shape = (max(4, round(H * scale)), max(4, round(W * scale)))
    small = resize(gray, small_shape, order=1, anti_aliasing=True, mode="reflect")
    spectrum = np.fft.fft2(small)
    log_amp = np.log(np.abs(spectrum) + _EPS)
    residual = log_amp - ndimage.uniform_filter(log_amp, size=3, mode="nearest")
    sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    sal = ndimage.gaussian_filter(sal, sigma=max(small_shape) / 32.0, mode="nearest")
    return resize(sal, (H, W), order=1, mode="edge")


def centre_prior(shape: tuple[int, int], sigma: tuple[float, float]) -> np.ndarray:
    """Gaussian weight centred in the image; ``sigma`` are fractions of (H, W). Peak 1."""
    H, W = shape
    y = (np.arange(H) + 0.5) / H - 0.5
    x = (np.arange(W) + 0.5) / W - 0.5
    return np.exp(-0.5 * ((y[:, None] / sigma[0]) ** 2 + (x[None, :] / sigma[1]) ** 2))


def pixel_saliency(rgb: np.ndarray, cfg: ClassicalConfig) -> np.ndarray:
    """Classical saliency of an RGB uint8 image ``[H, W, 3]`` per pixel, in [0, 1]."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {rgb.shape}")
    if (rgb == rgb[:1, :1]).all():  # a constant image: the spectra below would only amplify rounding noise
        return np.zeros(rgb.shape[:2], np.float64)
    parts = []
    if cfg.method in ("contrast", "both"):
        parts.append(unit_scale(colour_contrast(rgb, cfg.blur)))
    if cfg.method in ("spectral", "both"):
        gray = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
        parts.append(unit_scale(spectral_residual(gray, cfg.spectral_size)))
    sal = np.mean(parts, axis=0)
    if cfg.centre_sigma is not None:
        sal = sal * centre_prior(sal.shape, tuple(cfg.centre_sigma))
    return unit_scale(sal)


def classical_saliency(rgb: np.ndarray, geometry: PatchGeometry, cfg: ClassicalConfig) -> np.ndarray:
    """Classical saliency pooled to the patch grid, ``[h, w]`` float32 in [0, 1].

    ``rgb`` must already have the geometry's image size (the caller resizes, as the model's input does).
    """
    if tuple(np.asarray(rgb).shape[:2]) != geometry.img_size:
        raise ValueError(f"image of shape {np.asarray(rgb).shape} is not of size {geometry.img_size}")
    return unit_scale(geometry.pool(pixel_saliency(rgb, cfg))).astype(np.float32)
