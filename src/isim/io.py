"""Files in and out: atomic writes, validated image and mask reading, palette PNGs.

Every writer goes through a temp file + rename in the same directory, so an interrupted
run never leaves a half-written file that looks complete.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from isim.errors import IsimError

IGNORE = 255


class DataError(IsimError, ValueError):
    """A data file is unusable; the message names the file and the problem."""


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colormap (bit-interleaved), shape (n, 3) uint8."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


PALETTE = voc_palette()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path next to ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object written by a stage; a clear error naming the file when it is missing or broken."""
    path = Path(path)
    try:
        out = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing; the stage that writes it has not run") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not JSON ({e}); rerun the stage that writes it") from None
    if not isinstance(out, dict):
        raise DataError(f"{path}: expected a JSON object")
    return out


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Rows of equal keys as CSV (DVC plots read these)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


def write_label_png(path: str | Path, mask: np.ndarray) -> None:
    """Palette PNG with the VOC colormap; 255 is the ignore/void label."""
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"{path}: a label mask must be 2-D uint8, got {mask.dtype} {mask.shape}")
    img = Image.fromarray(mask, mode="P")
    img.putpalette(PALETTE.reshape(-1).tolist())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def write_jpeg(path: str | Path, rgb: np.ndarray, quality: int = 95) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="JPEG", quality=quality)


def read_image(path: str | Path, max_pixels: int = 0) -> np.ndarray:
    """RGB uint8 (H, W, 3). Grayscale, CMYK, palette and RGBA inputs are converted
    (alpha dropped); unreadable or truncated files, and images over ``max_pixels`` (0: no
    limit; checked before decoding), raise DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file is missing")
    try:
        with Image.open(path) as f:
            w, h = f.size
            if max_pixels and w * h > max_pixels:
                raise DataError(f"{path}: {w} x {h} = {w * h} pixels, over the limit of {max_pixels}")
            f.load()  # forces a full decode: a truncated file fails here, not later
            im: Image.Image = f
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA").convert("RGB")
            elif im.mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


def read_label_png(path: str | Path, n_classes: int | None = None) -> np.ndarray:
    """A class-index mask (H, W) uint8. Accepts palette ('P') or 8-bit grayscale ('L') PNGs
    whose values are class indices or 255. RGB-coloured and 16-bit masks are refused:
    reading them as indices would silently produce wrong labels."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: mask file is missing")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode not in ("P", "L"):
                hint = ("RGB colours must first be mapped to class indices" if mode.startswith("RGB")
                        else "masks must be 8-bit")
                raise DataError(f"{path}: mask has mode {mode!r}; expected a palette or 8-bit "
                                f"index PNG ({hint})")
            arr = np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"{path}: not a readable mask ({e})") from None
    if n_classes is not None:
        bad = np.unique(arr[(arr >= n_classes) & (arr != IGNORE)])
        if bad.size:
            raise DataError(f"{path}: mask holds label values {bad[:8].tolist()} outside 0..{n_classes - 1} "
                            f"and {IGNORE}")
    return arr


def colorize(mask: np.ndarray) -> np.ndarray:
    """Class-index mask -> RGB picture with the VOC colormap."""
    return PALETTE[mask]
