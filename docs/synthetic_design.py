"""Draw docs/synthetic_design.png: the embedded benchmark's design, row by row.

    .venv/bin/python docs/synthetic_design.py

Rows: images; ground truth (VOC palette, void band in cream); where the class evidence lies
(marks white: strong; the rest of each object grey: weaker, overlapping); and, per class,
bodies with their marks cut out (hue and stripe period around the class's own).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from isim.config import SyntheticCfg
from isim.data.synthetic import render_with_marks
from isim.io import IGNORE, colorize

OUT = Path(__file__).with_name("synthetic_design.png")


def main() -> None:
    cfg = SyntheticCfg()
    n, s = 8, cfg.size
    imgs, truths, evidence = [], [], []
    for i in range(n):
        img, lab, marks = render_with_marks(cfg, i)
        imgs.append(img)
        truths.append(colorize(lab))
        ev = np.zeros((s, s, 3), np.uint8)
        ev[(lab > 0) & (lab != IGNORE)] = 110
        ev[marks] = 255
        evidence.append(ev)
    # per class: bodies of that class, marks blanked, from the first images that hold one
    crops: dict[int, list[np.ndarray]] = {c: [] for c in range(1, len(cfg.classes) + 1)}
    i = n
    while any(len(v) < n // len(crops) + 1 for v in crops.values()) and i < 400:
        img, lab, marks = render_with_marks(cfg, i)
        for c in np.unique(lab):
            if c in (0, IGNORE) or len(crops[int(c)]) > n // len(crops):
                continue
            body = (lab == c) & ~marks
            ys, xs = np.nonzero(body)
            if len(ys) < 1500:
                continue
            y0, x0 = int(ys.mean()) - 28, int(xs.mean()) - 28
            patch = np.where(body[..., None], img, 255)[max(y0, 0):y0 + 56, max(x0, 0):x0 + 56]
            if patch.shape[:2] == (56, 56):
                crops[int(c)].append(patch)
        i += 1
    rows = [np.concatenate(r, 1) for r in (imgs, truths, evidence)]
    per = [np.concatenate(v[:2], 1) for v in crops.values()]  # 56 x 112 per class
    width = n * s // len(per)
    strip = np.full((72, n * s, 3), 255, np.uint8)
    for k, p in enumerate(per):
        strip[:56, k * width:k * width + p.shape[1]] = p
    canvas = Image.fromarray(np.concatenate([*rows, strip], 0))
    d = ImageDraw.Draw(canvas)
    for k, name in enumerate(cfg.classes):
        d.text((k * width, 3 * s + 58), f"{name} bodies", fill=(0, 0, 0))
    canvas.save(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
