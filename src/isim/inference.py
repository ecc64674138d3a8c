"""Segmenting new images with a trained model: ``isim predict``.

The model and everything needed to feed it (normalisation, import size, CRF values, class
names) come from the checkpoint alone, so a checkpoint copied to another machine predicts
the same masks without its params.yaml. Each image is segmented at the size training saw
(the import's ``max_side``), with its horizontal flip, and the scores are resized to the
original photo; optional dense CRF. Outputs per image, written atomically: ``<name>.png``
(palette mask, VOC colours, class indices) and ``<name>_overlay.jpg`` (visualize.overlay).
An unreadable image is skipped and reported in ``predictions.json``; it never stops the batch.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from isim.config import CrfCfg, TransformCfg
from isim.data.datasets import normalize, resize_image
from isim.data.own import IMAGE_SUFFIXES, shrink
from isim.errors import ModelError
from isim.io import DataError, read_image, write_jpeg, write_json, write_label_png
from isim.models import ARCHS, build_model, last_round, read_checkpoint
from isim.models.segmenter import SEGMENTERS, build_segmenter
from isim.visualize import overlay

log = logging.getLogger(__name__)
MAX_PIXELS = 40_000_000  # a 40-megapixel photo; larger ones are skipped (`isim predict --max-pixels`)


def latest_checkpoint(root: Path = Path("checkpoints")) -> Path:
    """What ``isim predict`` uses by default: the final segmenter of the last ``dvc repro``,
    else the last ISIM round."""
    if (root / "segmenter.pt").is_file():
        return root / "segmenter.pt"
    found = last_round(root / "isim")
    if found is None:
        raise ModelError(f"{root}: neither segmenter.pt nor isim/round_XX.pt; run `dvc repro` first or pass "
                         "--checkpoint")
    return found


def expand_inputs(paths: Iterable[Path]) -> tuple[list[Path], dict[str, str]]:
    """Image files from files, folders (recursively) and ``.txt`` lists (one path per line,
    relative to the list's folder); paths that do not exist are returned as skipped."""
    images: list[Path] = []
    skipped: dict[str, str] = {}
    for p in paths:
        if p.is_dir():
            images += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.suffix.lower() == ".txt" and p.is_file():
            lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            found, missed = expand_inputs(q if (q := Path(ln)).is_absolute() else p.parent / q for ln in lines)
            images += found
            skipped.update(missed)
        elif p.is_file():
            images.append(p)
        else:
            skipped[str(p)] = "no such file or folder"
    return images, skipped


class Predictor:
    """A checkpoint's segmentation output (the final segmenter, or ISIM's segmentation branch),
    ready to segment photographs."""

    def __init__(self, checkpoint: Path, device: torch.device | str = "cpu", scales: list[float] | None = None):
        """``scales``: inference scales (each with its flip); default the checkpoint's
        ``segmenter.scales``, or 1.0 alone for ISIM's segmentation branch."""
        state = read_checkpoint(checkpoint)
        spec, config = state["spec"], state.get("config", {})
        arch = spec["arch"]
        self.model: torch.nn.Module
        if arch in SEGMENTERS:
            self.model = build_segmenter(spec)
            self.scales = list(config.get("segmenter", {}).get("scales", [1.0]))
        elif arch in ARCHS and arch != "baseline":
            self.model = build_model(spec)
            self.scales = [1.0]
        else:
            raise ModelError(f"{checkpoint}: a {arch!r} checkpoint has no segmentation output; predict with "
                             "checkpoints/segmenter.pt or an ISIM round (checkpoints/isim/round_XX.pt)")
        self.arch = arch
        self.scales = list(scales) if scales else self.scales
        self.model.load_state_dict(state["model"])
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.n = spec["n_classes"]
        self.classes = list(state.get("classes") or [f"class {i}" for i in range(self.n)])
        self.transform = TransformCfg(**config.get("transform", {}))
        self.crf_cfg = CrfCfg(**config.get("crf", {}))
        own = config.get("data", {}).get("own", {})
        self.max_side = int(own.get("max_side", 0)) if config.get("data", {}).get("source") == "own" else 0

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out if isinstance(out, torch.Tensor) else out.seg  # ISIM nets: Output.seg

    @torch.no_grad()
    def scores(self, rgb: np.ndarray) -> np.ndarray:
        """Class probabilities (C, H, W) at the photo's own size: each scale and its flip, averaged."""
        small = shrink(rgb, self.max_side)
        total = None
        for s in self.scales:
            im = small if s == 1.0 else resize_image(small, s)
            x = normalize(np.ascontiguousarray(im), self.transform).unsqueeze(0).to(self.device)
            p = self._scores(torch.cat([x, x.flip(-1)])).float().softmax(1)
            p = F.interpolate(((p[0] + p[1].flip(-1)) / 2)[None], size=rgb.shape[:2], mode="bilinear",
                              align_corners=False)[0]
            total = p if total is None else total + p
        assert total is not None
        return (total / len(self.scales)).cpu().numpy()

    def segment(self, rgb: np.ndarray, crf: bool = False) -> np.ndarray:
        """Class-index mask (H, W) uint8."""
        mask = self.scores(rgb).argmax(0).astype(np.uint8)
        return self.refine(rgb, mask) if crf else mask

    def refine(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``mask`` after dense CRF (the checkpoint's crf values)."""
        from isim.pseudo.crf import DenseCRF
        present = np.unique(mask)  # CRF over the classes found only: same result, far less work
        index = np.searchsorted(present, mask)
        return present[DenseCRF(self.crf_cfg).refine(rgb, index, len(present))].astype(np.uint8)


def predict(checkpoint: Path, inputs: list[Path], out: Path, crf: bool = False,
            device: torch.device | str = "cpu", max_pixels: int = MAX_PIXELS) -> dict[str, Any]:
    """Segment every image of ``inputs`` into ``out``; returns (and writes) the report.
    Images over ``max_pixels`` are skipped like unreadable ones."""
    from tqdm import tqdm
    predictor = Predictor(checkpoint, device)
    images, skipped = expand_inputs(inputs)
    if not images and not skipped:
        raise DataError(f"no images in {', '.join(str(p) for p in inputs)} "
                        f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    done: dict[str, Any] = {}
    names: set[str] = set()
    for path in tqdm(images, desc="predict", unit="img", mininterval=2.0):
        try:
            rgb = read_image(path, max_pixels)  # grayscale, CMYK, RGBA and palette images become RGB
        except DataError as e:
            skipped[str(path)] = str(e)
            log.warning("skipped: %s", e)
            continue
        name, k = path.stem, 1
        while name in names:  # same file name in two folders
            k += 1
            name = f"{path.stem}_{k}"
        names.add(name)
        mask = predictor.segment(rgb, crf)
        found, counts = np.unique(mask, return_counts=True)
        legend = [(int(c), predictor.classes[c], 100 * n / mask.size) for c, n in zip(found, counts) if c > 0]
        write_label_png(out / f"{name}.png", mask)
        write_jpeg(out / f"{name}_overlay.jpg", overlay(rgb, mask, legend), quality=90)
        done[name] = {"source": str(path), "size": [int(rgb.shape[1]), int(rgb.shape[0])],
                      "classes": {name_: round(share, 2) for _, name_, share in legend}}
    report = {"checkpoint": str(checkpoint), "crf": crf, "images": done, "skipped": skipped}
    write_json(out / "predictions.json", report)
    return report


def export_voc(checkpoint: Path, voc_root: Path, out: Path, split: str = "test", comp: str = "comp6",
               crf: bool = False, device: torch.device | str = "cpu") -> Path:
    """Predictions of ``voc_root``'s ``ImageSets/Segmentation/<split>.txt`` in the layout the PASCAL
    VOC evaluation server takes (``results/VOC2012/Segmentation/<comp>_<split>_cls/<id>.png``:
    palette PNGs of class indices at each JPEG's size), packed as ``<out>/results.tar.gz``.
    ``comp6`` is the competition for methods trained on more than VOC's own data (SBD's
    images); ``comp5`` for VOC data only. Every image is needed, so an unreadable one stops
    the export naming it (the PNGs already written are kept and the archive is not made)."""
    import tarfile

    from tqdm import tqdm

    from isim.io import atomic_path
    listing = voc_root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise DataError(f"{listing}: missing; --voc-root must be a VOC2012 folder (the test set's own download for "
                        "the test split)")
    ids = [ln.split()[0] for ln in listing.read_text().splitlines() if ln.strip()]
    if not ids:
        raise DataError(f"{listing}: lists no images")
    predictor = Predictor(checkpoint, device)
    folder = out / "results" / "VOC2012" / "Segmentation" / f"{comp}_{split}_cls"
    for id_ in tqdm(ids, desc=f"export {split}", unit="img", mininterval=2.0):
        rgb = read_image(voc_root / "JPEGImages" / f"{id_}.jpg")
        write_label_png(folder / f"{id_}.png", predictor.segment(rgb, crf))
    archive = out / "results.tar.gz"
    with atomic_path(archive) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for id_ in ids:  # only this export's files, in the listing's order
            tar.add(folder / f"{id_}.png", arcname=f"results/VOC2012/Segmentation/{folder.name}/{id_}.png")
    return archive


__all__ = ["Predictor", "expand_inputs", "export_voc", "latest_checkpoint", "predict"]
