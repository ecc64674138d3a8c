"""Embedded synthetic weakly-supervised benchmark in exact VOC2012 layout.

Design (why it is not trivial):
- every object is a large *body* (a smooth random blob) at least 80 RGB units from the
  background around it, an edge a dense CRF can follow;
- the class is certain only in a small *mark* placed off-centre near the body's edge, with a
  class-specific shape (cross, ring, triangle, stripes, checker, dots), tinted along a
  class-specific colour direction (bodies and background are desaturated): a classifier
  succeeds first by looking at the mark, so its CAM covers the mark and a little around it,
  not the whole body - as CAMs do on photos;
- with ``body_evidence`` (default) the body carries weaker, overlapping class evidence, as a
  dog's fur and legs do on photos: its hue and the period of its stripes are drawn around the
  class's own (class c: hue c/6 of the colour circle, period 5 + 1.5c px) with a spread of
  ``body_spread`` class spacings, at low saturation, so neighbouring classes overlap and a body
  alone names its class far less surely than its mark. The mark is what a classifier finds
  first; what the rest of the object looks like is what ISIM's segmentation loss can teach.
  ``body_evidence: false`` draws every body from one distribution shared by all classes (the
  earlier design: the body alone says nothing about the class);
- *distractor* bodies without a mark are background, so "any body" is not a shortcut; their hue
  and period are drawn from the whole range (objects of classes outside the label set);
- bodies overlap (occlusion), backgrounds are smooth colour fields with noise, lines and small
  blobs; a 255 void band a few pixels wide runs along object boundaries, as in VOC.
Everything is deterministic from the seed: image ``i`` depends only on (seed, i).
"""
from __future__ import annotations

import colorsys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from isim.config import SyntheticCfg
from isim.data.prepared import labels_from_mask, write_labels, write_split
from isim.io import IGNORE, write_jpeg, write_label_png

MARKS = ["cross", "ring", "triangle", "stripes", "checker", "dots"]


def _mark_pattern(kind: int, m: int) -> np.ndarray:
    """Boolean m x m pattern of mark design ``kind``."""
    y, x = np.mgrid[0:m, 0:m].astype(np.float32) + 0.5
    c = m / 2
    if kind == 0:  # cross
        w = m / 5
        return (np.abs(x - c) < w) | (np.abs(y - c) < w)
    if kind == 1:  # ring
        r = np.hypot(x - c, y - c)
        return (r < 0.5 * m) & (r > 0.25 * m)
    if kind == 2:  # triangle, apex up
        return (y > m * 0.1) & (np.abs(x - c) < (y - m * 0.1) * 0.55)
    if kind == 3:  # three horizontal stripes
        return (np.floor(y / (m / 5)).astype(int) % 2) == 1
    if kind == 4:  # 3 x 3 checker
        return ((np.floor(x / (m / 3)) + np.floor(y / (m / 3))).astype(int) % 2) == 0
    if kind == 5:  # 2 x 2 dots
        q = m / 4
        d = np.minimum(np.hypot(x - q, y - q), np.hypot(x - 3 * q, y - q))
        d = np.minimum(d, np.minimum(np.hypot(x - q, y - 3 * q), np.hypot(x - 3 * q, y - 3 * q)))
        return d < m / 7
    raise ValueError(kind)


def _blob(rng: np.random.Generator, size: int, cy: float, cx: float, diam: float) -> np.ndarray:
    """Smooth random blob: an elongated, rotated disc with low-frequency radial wobble."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = y - cy, x - cx
    rot = rng.uniform(0, np.pi)
    u = dx * np.cos(rot) + dy * np.sin(rot)
    v = -dx * np.sin(rot) + dy * np.cos(rot)
    aspect = rng.uniform(0.7, 1.0)
    u, v = u * np.sqrt(aspect), v / np.sqrt(aspect)
    theta, rho = np.arctan2(v, u), np.hypot(u, v)
    r = np.full_like(theta, diam / 2)
    for k in (2, 3):
        r = r * (1 + rng.uniform(0, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)))
    return rho <= r


def _dull(rng: np.random.Generator, max_sat: float = 0.35) -> np.ndarray:
    """A desaturated colour (0-255 RGB): bodies, background and clutter never look like marks."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.0, max_sat), rng.uniform(0.2, 0.95))
    return np.array(rgb, np.float32) * 255


# class-specific colour shifts of the mark relative to its body (+-R, +-G, +-B)
_SHIFTS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0], [0, -1, 0], [0, 0, -1]], np.float32)


def _mark_shift(rng: np.random.Generator, kind: int, body: np.ndarray, strength: float,
                keep_hue: bool = False):
    """(body colour, mark colour): the mark is the body's colour pushed along the class's
    direction - a tint, not a new object, so the CRF sees mark and body as one region while the
    classifier can still read the class. The body colour moves so the tint never clips: per
    channel, or (``keep_hue``) by scaling and lifting all channels alike, so a body's hue, which
    then carries class evidence, stays its own."""
    shift = _SHIFTS[kind] * strength * rng.uniform(0.85, 1.15)
    lo, hi = np.maximum(-shift, 0) + 10, 245 - np.maximum(shift, 0)
    if keep_hue:
        body = body * min(1.0, float(np.min(hi / np.maximum(body, 1e-3))))
        body = body + max(0.0, float(np.max(lo - body)))
    body = np.clip(body, lo, hi)
    return body, body + shift


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    grid = np.stack([_dull(rng) for _ in range(16)]).reshape(4, 4, 3)
    img = ndimage.zoom(grid, (size / 4, size / 4, 1), order=1)[:size, :size]
    img = img + rng.normal(0, 10, img.shape)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(rng.integers(4, 9)):  # thin straight lines
        a, b = rng.uniform(0, size, 2), rng.uniform(0, size, 2)
        d = b - a
        t = np.clip(((y - a[0]) * d[0] + (x - a[1]) * d[1]) / (d @ d + 1e-6), 0, 1)
        dist = np.hypot(y - a[0] - t * d[0], x - a[1] - t * d[1])
        img[dist < rng.uniform(0.6, 1.4)] = _dull(rng, 0.5)
    for _ in range(rng.integers(4, 10)):  # small clutter blobs
        r = rng.uniform(2, 6)
        c = rng.uniform(0, size, 2)
        img[np.hypot(y - c[0], x - c[1]) < r] = _dull(rng, 0.5)
    return img


def _body_colour(rng: np.random.Generator, local_bg: np.ndarray, hue: float | None = None) -> np.ndarray:
    """A body colour kept distinguishable from the background (an edge a dense CRF can follow):
    any hue (``hue=None``: shared by all classes), or around ``hue`` at low saturation."""
    for _ in range(20):
        if hue is None:
            col = _dull(rng)
        else:
            rgb = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.15, 0.35), rng.uniform(0.2, 0.95))
            col = np.array(rgb, np.float32) * 255
        if np.linalg.norm(col - local_bg) > 80:
            return col
    return 255 - local_bg


# body evidence of class c (0-based): hue c/6 of the circle, stripe period 5 + 1.5c px
_HUE_STEP, _PERIOD0, _PERIOD_STEP = 1 / 6, 5.0, 1.5


def _evidence_body(rng: np.random.Generator, cfg: SyntheticCfg, kind: int, local_bg: np.ndarray,
                   s: int) -> tuple[np.ndarray, np.ndarray]:
    """(colour, texture) of a body whose hue and stripe period lie around its class's (distractors,
    ``kind < 0``: anywhere in the classes' range). Stripes run at a random angle: their period
    survives flips and small rescaling only approximately, as fur and skin do."""
    n = len(cfg.classes)
    if kind >= 0:
        hue = kind * _HUE_STEP + rng.normal(0, cfg.body_spread * _HUE_STEP)
        period = _PERIOD0 + _PERIOD_STEP * (kind + rng.normal(0, cfg.body_spread))
    else:
        hue = rng.uniform()
        period = _PERIOD0 + _PERIOD_STEP * rng.uniform(-0.5, n - 0.5)
    col = _body_colour(rng, local_bg, hue)
    angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:s, 0:s].astype(np.float32)
    wave = np.sin(2 * np.pi * (y * np.cos(angle) + x * np.sin(angle)) / max(period, 3.0) + phase)
    return col, (rng.normal(0, 6, (s, s)) + 14 * wave)[..., None]


def render(cfg: SyntheticCfg, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of the dataset: (RGB uint8 HxWx3, mask uint8 HxW with 255 void band)."""
    img, label, _ = render_with_marks(cfg, index)
    return img, label


def render_with_marks(cfg: SyntheticCfg, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``render`` plus where the marks are (bool HxW): what the benchmark's own checks measure
    class evidence in, apart from the rest of the bodies."""
    rng = np.random.default_rng([cfg.seed, index])
    s = cfg.size
    img = _background(rng, s)
    label = np.zeros((s, s), np.uint8)
    n_obj = int(rng.integers(cfg.objects[0], cfg.objects[1] + 1))
    n_dis = int(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1))
    kinds = [int(rng.integers(len(cfg.classes))) for _ in range(n_obj)] + [-1] * n_dis
    order = rng.permutation(len(kinds))  # distractors may lie above or below real objects
    marks: list[tuple[np.ndarray, int]] = []  # (mark pixels, class) to keep visible
    for j in order:
        kind = kinds[j]
        for _attempt in range(30):
            diam = float(rng.uniform(*cfg.body_size))
            m = max(6, int(round(diam * cfg.mark_scale)))
            cy, cx = rng.uniform(diam * 0.35, s - diam * 0.35, 2)
            body = _blob(rng, s, cy, cx, diam)
            covered = [np.mean(body[mk]) for mk, _ in marks]
            if body.sum() < 0.3 * np.pi * (diam / 2) ** 2 or any(c > 0.1 for c in covered):
                continue  # mostly outside the image, or would hide an earlier mark
            inner = ndimage.distance_transform_edt(body)
            if kind >= 0 and inner.max() < m / 2 + 2:
                continue  # no room for the mark
            break
        else:
            continue
        if cfg.body_evidence:
            col, tex = _evidence_body(rng, cfg, kind, img[body].mean(0), s)
            if kind >= 0:
                col, mark_col = _mark_shift(rng, kind, col, cfg.mark_contrast, keep_hue=True)
        else:  # the shared-body design (bodies carry no class evidence)
            col = _body_colour(rng, img[body].mean(0))
            if kind >= 0:
                col, mark_col = _mark_shift(rng, kind, col, cfg.mark_contrast)
            tex = rng.normal(0, 7, (s, s, 1)) + 10 * np.sin(
                (np.mgrid[0:s, 0:s][0] * np.cos(rng.uniform(0, np.pi)) + rng.uniform(0, 9)) / 5)[..., None]
        img[body] = (col + tex[body]).clip(0, 255)
        if kind < 0:
            label[body] = 0
            continue
        label[body] = kind + 1
        # mark centre: a point near the edge (off-centre), deep enough for the mark to fit
        ok = (inner >= m / 2 + 1) & (inner <= m / 2 + 5)
        if not ok.any():
            ok = inner >= inner.max() - 0.5
        ys, xs = np.nonzero(ok)
        k = int(rng.integers(len(ys)))
        y0, x0 = int(ys[k] - m // 2), int(xs[k] - m // 2)
        pat = np.zeros((s, s), bool)
        pat[max(y0, 0):y0 + m, max(x0, 0):x0 + m] = _mark_pattern(kind, m)[
            max(-y0, 0):s - y0, max(-x0, 0):s - x0]
        pat &= body
        img[pat] = mark_col
        marks.append((pat, kind + 1))
    img = ndimage.gaussian_filter(img, sigma=(0.6, 0.6, 0))
    # VOC-style void band along every boundary between different labels
    w = cfg.void_width
    if w > 0:
        size = 2 * w + 1
        band = ndimage.maximum_filter(label, size) != ndimage.minimum_filter(label, size)
        label = label.copy()
        label[band] = IGNORE
    mark_px = np.zeros((s, s), bool)
    for pat, _ in marks:
        mark_px |= pat
    return img.clip(0, 255).astype(np.uint8), label, mark_px


def generate(cfg: SyntheticCfg, out: str | Path) -> dict[str, float]:
    """Write the whole dataset; returns counts and the generation time."""
    out = Path(out)
    t0 = time.perf_counter()
    classes = ["background", *cfg.classes]
    labels: dict[str, list[int]] = {}
    splits = {"train": [f"syn_{i:05d}" for i in range(cfg.n_train)],
              "val": [f"syn_{i:05d}" for i in range(cfg.n_train, cfg.n_train + cfg.n_val)]}
    for split, ids in splits.items():
        for id_ in ids:
            img, mask = render(cfg, int(id_[4:]))
            write_jpeg(out / "JPEGImages" / f"{id_}.jpg", img)
            write_label_png(out / "SegmentationClass" / f"{id_}.png", mask)
            labels[id_] = labels_from_mask(mask, len(classes))
        write_split(out, split, ids)
    write_labels(out, classes, labels, has_masks=True, source="synthetic")
    n_empty = sum(1 for v in labels.values() if not v)
    return {"images": len(labels), "seconds": time.perf_counter() - t0, "no_object_images": n_empty}
