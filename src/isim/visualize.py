"""Pictures for the tracking UI and the README: round grids (paper Fig. 5) and confusion matrices."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from isim import run_layout as layout
from isim.data.prepared import Prepared
from isim.io import PALETTE, colorize, read_image, read_label_png


def _blend(rgb: np.ndarray, mask: np.ndarray, background: float = 0.45) -> np.ndarray:
    """Mask colours over the image; background pixels are the picture scaled by ``background``
    (dimmed in grids, untouched in prediction overlays)."""
    out = (rgb * background).astype(np.uint8)
    fg = mask > 0
    out[fg] = (0.35 * rgb[fg] + 0.65 * colorize(mask)[fg]).astype(np.uint8)
    return out


def overlay(rgb: np.ndarray, mask: np.ndarray, legend: list[tuple[int, str, float]]) -> np.ndarray:
    """`isim predict`'s picture: the photo with each class in its VOC colour, background
    untouched, and a legend of (class index, name, % of the picture) scaled to the photo."""
    from PIL import Image, ImageDraw, ImageFont
    im = Image.fromarray(_blend(rgb, mask, background=1.0))
    draw = ImageDraw.Draw(im)
    size = max(12, min(im.size) // 20)  # legible on a thumbnail and on a full photo
    font = ImageFont.load_default(size=size)
    y = pad = size // 3
    for c, name, share in legend:
        text = f"{name} {share:.0f}%"
        w = int(draw.textlength(text, font=font))
        draw.rectangle([pad, y, 3 * pad + size + w, y + size + pad], fill=(0, 0, 0))
        draw.rectangle([2 * pad, y + pad, 2 * pad + size - pad, y + size], fill=tuple(int(v) for v in PALETTE[c]))
        draw.text((2 * pad + size, y + pad // 2), text, fill=(255, 255, 255), font=font)
        y += size + 2 * pad
    return np.asarray(im)


def example_ids(data: Prepared, split: str, n: int) -> list[str]:
    """``n`` images of ``split`` with objects, for pictures: in id order, each first taken when it
    shows a class no earlier pick shows, so a dataset sorted by class (MSRC's file names) is not
    shown as n photos of its first class; the rest fill up in id order."""
    ids = [i for i in data.ids(split) if data.labels[i]]
    picks: list[str] = []
    seen: set[int] = set()
    for i in ids:
        if len(picks) < n and not set(data.labels[i]) <= seen:
            picks.append(i)
            seen |= set(data.labels[i])
    picks += [i for i in ids if i not in picks][: n - len(picks)]
    return picks


def round_grid(data: Prepared, ids: list[str], round_dir: Path) -> np.ndarray:
    """One row per image: image | ground truth | thresholded CAM (raw) | pseudo mask (after CRF)."""
    rows = []
    for id_ in ids:
        rgb = read_image(data.image_path(id_))
        gt = read_label_png(data.mask_path(id_)) if data.has_masks else np.zeros(rgb.shape[:2], np.uint8)
        raw = read_label_png(layout.raw_dir(round_dir) / f"{id_}.png")
        crf = read_label_png(layout.crf_dir(round_dir) / f"{id_}.png")
        rows.append(np.concatenate([rgb, colorize(gt), _blend(rgb, raw), _blend(rgb, crf)], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(rows, axis=0)


def confusion_figure(conf: np.ndarray, classes: list[str]):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1 + 0.5 * len(classes), 1 + 0.5 * len(classes)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=90)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    for i in range(len(classes)):
        for j in range(len(classes)):
            if norm[i, j] >= 0.01:
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


GRID_HEADER = 16  # px of the column names above a rounds grid


def rounds_grid(data: Prepared, ids: list[str], columns: list[tuple[str, Path]], height: int = 120) -> np.ndarray:
    """Paper Fig. 5: a header with the column names, then one row per image (image | ground
    truth when the dataset has masks | each folder of ``columns``, e.g. the CAM baseline's masks
    then every ISIM round's), rows scaled to ``height`` px; every cell as wide as the widest
    image, so photos of any shape stay under their column's name."""
    from PIL import Image, ImageDraw

    images = [read_image(data.image_path(id_)) for id_ in ids]
    cell_w = max(max(1, round(rgb.shape[1] * height / rgb.shape[0])) for rgb in images)
    gap = 4

    def fit(a: np.ndarray) -> np.ndarray:
        w = max(1, round(a.shape[1] * height / a.shape[0]))
        small = np.asarray(Image.fromarray(a).resize((w, height), Image.Resampling.NEAREST))
        left = (cell_w - w) // 2
        return np.pad(small, ((0, 0), (left, cell_w - w - left), (0, 0)), constant_values=255)

    names = ["image"] + (["ground truth"] if data.has_masks else []) + [name for name, _ in columns]
    rows = []
    for id_, rgb in zip(ids, images):
        cells = [fit(rgb)]
        if data.has_masks:
            cells.append(fit(colorize(read_label_png(data.mask_path(id_)))))
        cells += [fit(_blend(rgb, read_label_png(folder / f"{id_}.png"))) for _, folder in columns]
        white = np.full((height, gap, 3), 255, np.uint8)
        rows.append(np.pad(np.concatenate([c for cell in cells for c in (cell, white)][:-1], axis=1),
                           ((0, gap), (0, 0), (0, 0)), constant_values=255))
    header = Image.new("RGB", (rows[0].shape[1], GRID_HEADER), "white")
    draw = ImageDraw.Draw(header)
    for k, name in enumerate(names):
        draw.text((k * (cell_w + gap) + 2, 2), name, fill=(0, 0, 0))
    return np.concatenate([np.asarray(header)] + rows, axis=0)
