"""Side-by-side pictures of conductivity-change volumes: axial slices plus one coronal slice;
and rows of small 2D images (`image_rows`, the diffusion prior's training and sample images).

Each panel (truth, reconstructions, ...) is one row: axial slices at evenly spaced heights
and a coronal slice through the middle row. Axial slices are radiological: row 0 (anterior) at
the top, column 0 (patient's right) on the image's left. The coronal slice keeps the columns
the same way round and puts the top plane (cranial) up. Voxels outside the mask are grey. All
panels share one diverging colour scale centred on zero and one colour bar (Δσ/σ0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure

CMAP = "RdBu_r"
OUTSIDE = "0.85"  # grey for voxels outside the body
DPI = 100
N_AXIAL = 4


def axial_planes(n_planes: int, count: int = N_AXIAL) -> list[int]:
    """`count` evenly spaced plane indices (the centres of `count` equal slabs), bottom to top."""
    count = min(count, n_planes)
    return sorted({int((k + 0.5) * n_planes / count) for k in range(count)})


def _colormap() -> Colormap:
    """The diverging colour map, grey for masked (outside-body) voxels."""
    return colormaps[CMAP].with_extremes(bad=OUTSIDE)


def _limit(panels: list[tuple[str, np.ndarray]], mask: np.ndarray) -> float:
    """The symmetric colour limit: max |value| inside the mask over all panels (1 if all zero)."""
    peak = max(float(np.abs(vol[mask]).max()) for _, vol in panels)
    return peak if peak > 0 else 1.0


def _check(panels: list[tuple[str, np.ndarray]], mask: np.ndarray,
           size_px: tuple[int, int]) -> None:
    if not panels:
        raise ValueError("plot: no panels to draw")
    if mask.ndim != 3 or not mask.any():
        raise ValueError(f"plot: mask must be a non-empty (P, R, C) array, got {mask.shape}")
    for name, vol in panels:
        if vol.shape != mask.shape:
            raise ValueError(f"plot: panel {name!r} has shape {vol.shape}, mask {mask.shape}")
    if min(size_px) < 1:
        raise ValueError(f"plot: size must be positive, got {size_px}")


def plot_volumes(panels: list[tuple[str, np.ndarray]], mask: np.ndarray,
                 out_path: str | Path, size_px: tuple[int, int] = (1600, 900),
                 frame_label: str | None = None) -> Figure:
    """Draw one row per (name, (P, R, C) volume) panel and write a PNG of exactly `size_px`.

    Returns the figure (already saved to `out_path`) for inspection.
    """
    mask = np.asarray(mask, dtype=bool)
    panels = [(name, np.asarray(vol, dtype=np.float64)) for name, vol in panels]
    _check(panels, mask, size_px)
    n_planes, n_rows, _ = mask.shape
    planes = axial_planes(n_planes)
    mid_row = n_rows // 2
    limit = _limit(panels, mask)
    norm = Normalize(vmin=-limit, vmax=limit)
    cmap = _colormap()

    width, height = size_px
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), len(planes) + 1, squeeze=False)
    for row, (name, vol) in enumerate(panels):
        for col, plane in enumerate(planes):
            ax = axes[row, col]
            ax.imshow(np.ma.array(vol[plane], mask=~mask[plane]), cmap=cmap, norm=norm,
                      origin="upper", interpolation="nearest")
            if row == 0:
                ax.set_title(f"axial, plane {plane} ({100 * (plane + 0.5) / n_planes:.0f}% up)",
                             fontsize="small")
        ax = axes[row, -1]
        ax.imshow(np.ma.array(vol[:, mid_row], mask=~mask[:, mid_row]), cmap=cmap, norm=norm,
                  origin="lower", interpolation="nearest")
        if row == 0:
            ax.set_title(f"coronal, row {mid_row} (cranial up)", fontsize="small")
        axes[row, 0].set_ylabel(f"{name}\nanterior ↑", fontsize="medium")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[-1]:
        ax.set_xlabel("patient's right ↔ left", fontsize="small")
    colorbar = fig.colorbar(axes[0, 0].images[0], ax=axes, shrink=0.8)
    colorbar.set_label("Δσ/σ0")
    if frame_label:
        fig.suptitle(frame_label)
    fig.savefig(out_path, dpi=DPI, format="png")
    return fig


def image_rows(rows: list[tuple[str, np.ndarray]], path: Path) -> None:
    """Rows of grey images (N, 1, H, W) in [-1, 1], one labelled row each, saved to `path`."""
    cols = max(len(images) for _, images in rows)
    fig = Figure(figsize=(cols * 0.8, len(rows) * 0.9))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.set_axis_off()
            if c < len(images):
                ax.imshow(images[c, 0], cmap="gray", vmin=-1, vmax=1)
        axes[r][0].set_title(label, loc="left", fontsize=8)
    fig.savefig(path, dpi=DPI)


def plot_planes(panels: list[tuple[str, np.ndarray]], mask: np.ndarray, out_path: str | Path,
                columns: int = 4, title: str | None = None) -> Figure:
    """Draw 2D pictures (R, C) (an electrode plane per method) in a grid of `columns`, one
    shared colour scale centred on zero, pixels outside `mask` (R, C) grey; write a PNG."""
    mask = np.asarray(mask, dtype=bool)
    if not panels or mask.ndim != 2:
        raise ValueError("plot: give at least one panel and an (R, C) mask")
    limit = _limit(panels, mask)
    norm, cmap = Normalize(vmin=-limit, vmax=limit), _colormap()
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(2.6 * columns + 1.0, 2.7 * rows + 0.4), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False)
    image = None
    for ax, (name, picture) in zip(axes.ravel(), panels, strict=False):
        image = ax.imshow(np.ma.array(picture, mask=~mask), cmap=cmap, norm=norm,
                          origin="upper", interpolation="nearest")
        ax.set_title(name, fontsize="small")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes, shrink=0.8, label="Δσ/σ0")
    if title:
        fig.suptitle(title, fontsize="small")
    fig.savefig(out_path)
    return fig
