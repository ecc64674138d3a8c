"""Torch datasets: training with the paper's augmentation, multi-scale + flip inference."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from isim.config import TransformCfg
from isim.data.prepared import Prepared
from isim.io import IGNORE, DataError, read_image, read_label_png


def normalize(img: np.ndarray, cfg: TransformCfg) -> torch.Tensor:
    """uint8 HxWx3 -> float 3xHxW, scaled to [0, 1] then standardised."""
    x = torch.from_numpy(img).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(cfg.mean).view(3, 1, 1)
    std = torch.tensor(cfg.std).view(3, 1, 1)
    return (x - mean) / std


def _resize(img: np.ndarray, mask: np.ndarray | None, h: int, w: int):
    img = np.array(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR))
    if mask is not None:
        mask = np.array(Image.fromarray(mask).resize((w, h), Image.Resampling.NEAREST))
    return img, mask


def resize_image(img: np.ndarray, scale: float) -> np.ndarray:
    h, w = img.shape[:2]
    return _resize(img, None, max(1, round(h * scale)), max(1, round(w * scale)))[0]


class TrainDataset(Dataset):
    """Image, multi-hot class label, and (once a round exists) its pseudo mask.

    Augmentation as in the paper and its lineage: long side resized to a random length in
    ``resize_long``, random horizontal flip, random crop to ``crop`` x ``crop``; the image is
    padded with 0 after normalisation (the mean), the mask with 255 so padding is never
    learnt as background. The mask gets exactly the same geometry.
    """

    def __init__(self, data: Prepared, ids: list[str], cfg: TransformCfg, seed: int = 0):
        self.data, self.ids, self.cfg = data, ids, cfg
        self.pseudo_dir: Path | None = None
        self.seed, self.epoch = seed, 0

    def set_pseudo(self, pseudo_dir: str | Path | None) -> None:
        self.pseudo_dir = Path(pseudo_dir) if pseudo_dir else None

    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int):
        id_ = self.ids[i]
        img = read_image(self.data.image_path(id_))
        mask = None
        if self.pseudo_dir is not None:
            path = self.pseudo_dir / f"{id_}.png"
            mask = read_label_png(path, self.data.n_classes)
            if mask.shape != img.shape[:2]:
                raise DataError(f"{path}: pseudo mask is {mask.shape[::-1]} but its image is "
                                f"{img.shape[1::-1]}")
        # augmentation randomness from (seed, epoch, index): identical with any number of workers
        rng = np.random.default_rng([self.seed, self.epoch, i])
        lo, hi = self.cfg.resize_long
        target = int(rng.integers(lo, hi + 1))
        h, w = img.shape[:2]
        s = target / max(h, w)
        img, mask = _resize(img, mask, max(1, round(h * s)), max(1, round(w * s)))
        if rng.random() < 0.5:
            img = img[:, ::-1]
            mask = mask[:, ::-1] if mask is not None else None
        x = normalize(np.ascontiguousarray(img), self.cfg)
        c = self.cfg.crop
        h, w = x.shape[1:]
        out_x = torch.zeros(3, c, c)
        out_m = torch.full((c, c), IGNORE, dtype=torch.long)
        # random placement: a crop when the image is larger, a pad when it is smaller
        ch, cw = min(c, h), min(c, w)
        sy, sx = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        dy, dx = int(rng.integers(0, c - ch + 1)), int(rng.integers(0, c - cw + 1))
        out_x[:, dy:dy + ch, dx:dx + cw] = x[:, sy:sy + ch, sx:sx + cw]
        has_fg = False
        if mask is not None:
            out_m[dy:dy + ch, dx:dx + cw] = torch.from_numpy(
                np.ascontiguousarray(mask[sy:sy + ch, sx:sx + cw])).long()
            has_fg = bool(((mask > 0) & (mask != IGNORE)).any())
        return {"image": out_x, "label": torch.from_numpy(self.data.label_vector(id_)),
                "mask": out_m, "seg_valid": torch.tensor(has_fg), "index": i}


class InferenceDataset(Dataset):
    """Per image: the original RGB (for CRF) and, for every scale, the image and its
    horizontal flip stacked as a batch of 2."""

    def __init__(self, data: Prepared, ids: list[str], cfg: TransformCfg, scales: list[float]):
        self.data, self.ids, self.cfg, self.scales = data, ids, cfg, scales

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        id_ = self.ids[i]
        img = read_image(self.data.image_path(id_))
        h, w = img.shape[:2]
        pyramid = []
        for s in self.scales:
            im = img if s == 1.0 else resize_image(img, s)
            x = normalize(np.ascontiguousarray(im), self.cfg)
            pyramid.append(torch.stack([x, x.flip(-1)]))
        return {"id": id_, "rgb": img, "pyramid": pyramid,
                "label": torch.from_numpy(self.data.label_vector(id_))}


def no_collate(item):
    """Inference items differ in size and hold numpy arrays: pass them through untouched."""
    return item
