"""Image-quality metrics of reconstructed volumes against the truth: CC, PSNR, MSSIM, ERR.

All four are computed on the voxels inside the body mask, frame by frame (as in the D2IP
paper, section V.A). With x the reconstruction and x* the truth of one frame:

- CC    = Pearson correlation of the masked voxels of x and x*;
- ERR   = ||x - x*||_2 / ||x*||_2, the relative error over the masked voxels;
- PSNR  = 10 log10(data_range^2 / MSE), MSE the mean of (x - x*)^2 over the masked voxels;
- MSSIM = mean over the masked voxels of the 3D SSIM map of x against x*.

For 2D pictures (the electrode plane of a tank, `plane_at`), `psnr` and `mssim` take (R, C)
arrays the same way, and `rcr` gives the Relative size Coverage Ratio of each inclusion
(Diff-INR eq. 19).

One ruler for everything: `data_range` is the truth's max - min over the masked voxels of the
whole sequence, so all frames and all methods scored against one truth share it (a per-frame
range would inflate PSNR on the quiet frames). SSIM uses skimage's uniform window of side 7,
reduced to the largest odd size <= the grid's smallest axis on small grids; voxels outside the
mask are zeroed in both volumes first, so the score depends only on values inside the body.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

METRICS = ("cc", "psnr", "mssim", "err")
DEFAULT_WINDOW = 7


def ssim_window(shape: tuple[int, ...]) -> int | None:
    """The SSIM window side for a (P, R, C) grid: 7, or the largest odd size <= its smallest
    axis; None when that axis is shorter than 3 (no window holds a sample variance)."""
    side = min(DEFAULT_WINDOW, min(shape))
    side -= 1 - side % 2
    return side if side >= 3 else None


def data_range(truth: np.ndarray, mask: np.ndarray) -> float:
    """The truth's max - min over the masked voxels of all frames (the shared ruler)."""
    inside = truth[..., mask]
    return float(inside.max() - inside.min())


def cc(x: np.ndarray, truth: np.ndarray) -> float:
    """Pearson correlation of two voxel vectors; nan when either one is constant."""
    dx, dt = x - x.mean(), truth - truth.mean()
    denom = np.sqrt(np.dot(dx, dx) * np.dot(dt, dt))
    return float(np.dot(dx, dt) / denom) if denom > 0 else float("nan")


def err(x: np.ndarray, truth: np.ndarray) -> float:
    """Relative error ||x - x*|| / ||x*|| of two voxel vectors; nan when the truth is zero."""
    ref = np.linalg.norm(truth)
    return float(np.linalg.norm(x - truth) / ref) if ref > 0 else float("nan")


def psnr(x: np.ndarray, truth: np.ndarray, rng: float) -> float:
    """10 log10(rng^2 / MSE) of two voxel vectors; inf when they are equal, nan when rng is 0."""
    if rng <= 0:
        return float("nan")
    if np.array_equal(x, truth):
        return float("inf")
    return float(peak_signal_noise_ratio(truth, x, data_range=rng))


def mssim(x: np.ndarray, truth: np.ndarray, mask: np.ndarray, rng: float,
          window: int | None) -> float:
    """Mean of the 3D SSIM map over the mask (both volumes zeroed outside it)."""
    if window is None or rng <= 0:
        return float("nan")
    _, ssim_map = structural_similarity(np.where(mask, truth, 0.0), np.where(mask, x, 0.0),
                                        win_size=window, data_range=rng, full=True)
    return float(ssim_map[mask].mean())


def _check_shapes(volumes: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> None:
    if volumes.ndim != 4:
        raise ValueError(f"volumes: expected (T, P, R, C), got shape {volumes.shape}")
    if volumes.shape != truth.shape:
        raise ValueError(f"shape mismatch: volumes {volumes.shape} vs truth {truth.shape}")
    if mask.shape != volumes.shape[1:]:
        raise ValueError(f"shape mismatch: mask {mask.shape} vs volumes {volumes.shape[1:]}")
    if not mask.any():
        raise ValueError("mask: no voxel is inside the body")


def _mean(values: list[float]) -> float:
    """Mean over the frames where the metric is defined (nan when none is)."""
    defined = [v for v in values if not np.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def score(volumes: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """Per-frame and mean CC, PSNR, MSSIM, ERR of `volumes` against `truth` inside `mask`.

    volumes and truth are (T, P, R, C) (a single (P, R, C) frame is accepted too), mask is
    (P, R, C) bool. Returns {"frames": T, "cc": [...], "psnr": [...], "mssim": [...],
    "err": [...], "mean": {metric: value}, "window": int | None, "data_range": float,
    "notes": [str]}. Undefined values are nan (see the notes); means skip them.
    """
    volumes = np.asarray(volumes, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if volumes.ndim == 3 and truth.ndim == 3:
        volumes, truth = volumes[None], truth[None]
    _check_shapes(volumes, truth, mask)
    rng = data_range(truth, mask)
    window = ssim_window(mask.shape)
    result: dict[str, Any] = {m: [] for m in METRICS}
    for x_vol, t_vol in zip(volumes, truth, strict=True):
        x, t = x_vol[mask], t_vol[mask]
        result["cc"].append(cc(x, t))
        result["psnr"].append(psnr(x, t, rng))
        result["mssim"].append(mssim(x_vol, t_vol, mask, rng, window))
        result["err"].append(err(x, t))
    result.update(frames=len(volumes), mean={m: _mean(result[m]) for m in METRICS},
                  window=window, data_range=rng, notes=_notes(result, rng, window))
    return result


def _notes(result: dict[str, Any], rng: float, window: int | None) -> list[str]:
    """Plain-language reasons for every undefined (nan) value."""
    notes = []
    if rng <= 0:
        notes.append("truth is constant inside the mask: no data range, PSNR and MSSIM undefined")
    if window is None:
        notes.append("grid has an axis shorter than 3 voxels: 3D SSIM undefined")
    for metric, why in (("cc", "truth or reconstruction constant inside the mask"),
                        ("err", "truth is zero inside the mask")):
        bad = [i for i, v in enumerate(result[metric]) if np.isnan(v)]
        if bad:
            notes.append(f"{metric.upper()} undefined ({why}) in frame(s) "
                         f"{', '.join(map(str, bad))}; means skip them")
    return notes


def plane_at(volume: np.ndarray, height: float) -> np.ndarray:
    """The (R, C) picture at `height` (a fraction of the slab, 0 bottom, 1 top) of a (P, R, C)
    volume: linear interpolation between the two nearest plane centres."""
    planes = volume.shape[0]
    position = float(np.clip(height * planes - 0.5, 0.0, planes - 1.0))
    low = int(np.floor(position))
    high = min(low + 1, planes - 1)
    f = position - low
    return (1.0 - f) * volume[low] + f * volume[high]


HALF_MAXIMUM = 0.5


def rcr(picture: np.ndarray, inclusions: np.ndarray, areas: np.ndarray, signs: np.ndarray,
        mask: np.ndarray, domain_area: float) -> np.ndarray:
    """RCR_k = CR_k / CR*_k (Diff-INR eq. 19) for K inclusions of a 2D picture (R, C).

    CR* = area_k / domain_area from the true areas. The reconstructed area of inclusion k is
    the pixels of its cell (the masked pixels nearer to it than to any other inclusion;
    `inclusions` (K, R, C) bool marks where each one lies) whose value, times the
    inclusion's sign (+1 more, -1 less conductive), reaches HALF_MAXIMUM of the cell's
    largest such value; CR = that pixel count over the mask's. The seed does not say how it
    segments; half maximum is the usual rule (GREIT's). 0 when the cell has no value of the
    inclusion's sign.
    """
    distances = np.stack([ndimage.distance_transform_edt(~inc) for inc in inclusions])
    cells = (np.argmin(distances, axis=0)[None] == np.arange(len(inclusions))[:, None, None])
    out = []
    for cell, area, sign in zip(cells & mask, areas, signs, strict=True):
        signed = sign * picture[cell]
        peak = signed.max() if signed.size else 0.0
        count = int((signed >= HALF_MAXIMUM * peak).sum()) if peak > 0 else 0
        out.append((count / mask.sum()) / (area / domain_area))
    return np.asarray(out)
