"""PASCAL VOC 2012 + SBD -> the prepared layout (SegmentationClassAug, train_aug, labels).

- masks: VOC's own SegmentationClass PNG when it exists (it has the 255 boundary band),
  otherwise SBD's ``cls/<id>.mat`` (``GTcls.Segmentation``) written as a palette PNG;
- train_aug: SBD train + SBD val + VOC train, minus VOC val (10582 ids on the real data);
- image-level labels for every id, read off its mask.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import scipy.io

from isim.config import DataCfg
from isim.data.prepared import VOC_CLASSES, labels_from_mask, write_labels, write_split
from isim.io import DataError, atomic_path, read_image, read_label_png, write_label_png


def read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: split list is missing")
    return [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()]


def read_sbd_mat(path: Path) -> np.ndarray:
    """SBD class mask (uint8 HxW) from ``cls/<id>.mat``."""
    try:
        mat = scipy.io.loadmat(str(path), mat_dtype=True, squeeze_me=True, struct_as_record=False)
        seg = np.asarray(mat["GTcls"].Segmentation)
    except FileNotFoundError:
        raise DataError(f"{path}: SBD mask is missing") from None
    except (KeyError, AttributeError, ValueError, TypeError, OSError, scipy.io.matlab.MatReadError) as e:
        raise DataError(f"{path}: not an SBD GTcls file ({type(e).__name__}: {e})") from None
    if seg.ndim != 2 or seg.size == 0:
        raise DataError(f"{path}: GTcls.Segmentation has shape {seg.shape}, expected a 2-D mask")
    bad = np.unique(seg[(seg < 0) | ((seg > 20) & (seg != 255))])
    if bad.size:
        raise DataError(f"{path}: GTcls.Segmentation holds values {bad[:5].tolist()} outside 0..20, 255")
    return seg.astype(np.uint8)


def train_aug_ids(voc_root: Path, sbd_root: Path | None) -> list[str]:
    voc_train = read_list(voc_root / "ImageSets" / "Segmentation" / "train.txt")
    voc_val = set(read_list(voc_root / "ImageSets" / "Segmentation" / "val.txt"))
    ids = list(voc_train)
    if sbd_root is not None:
        ids += read_list(sbd_root / "train.txt") + read_list(sbd_root / "val.txt")
    return sorted(set(ids) - voc_val)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link when possible (no extra disk), copy otherwise; atomic either way."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def prepare(cfg: DataCfg, out: Path) -> dict:
    v = cfg.voc
    voc_root = Path(v.voc_root)
    sbd_root = Path(v.sbd_root) if v.sbd_root else None
    if not (voc_root / "JPEGImages").is_dir():
        raise DataError(f"{voc_root}: not a VOC2012 root (JPEGImages/ missing); "
                        "data.voc.voc_root must point at .../VOCdevkit/VOC2012")
    splits = {"val": read_list(voc_root / "ImageSets" / "Segmentation" / f"{v.val_split}.txt")}
    if v.train_split == "train_aug":
        splits["train"] = train_aug_ids(voc_root, sbd_root)
    else:
        splits["train"] = read_list(voc_root / "ImageSets" / "Segmentation" / "train.txt")
    labels: dict[str, list[int]] = {}
    skipped: dict[str, str] = {}
    n = len(VOC_CLASSES)
    for split, ids in splits.items():
        kept = []
        for id_ in ids:
            try:
                img_path = voc_root / "JPEGImages" / f"{id_}.jpg"
                voc_mask = voc_root / "SegmentationClass" / f"{id_}.png"
                if voc_mask.is_file():
                    mask = read_label_png(voc_mask, n)
                elif sbd_root is not None:
                    mask = read_sbd_mat(sbd_root / "cls" / f"{id_}.mat")
                else:
                    raise DataError(f"{voc_mask}: mask is missing (and no data.voc.sbd_root is set)")
                h, w = read_image(img_path).shape[:2]
                if mask.shape != (h, w):
                    raise DataError(f"{img_path}: image is {w}x{h} but its mask is "
                                    f"{mask.shape[1]}x{mask.shape[0]}")
            except DataError as e:
                if cfg.on_bad == "error":
                    raise
                skipped[id_] = str(e)
                continue
            link_or_copy(img_path, out / "JPEGImages" / f"{id_}.jpg")
            write_label_png(out / "SegmentationClass" / f"{id_}.png", mask)
            labels[id_] = labels_from_mask(mask, n)
            kept.append(id_)
        write_split(out, split, kept)
    if not labels:
        raise DataError(f"{voc_root}: no usable image/mask pair was found ({len(skipped)} skipped)")
    write_labels(out, VOC_CLASSES, labels, has_masks=True, skipped=skipped, source="voc")
    return {"images": len(labels), "skipped": len(skipped)}
