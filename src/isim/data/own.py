"""The user's own data -> the prepared layout.

- ``yolo``: images + YOLO segmentation polygons (``class x1 y1 ... xn yn``, normalised) and a
  ``data.yaml`` with the source class names (COCO/Ultralytics style). Source classes are
  mapped to the target classes by ``class_map``; unmapped objects become background or 255
  (ignore), the user's choice, and never cover a mapped object. Polygons are filled largest
  first, so smaller objects that lie on larger ones stay visible.
- ``masks``: images + a folder of figure/ground masks (same file stem, any image format, JPEG
  masks included) for one target class (``mask_class``): grey levels above ``mask_threshold``
  are the figure. A mask smaller than its photo (the Weizmann horses) sets the size: the photo is
  resized to it, since enlarging a mask would invent its outline.
- ``index``: images + class-index masks (palette or grey PNG, one value per source class, a
  ``void`` value for unlabelled pixels) + a names file (one name a line, or a data.yaml), the
  layout of MSRC, ADE20K, Cityscapes and CamVid. ``class_map`` sends each source class to a target
  class (several may share one: MSRC's face and body -> person), to ``background`` (MSRC's grass,
  road, sky) or to ``ignore``; classes it leaves out follow ``unmapped``.
- ``csv``: images + a CSV ``id,classes`` (classes separated by ``|``) for users without masks:
  only image-level labels; no mIoU can be reported, only pseudo labels.

Several sources go into one dataset (``more_sources``), e.g. horse photos with masks and COCO
photos without horses as their negatives; ``max_side`` shrinks large photos (and masks) once, at
import, instead of in every epoch and regeneration.
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw, UnidentifiedImageError

from isim.config import DataCfg, SourceCfg
from isim.data.prepared import labels_from_mask, write_labels, write_split
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


def _yaml_names(path: Path) -> list | dict:
    """The ``names`` of a data.yaml: a list, or a mapping from index to name."""
    try:
        return yaml.safe_load(path.read_text())["names"]
    except FileNotFoundError:
        raise DataError(f"{path}: data.yaml is missing") from None
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise DataError(f"{path}: no class names (`names:`) in it ({e})") from None


def read_names(path: Path) -> list[str]:
    """Source class names from a YOLO data.yaml (``names`` as a list or an index mapping)."""
    names = _yaml_names(path)
    if isinstance(names, dict):
        return [str(names[i]) for i in sorted(names)]
    return [str(n) for n in names]


def read_index_names(path: Path) -> dict[int, str]:
    """{mask value: source class name} from a names file: one name a line (line k = value k,
    blank lines keep their value) or a data.yaml whose ``names`` is a list or {value: name}."""
    if path.suffix.lower() in (".yaml", ".yml"):
        names = _yaml_names(path)
        items = names.items() if isinstance(names, dict) else enumerate(names)
        try:
            table = {int(k): str(v) for k, v in items}
        except (TypeError, ValueError):
            raise DataError(f"{path}: `names` keys must be mask values (0..255)") from None
    else:
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            raise DataError(f"{path}: names file is missing") from None
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: not a readable text file ({e})") from None
        table = {i: ln.strip() for i, ln in enumerate(lines) if ln.strip()}
    bad = [v for v in table if not 0 <= v <= 255]
    if bad:
        raise DataError(f"{path}: mask values must be 0..255, got {bad[0]}")
    if not table:
        raise DataError(f"{path}: no class names in it")
    dupes = sorted({n for n in table.values() if list(table.values()).count(n) > 1})
    if dupes:
        raise DataError(f"{path}: class names must be distinct, {dupes[0]!r} appears twice")
    return table


def read_index_mask(path: Path) -> np.ndarray:
    """A class-index mask (palette or 8-bit grey PNG) as its raw values, (H, W) uint8."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L"):
                raise DataError(f"{path}: a class-index mask must be a palette or 8-bit grey image, got mode "
                                f"{im.mode} (colour-coded masks need converting to class indices first)")
            return np.asarray(im, np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"{path}: not a readable mask ({e})") from None


def index_lookup(names: dict[int, str], class_map: dict[str, str], void: int, target_index: dict[str, int],
                 unmapped: int) -> np.ndarray:
    """256-entry table from a mask value to a target value; 256 marks a value the names file lacks."""
    lut = np.full(256, 256, np.int32)
    for value, name in names.items():
        lut[value] = target_index[class_map[name]] if name in class_map else unmapped
    lut[void] = IGNORE
    return lut


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
        raise DataError(f"{key}: {path} is not an existing {what}"
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


@dataclass
class _Import:
    """What the sources add up to, and what ``_diagnose`` needs to explain an empty dataset."""

    cfg: DataCfg
    out: Path
    classes: list[str]
    labels: dict[str, list[int]] = field(default_factory=dict)
    origin: dict[str, Path] = field(default_factory=dict)  # id -> source image (ids must be unique)
    skipped: dict[str, str] = field(default_factory=dict)
    splits: dict[str, list[str]] = field(default_factory=lambda: {"train": [], "val": []})
    no_label: list[str] = field(default_factory=list)  # yolo images without a label file (negatives)
    label_dir: Path | None = None
    unused_map: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # more warnings from the sources

    def images(self, src: SourceCfg, key: str) -> dict[str, Path]:
        found = list_images(_existing(src.images, f"{key}.images", folder=True))
        for id_, path in found.items():
            if id_ in self.origin:
                raise DataError(f"{path}: its id {id_!r} is taken by {self.origin[id_]}; image ids must be "
                                "unique over all sources (rename one file)")
        return found

    def bad(self, id_: str, e: DataError) -> None:
        if self.cfg.on_bad == "error":
            raise e
        self.skipped[id_] = str(e)

    def add(self, id_: str, src: Path, rgb: np.ndarray, mask: np.ndarray | None,
            labels: list[int] | None = None) -> None:
        write_jpeg(self.out / "JPEGImages" / f"{id_}.jpg", rgb)
        if mask is not None:
            write_label_png(self.out / "SegmentationClass" / f"{id_}.png", mask)
            labels = labels_from_mask(mask, len(self.classes))
        self.labels[id_] = labels or []
        self.origin[id_] = src
        self.splits[split_of(id_, self.cfg.own.val_fraction)].append(id_)


def shrink(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """``rgb`` with its long side at most ``max_side`` (0 = unchanged), aspect kept."""
    h, w = rgb.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return rgb
    k = max_side / max(h, w)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    return np.array(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR), np.uint8)


def _resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if mask.shape == hw:
        return mask
    return np.asarray(Image.fromarray(mask).resize((hw[1], hw[0]), Image.Resampling.NEAREST), np.uint8)


def _yolo(imp: _Import, src: SourceCfg, key: str) -> None:
    classes = imp.classes
    target_index = {**{c: i for i, c in enumerate(classes)}, "ignore": IGNORE}
    images = imp.images(src, key)
    names = read_names(_existing(src.names, f"{key}.names", folder=False))
    for name in src.class_map:
        if name not in names:
            raise DataError(f"{src.names}: {key}.class_map names {name!r}, which is not a class there "
                            f"(its classes: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''})")
    src_to_tgt = {names.index(s): target_index[t] for s, t in src.class_map.items()}
    unmapped = 0 if imp.cfg.own.unmapped == "background" else IGNORE
    label_dir = imp.label_dir = _existing(src.labels, f"{key}.labels", folder=True)
    seen: set[int] = set()
    for id_, path in images.items():
        try:  # read and check everything first: a skipped image leaves no file behind
            rgb = shrink(read_image(path), imp.cfg.own.max_side)  # grayscale / CMYK / RGBA -> RGB
            lbl = label_dir / f"{id_}.txt"
            polys = read_polygons(lbl, len(names)) if lbl.is_file() else []  # no file: no objects
            seen.update(c for c, _ in polys)
            mask = rasterise(polys, (rgb.shape[1], rgb.shape[0]), src_to_tgt, unmapped)
        except DataError as e:
            imp.bad(id_, e)
            continue
        if not lbl.is_file():
            imp.no_label.append(id_)
        imp.add(id_, path, rgb, mask)
    imp.unused_map += [k for k in src.class_map if names.index(k) not in seen]


def read_figure_mask(path: Path, threshold: int) -> np.ndarray:
    """A figure/ground mask (any 8-bit image, JPEG noise included) as booleans: grey > threshold."""
    try:
        with Image.open(path) as im:
            im.load()
            grey = np.asarray(im.convert("L"), np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"{path}: not a readable mask ({e})") from None
    return grey > threshold


def _masks(imp: _Import, src: SourceCfg, key: str) -> None:
    cls = imp.classes.index(src.mask_class)
    mask_dir = _existing(src.labels, f"{key}.labels", folder=True)
    masks = list_images(mask_dir)
    images = imp.images(src, key)
    for id_ in sorted(set(masks) - set(images)):
        imp.bad(id_, DataError(f"{masks[id_]}: mask has no image in {src.images}"))
    for id_, path in images.items():
        try:
            if id_ not in masks:
                raise DataError(f"{path}: image has no mask in {mask_dir} (same file name stem)")
            rgb, fig = read_image(path), read_figure_mask(masks[id_], src.mask_threshold)
            (h, w), (mh, mw) = rgb.shape[:2], fig.shape
            if abs(w / h - mw / mh) > 0.02 * w / h:
                raise DataError(f"{masks[id_]}: mask is {mw}x{mh}, its image {path.name} {w}x{h}: the aspect "
                                "ratios differ, so the mask cannot be scaled onto the photo")
            if mh * mw < h * w:  # the smaller of the two sets the size
                rgb = np.asarray(Image.fromarray(rgb).resize((mw, mh), Image.Resampling.BILINEAR), np.uint8)
            rgb = shrink(rgb, imp.cfg.own.max_side)
            mask = _resize_mask(np.where(fig, cls, 0).astype(np.uint8), rgb.shape[:2])
        except DataError as e:
            imp.bad(id_, e)
            continue
        imp.add(id_, path, rgb, mask)


def _index(imp: _Import, src: SourceCfg, key: str) -> None:
    names_path = _existing(src.names, f"{key}.names", folder=False)
    names = read_index_names(names_path)
    for name in src.class_map:
        if name not in names.values():
            shown = list(names.values())
            raise DataError(f"{names_path}: {key}.class_map names {name!r}, which is not a class there "
                            f"(its classes: {', '.join(shown[:12])}{' ...' if len(shown) > 12 else ''})")
    if src.void in names:
        raise DataError(f"{names_path}: value {src.void} is {names[src.void]!r} there but also {key}.void "
                        "(unlabelled); set void to a value no class uses")
    target_index = {**{c: i for i, c in enumerate(imp.classes)}, "ignore": IGNORE}
    unmapped = 0 if imp.cfg.own.unmapped == "background" else IGNORE
    lut = index_lookup(names, src.class_map, src.void, target_index, unmapped)
    mask_dir = _existing(src.labels, f"{key}.labels", folder=True)
    masks = list_images(mask_dir)
    images = imp.images(src, key)
    for id_ in sorted(set(masks) - set(images)):
        imp.bad(id_, DataError(f"{masks[id_]}: mask has no image in {src.images}"))
    seen: set[str] = set()
    for id_, path in images.items():
        try:
            if id_ not in masks:
                raise DataError(f"{path}: image has no mask in {mask_dir} (same file name stem)")
            rgb, raw = read_image(path), read_index_mask(masks[id_])
            if raw.shape != rgb.shape[:2]:
                raise DataError(f"{masks[id_]}: mask is {raw.shape[1]}x{raw.shape[0]}, its image {path.name} "
                                f"{rgb.shape[1]}x{rgb.shape[0]}: a class-index mask must match its photo")
            mapped = lut[raw]
            unknown = sorted(set(np.unique(raw[mapped == 256]).tolist()))
            if unknown:
                raise DataError(f"{masks[id_]}: mask values {unknown[:5]} are not in {names_path.name} (nor "
                                f"{key}.void = {src.void})")
            mask = mapped.astype(np.uint8)
            rgb = shrink(rgb, imp.cfg.own.max_side)
            mask = _resize_mask(mask, rgb.shape[:2])
        except DataError as e:
            imp.bad(id_, e)
            continue
        seen.update(names[v] for v in np.unique(raw).tolist() if v in names)
        imp.add(id_, path, rgb, mask)
    unused = [k for k in src.class_map if k not in seen]
    imp.unused_map += unused
    if unused:
        imp.notes.append(f"{key}.class_map: source classes that occur in no mask: {', '.join(unused)}")
    left = sorted(seen - set(src.class_map))
    if left:
        imp.notes.append(f"{key}: source classes not in its class_map become {imp.cfg.own.unmapped} "
                         f"(data.own.unmapped): {', '.join(left)}")


def _csv(imp: _Import, src: SourceCfg, key: str) -> None:
    table = read_csv_labels(_existing(src.labels, f"{key}.labels", folder=False),
                            {c: i for i, c in enumerate(imp.classes)})
    images = imp.images(src, key)
    for id_ in table:
        if id_ not in images:
            imp.bad(id_, DataError(f"{src.labels}: id {id_!r} has no image in {src.images}"))
    for id_, path in images.items():
        try:
            if id_ not in table:
                raise DataError(f"{path}: image has no row in {src.labels}")
            rgb = shrink(read_image(path), imp.cfg.own.max_side)
        except DataError as e:
            imp.bad(id_, e)
            continue
        imp.add(id_, path, rgb, None, table[id_])


def prepare(cfg: DataCfg, out: Path) -> dict:
    o = cfg.own
    imp = _Import(cfg, out, ["background", *o.classes])
    for key, src in o.sources():
        {"yolo": _yolo, "masks": _masks, "index": _index, "csv": _csv}[src.format](imp, src, key)
    warnings = _diagnose(cfg, imp.classes, imp.labels, imp.no_label, imp.label_dir, imp.unused_map) + imp.notes
    for split, ids in imp.splits.items():
        write_split(out, split, ids)
    has_masks = o.format != "csv"  # the config refuses mixing csv with masked sources
    write_labels(out, imp.classes, imp.labels, has_masks=has_masks, skipped=imp.skipped,
                 source="own:" + "+".join(s.format for _, s in o.sources()))
    return {"images": len(imp.labels), "skipped": len(imp.skipped), "no_label_file": len(imp.no_label),
            "no_object_images": sum(1 for v in imp.labels.values() if not v), "warnings": warnings}


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
