"""Segmenting new images with a trained model: ``isim predict``.

The model and everything needed to feed it (normalisation, import size, CRF values, class
names) come from the checkpoint alone, so a checkpoint copied to another machine predicts
the same masks without its params.yaml. Each image is segmented at the size training saw
(the import's ``max_side``), with its horizontal flip, and the scores are resized to the
original photo; optional dense CRF. Outputs per image, written atomically: ``<name>.png``
(palette mask, VOC colours, class indices) and ``<name>_overlay.jpg`` (visualize.overlay).
An unreadable image is skipped and reported in ``predictions.json``; it never stops the batch.

Photos are taken in order of size, so equal sizes share a forward pass (``batch_size`` of
them, each with its flip), and a pool of worker processes does the CPU work after the model
(CRF, PNG and JPEG encoding) while the model segments the next batch.
"""
from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from isim.config import ConfigError, CrfCfg, saved_params
from isim.data.datasets import normalize, resize_image
from isim.data.own import IMAGE_SUFFIXES, shrink
from isim.errors import ModelError
from isim.io import DataError, read_image, write_jpeg, write_json, write_label_png
from isim.models import ARCHS, build_model, checkpoint_spec, read_checkpoint
from isim.models.segmenter import SEGMENTERS, build_segmenter
from isim.pseudo import pool
from isim.pseudo.cam import same_size_batches
from isim.run_layout import last_checkpoint
from isim.visualize import overlay

log = logging.getLogger(__name__)
MAX_PIXELS = 40_000_000  # a 40-megapixel photo; larger ones are skipped (`isim predict --max-pixels`)
# On a CPU larger passes run slower per image (2 photos of 500 x 375 per pass: 0.8x the speed of
# one at a time), so there a pass holds at most this many pixels: 16 images of 128 px, 1 photo.
CPU_PASS_PIXELS = 1 << 18


@dataclass(frozen=True)
class Candidate:
    """A model that may be the one `isim predict` uses: a checkpoint, its name and its val mIoU."""
    name: str
    checkpoint: str
    miou: float | None
    round_holdout_crf_miou: float | None = None  # an ISIM round: its masks' holdout mIoU (why that round)


@dataclass(frozen=True)
class ModelChoice:
    """``reports/best_model.json``: the model `isim predict` uses, why, and the one it beat."""
    name: str
    checkpoint: str
    miou: float | None
    why: str
    runner_up: Candidate | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Any) -> ModelChoice:
        other = d.get("runner_up")
        return cls(d["name"], d["checkpoint"], d.get("miou"), d["why"], Candidate(**other) if other else None)


def latest_checkpoint(segmenter: Path, isim_checkpoints: Path, best: Path) -> tuple[Path, str]:
    """What ``isim predict`` uses by default, and why: the better of the final segmenter and the
    best ISIM round on val, as the last ``dvc repro`` measured it (``best``); without that
    record, the final ``segmenter``, else the last ISIM round in ``isim_checkpoints``."""
    if best.is_file():
        try:
            chosen = ModelChoice.from_json(json.loads(best.read_text()))
            path, why = Path(chosen.checkpoint), f"{chosen.name}, {chosen.why} ({best})"
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ModelError(f"{best}: not a model choice written by evaluate_segmenter ({e}); delete it or "
                             "rerun `dvc repro`") from None
        if path.is_file():
            return path, why
        log.warning("%s names %s, which does not exist; falling back to the newest checkpoint", best, path)
    if segmenter.is_file():
        return segmenter, "the final segmenter (no model comparison on val recorded)"
    found = last_checkpoint(isim_checkpoints)
    if found is None:
        raise ModelError(f"neither {segmenter} nor {isim_checkpoints}/round_XX.pt; run `dvc repro` first or pass "
                         "--checkpoint")
    return found, "the last ISIM round (no final segmenter)"


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
        spec = checkpoint_spec(state, checkpoint)
        try:  # the params it was trained with, typed (defaults where a checkpoint carries none)
            config = saved_params(state.get("config"))
        except ConfigError as e:
            raise ModelError(f"{checkpoint}: the params saved with it are not valid here: {e}") from None
        arch = spec.arch
        self.model: torch.nn.Module
        if arch in SEGMENTERS:
            self.model = build_segmenter(spec)
            # a checkpoint without params (made outside a stage) predicts at its own scale only
            self.scales = list(config.segmenter.scales) if state.get("config") else [1.0]
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
        self.n = spec.n_classes
        self.classes = list(state.get("classes") or [f"class {i}" for i in range(self.n)])
        self.transform, self.crf_cfg = config.transform, config.crf
        self.max_side = config.data.own.max_side if config.data.source == "own" else 0

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out if isinstance(out, torch.Tensor) else out.seg  # ISIM nets: Output.seg

    def scores(self, rgb: np.ndarray) -> np.ndarray:
        """Class probabilities (C, H, W) at the photo's own size: each scale and its flip, averaged."""
        return self.scores_many([rgb])[0]

    @torch.no_grad()
    def scores_many(self, rgbs: list[np.ndarray]) -> list[np.ndarray]:
        """``scores`` of equal-size photos, one forward pass per scale for all of them."""
        size = rgbs[0].shape[:2]
        if any(r.shape[:2] != size for r in rgbs):
            raise ValueError(f"scores_many takes equal-size images, got {sorted({r.shape[:2] for r in rgbs})}")
        small = [shrink(r, self.max_side) for r in rgbs]
        total = None
        for s in self.scales:
            x = torch.stack([normalize(np.ascontiguousarray(im if s == 1.0 else resize_image(im, s)), self.transform)
                             for im in small]).to(self.device)
            p = self._scores(torch.cat([x, x.flip(-1)])).float().softmax(1)
            p = F.interpolate((p[:len(x)] + p[len(x):].flip(-1)) / 2, size=size, mode="bilinear",
                              align_corners=False)
            total = p if total is None else total + p
        assert total is not None
        return list((total / len(self.scales)).cpu().numpy())

    def segment(self, rgb: np.ndarray, crf: bool = False) -> np.ndarray:
        """Class-index mask (H, W) uint8."""
        mask = self.scores(rgb).argmax(0).astype(np.uint8)
        return refine(rgb, mask, self.crf_cfg) if crf else mask

    def segment_all(self, images: Iterable[tuple[Any, np.ndarray]], batch_size: int = 8
                    ) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
        """(key, rgb, mask before CRF) for every (key, rgb), in order: consecutive equal-size
        images share forward passes, at most ``batch_size`` of them (on a CPU also at most
        ``CPU_PASS_PIXELS`` pixels)."""
        for batch in same_size_batches(images, lambda item: self._batch_cap(item[1], batch_size), itemgetter(1)):
            yield from self._segment_batch(batch)

    def _batch_cap(self, rgb: np.ndarray, batch_size: int) -> int:
        if self.device.type != "cpu":
            return batch_size
        h, w = rgb.shape[:2]  # the pixels one image puts through the model (after the import's shrink)
        k = min(1.0, self.max_side / max(h, w)) if self.max_side else 1.0
        return max(1, min(batch_size, int(CPU_PASS_PIXELS // (h * w * k * k))))

    def _segment_batch(self, batch: list[tuple[Any, np.ndarray]]) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
        for (key, rgb), p in zip(batch, self.scores_many([rgb for _, rgb in batch])):
            yield key, rgb, p.argmax(0).astype(np.uint8)


def refine(rgb: np.ndarray, mask: np.ndarray, crf_cfg: CrfCfg) -> np.ndarray:
    """``mask`` after dense CRF."""
    from isim.pseudo.crf import DenseCRF
    present = np.unique(mask)  # CRF over the classes found only: same result, far less work
    index = np.searchsorted(present, mask)
    return present[DenseCRF(crf_cfg).refine(rgb, index, len(present))].astype(np.uint8)


def by_size(images: list[Path]) -> list[int]:
    """Indices of ``images`` in order of pixel size read from the file headers (input order
    within a size), so equal sizes are neighbours; files without a readable header come first
    and fail in ``read_image`` with its message."""
    from PIL import Image

    def size(i: int) -> tuple[int, int]:
        try:
            with Image.open(images[i]) as f:
                return f.size[1], f.size[0]
        except Exception:  # noqa: BLE001 - reported when the image itself is read
            return 0, 0
    return sorted(range(len(images)), key=size)


@dataclass(frozen=True)
class MaskOutput:
    """The CPU work after the model, a pool worker's task: CRF, the palette PNG, the overlay."""
    crf: bool
    crf_cfg: CrfCfg
    classes: list[str]

    def __call__(self, png: Path, overlay_jpg: Path | None, rgb: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
        if self.crf:
            mask = refine(rgb, mask, self.crf_cfg)
        write_label_png(png, mask)
        found, counts = np.unique(mask, return_counts=True)
        legend = [(int(c), self.classes[c], 100 * n / mask.size) for c, n in zip(found, counts) if c > 0]
        if overlay_jpg is not None:
            write_jpeg(overlay_jpg, overlay(rgb, mask, legend), quality=90)
        return {"size": [int(rgb.shape[1]), int(rgb.shape[0])],
                "classes": {name: round(share, 2) for _, name, share in legend}}


def _run(predictor: Predictor, images: Iterable[tuple[Any, np.ndarray]], outputs: Any, crf: bool,
         batch_size: int, workers: int) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(key, _write's record) for every (key, rgb); ``outputs(key)`` names its PNG and overlay.
    The model runs here, CRF and encoding in ``workers`` processes (at most 2 per worker in flight)."""
    keys: deque[Any] = deque()

    def jobs() -> Iterator[tuple]:
        for key, rgb, mask in predictor.segment_all(images, batch_size):
            keys.append(key)
            yield (*outputs(key), rgb, mask)
    for rec in pool.imap(MaskOutput(crf, predictor.crf_cfg, predictor.classes), jobs(), workers):
        yield keys.popleft(), rec


def predict(checkpoint: Path, inputs: list[Path], out: Path, crf: bool = False,
            device: torch.device | str = "cpu", max_pixels: int = MAX_PIXELS, batch_size: int = 8,
            workers: int = 2) -> dict[str, Any]:
    """Segment every image of ``inputs`` into ``out``; returns (and writes) the report.
    Images over ``max_pixels`` are skipped like unreadable ones. ``batch_size``: equal-size
    images per forward pass; ``workers``: processes for CRF and encoding (0: this one)."""
    from tqdm import tqdm
    predictor = Predictor(checkpoint, device)
    images, skipped = expand_inputs(inputs)
    if not images and not skipped:
        raise DataError(f"no images in {', '.join(str(p) for p in inputs)} "
                        f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    names: list[str] = []
    taken: set[str] = set()
    for path in images:  # in input order, whatever order the images are segmented in
        name, k = path.stem, 1
        while name in taken:  # same file name in two folders
            k += 1
            name = f"{path.stem}_{k}"
        taken.add(name)
        names.append(name)
    bar = tqdm(total=len(images), desc="predict", unit="img", mininterval=2.0)

    def readable() -> Iterator[tuple[int, np.ndarray]]:
        for i in by_size(images):
            try:
                yield i, read_image(images[i], max_pixels)  # grayscale, CMYK, RGBA, palette become RGB
            except DataError as e:
                skipped[str(images[i])] = str(e)
                log.warning("skipped: %s", e)
                bar.update()

    results: dict[int, dict[str, Any]] = {}
    with bar:
        for i, rec in _run(predictor, readable(), lambda i: (out / f"{names[i]}.png", out / f"{names[i]}_overlay.jpg"),
                           crf, batch_size, workers):
            results[i] = {"source": str(images[i]), **rec}
            bar.update()
    done = {names[i]: results[i] for i in sorted(results)}
    report = {"checkpoint": str(checkpoint), "crf": crf, "images": done, "skipped": skipped}
    write_json(out / "predictions.json", report)
    return report


def export_voc(checkpoint: Path, voc_root: Path, out: Path, split: str = "test", comp: str = "comp6",
               crf: bool = False, device: torch.device | str = "cpu", batch_size: int = 8, workers: int = 2) -> Path:
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
    paths = [voc_root / "JPEGImages" / f"{id_}.jpg" for id_ in ids]
    images = ((i, read_image(paths[i])) for i in by_size(paths))
    for _ in tqdm(_run(predictor, images, lambda i: (folder / f"{ids[i]}.png", None), crf, batch_size, workers),
                  total=len(ids), desc=f"export {split}", unit="img", mininterval=2.0):
        pass
    archive = out / "results.tar.gz"
    with atomic_path(archive) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for id_ in ids:  # only this export's files, in the listing's order
            tar.add(folder / f"{id_}.png", arcname=f"results/VOC2012/Segmentation/{folder.name}/{id_}.png")
    return archive


__all__ = ["Candidate", "ModelChoice", "Predictor",
           "by_size", "expand_inputs", "export_voc", "latest_checkpoint", "predict", "refine"]
