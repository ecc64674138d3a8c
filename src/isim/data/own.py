"""The user's own data -> the prepared layout.

- ``yolo``: images + YOLO segmentation polygons (``class x1 y1 ... xn yn``, normalised) and a
  ``data.yaml`` with the source class names (COCO/Ultralytics style). Source classes are
  mapped to the target classes by ``class_map``; unmapped objects become background or 255
  (ignore), the user's choice, and never cover a mapped object. Polygons are filled largest
  first, so smaller objects that lie on larger ones stay visible.
- ``csv``: images + a CSV ``id,classes`` (classes separated by ``|``) for users without masks:
  only image-level labels; no mIoU can be reported, only pseudo labels.
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

from isim.config import DataCfg, OwnCfg
from isim.data.layout import labels_from_mask, write_labels, write_split
from isim.io import IGNORE, DataError, read_image, write_jpeg, write_label_png

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder does not exist")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            if p.stem in found:
                raise DataError(f"{p}: two images share the id {p.stem!r} ({found[p.stem].name})")
            found[p.stem] = p
    if not found:
        raise DataError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return found


def read_names(path: Path) -> list[str]:
    """Source class names from a YOLO data.yaml (``names`` as a list or an index mapping)."""
    try:
        names = yaml.safe_load(path.read_text())["names"]
    except FileNotFoundError:
        raise DataError(f"{path}: data.yaml is missing") from None
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise DataError(f"{path}: no class names (`names:`) in it ({e})") from None
    if isinstance(names, dict):
        return [str(names[i]) for i in sorted(names)]
    return [str(n) for n in names]


def read_polygons(path: Path, n_source: int) -> list[tuple[int, np.ndarray]]:
    """[(source class, (k, 2) normalised xy)] from a YOLO segmentation label file."""
    polys = []
    for ln_no, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls = int(parts[0])
            xy = np.asarray([float(v) for v in parts[1:]], np.float64)
        except ValueError:
            raise DataError(f"{path}:{ln_no}: not numbers: {line[:60]!r}") from None
        if not 0 <= cls < n_source:
            raise DataError(f"{path}:{ln_no}: class index {cls} is not in data.yaml (0..{n_source - 1})")
        if xy.size < 6 or xy.size % 2:
            raise DataError(f"{path}:{ln_no}: a polygon needs an even number (>= 6) of coordinates, "
                            f"got {xy.size}")
        if xy.min() < 0 or xy.max() > 1:
            raise DataError(f"{path}:{ln_no}: coordinates must be normalised to [0, 1]")
        polys.append((cls, xy.reshape(-1, 2)))
    return polys


def polygon_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def rasterise(polys: list[tuple[int, np.ndarray]], size: tuple[int, int], source_to_target: dict[int, int],
              unmapped: int) -> np.ndarray:
    """Semantic mask (H, W). Objects outside the class map are painted first (as ``unmapped``),
    mapped objects after them, so an unmapped object (a tie on a person, a table under a cat)
    never erases a mapped one; within each group larger instances first, so smaller ones lying
    on larger ones stay visible."""
    w, h = size
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    order = sorted(polys, key=lambda p: (p[0] in source_to_target, -polygon_area(p[1])))
    for cls, xy in order:
        value = source_to_target.get(cls, unmapped)
        draw.polygon([(float(x * w), float(y * h)) for x, y in xy], fill=int(value))
    return np.asarray(canvas, np.uint8).copy()


def split_of(id_: str, val_fraction: float) -> str:
    """Stable split from a hash of the id: adding images never moves existing ones."""
    u = int(hashlib.sha1(id_.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if u < val_fraction else "train"


def _existing(path: str, key: str, folder: bool) -> Path:
    p = Path(path)
    if not (p.is_dir() if folder else p.is_file()):
        what = "folder" if folder else "file"
        raise DataError(f"data.own.{key}: {path} is not an existing {what}"
                        f"{' (it is a folder)' if p.is_dir() and not folder else ''}")
    return p


def _diagnose(cfg: DataCfg, classes: list[str], labels: dict[str, list[int]], no_label: list[str],
              label_dir: Path | None, unused_map: list[str]) -> list[str]:
    """Loud warnings (and one error) for datasets that would train on nothing: the usual
    causes are a labels folder one level too high and class_map keys that never occur."""
    n = len(labels)
    negatives = sum(1 for v in labels.values() if not v)
    causes = []
    if label_dir is not None and no_label:
        nested = sorted({p.parent for p in label_dir.glob("*/*.txt")})
        if nested:
            causes.append(f"data.own.labels ({label_dir}) may be one folder too high: {nested[0]} holds label files")
    if unused_map:
        causes.append(f"class_map keys that occur in no label file: {', '.join(unused_map)}")
    hint = f" Likely cause: {'; '.join(causes)}." if causes else ""
    if n and negatives == n and not cfg.allow_negatives_only:
        raise DataError(f"none of the {n} images contains a target class ({', '.join(classes[1:])}): nothing to "
                        f"learn from.{hint} (Set data.allow_negatives_only: true if this is intended.)")
    warnings = []
    if n and negatives * 2 > n:
        warnings.append(f"{negatives} of {n} images contain no target class and train as negatives.{hint}")
    if no_label:
        warnings.append(f"{len(no_label)} of {n} images have no label file in {label_dir} and count as "
                        f"negatives, e.g. {', '.join(no_label[:3])}")
    seen = {c for v in labels.values() for c in v}
    missing = [c for i, c in enumerate(classes) if i and i not in seen]
    if missing:
        warnings.append(f"target classes that occur in no image: {', '.join(missing)}{'.' + hint if hint else ''}")
    return warnings


def prepare(cfg: DataCfg, out: Path) -> dict:
    o: OwnCfg = cfg.own
    classes = ["background", *o.classes]
    target_index = {c: i for i, c in enumerate(classes)}
    images = list_images(_existing(o.images, "images", folder=True))
    labels: dict[str, list[int]] = {}
    skipped: dict[str, str] = {}
    splits: dict[str, list[str]] = {"train": [], "val": []}
    no_label: list[str] = []  # yolo images without a label file (kept as negatives)
    label_dir: Path | None = None
    src_seen: set[int] = set()
    if o.format == "yolo":
        names = read_names(_existing(o.names, "names", folder=False))
        for name in o.class_map:
            if name not in names:
                raise DataError(f"{o.names}: data.own.class_map names {name!r}, which is not a class there "
                                f"(its classes: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''})")
        src_to_tgt = {names.index(s): target_index[t] for s, t in o.class_map.items()}
        unmapped = 0 if o.unmapped == "background" else IGNORE
        label_dir = _existing(o.labels, "labels", folder=True)
        for id_, src in images.items():
            try:  # read and check everything first: a skipped image leaves no file behind
                rgb = read_image(src)  # converts grayscale / CMYK / RGBA / palette to RGB
                lbl = label_dir / f"{id_}.txt"
                polys = read_polygons(lbl, len(names)) if lbl.is_file() else []  # no file: no objects
                src_seen.update(c for c, _ in polys)
                mask = rasterise(polys, (rgb.shape[1], rgb.shape[0]), src_to_tgt, unmapped)
            except DataError as e:
                if cfg.on_bad == "error":
                    raise
                skipped[id_] = str(e)
                continue
            if not lbl.is_file():
                no_label.append(id_)
            write_jpeg(out / "JPEGImages" / f"{id_}.jpg", rgb)
            write_label_png(out / "SegmentationClass" / f"{id_}.png", mask)
            labels[id_] = labels_from_mask(mask, len(classes))
            splits[split_of(id_, o.val_fraction)].append(id_)
        has_masks = True
        unused_map = [k for k in o.class_map if names.index(k) not in src_seen]
    else:
        unused_map = []
        table = read_csv_labels(_existing(o.labels, "labels", folder=False), target_index)
        for id_ in table:
            if id_ not in images:
                msg = f"{o.labels}: id {id_!r} has no image in {o.images}"
                if cfg.on_bad == "error":
                    raise DataError(msg)
                skipped[id_] = msg
        for id_, src in images.items():
            try:
                if id_ not in table:
                    raise DataError(f"{src}: image has no row in {o.labels}")
                write_jpeg(out / "JPEGImages" / f"{id_}.jpg", read_image(src))
            except DataError as e:
                if cfg.on_bad == "error":
                    raise
                skipped[id_] = str(e)
                continue
            labels[id_] = table[id_]
            splits[split_of(id_, o.val_fraction)].append(id_)
        has_masks = False
    warnings = _diagnose(cfg, classes, labels, no_label, label_dir, unused_map)
    for split, ids in splits.items():
        write_split(out, split, ids)
    write_labels(out, classes, labels, has_masks=has_masks, skipped=skipped, source=f"own:{o.format}")
    return {"images": len(labels), "skipped": len(skipped), "no_label_file": len(no_label),
            "no_object_images": sum(1 for v in labels.values() if not v), "warnings": warnings}


def read_csv_labels(path: Path, target_index: dict[str, int]) -> dict[str, list[int]]:
    """``id,classes`` rows; classes separated by ``|`` (empty = no object)."""
    if not path.is_file():
        raise DataError(f"{path}: label CSV is missing")
    table: dict[str, list[int]] = {}
    with path.open(newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if not header or [h.strip() for h in header[:2]] != ["id", "classes"]:
            raise DataError(f"{path}: the first row must be the header `id,classes`")
        for ln_no, row in enumerate(rows, 2):
            if not row:
                continue
            id_, names = row[0].strip(), (row[1] if len(row) > 1 else "")
            idx = []
            for name in filter(None, (n.strip() for n in names.split("|"))):
                if name not in target_index or name == "background":
                    raise DataError(f"{path}:{ln_no}: class {name!r} is not in data.own.classes")
                idx.append(target_index[name])
            if id_ in table:
                raise DataError(f"{path}:{ln_no}: id {id_!r} appears twice")
            table[id_] = sorted(set(idx))
    return table
