"""Class activation maps: multi-scale + flip inference, restricted to the image's classes,
normalised per class, thresholded against a constant background score.

A mask set can keep the CAMs it was made from (``CamSettings.keep``: one ``<id>.npz`` per
image, maps in float16), and later stages read them back (``CamSettings.source``) instead of
running the model again: the final ISIM round's CAMs serve affinity labels, the random walk and
the evaluation, computed once."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from isim.data.prepared import Prepared
from isim.io import DataError, atomic_path, read_image
from isim.models.net import ISIMNet
from isim.pseudo import pool
from isim.settings import CamSettings


def final_cams_or_model(keep: bool, isim_checkpoints: Path, isim_pseudo: Path, device: torch.device
                        ) -> tuple[ISIMNet | None, Path | None]:
    """Where the chain gets the final ISIM model's CAMs: (None, the last round's kept CAMs) when
    they were kept (``cam.keep``), else (the final model, None) to compute them."""
    from isim import run_layout as layout
    if keep:
        return None, layout.final_cams(isim_pseudo)
    from isim.models import load_model
    return load_model(layout.final_checkpoint(isim_checkpoints), device), None


def same_size_batches(items: Iterable[Any], max_batch: int | Callable[[Any], int],
                      rgb: Callable[[Any], np.ndarray] = itemgetter("rgb")) -> Iterator[list[Any]]:
    """Group consecutive inference items of equal size, so small images share a forward pass.
    ``max_batch``: a batch's cap, or a function of its first item giving it; ``rgb``: an item's image."""
    batch: list[Any] = []
    cap = 0
    for item in items:
        if batch and (len(batch) == cap or rgb(item).shape != rgb(batch[0]).shape):
            yield batch
            batch = []
        if not batch:
            cap = max_batch(item) if callable(max_batch) else max_batch
        batch.append(item)
    if batch:
        yield batch


@torch.no_grad()
def multiscale_cam(model: ISIMNet, items: list[dict], device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """For equal-size images: the sum over scales of ReLU(CAM) of each image and its flip,
    upsampled to the image size (paper 4.1: scales 1, 0.5, 1.5, 2 with flips).

    Returns (cams B x C_fg x H x W on the CPU, scale-1.0 logits B x C_fg) - the logits come
    for free and give classification accuracy without another pass.
    """
    size = items[0]["rgb"].shape[:2]
    total: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    for s in range(len(items[0]["pyramid"])):
        x = torch.cat([it["pyramid"][s] for it in items]).to(device, non_blocking=True)
        out = model.classify(x)
        cam = F.interpolate(F.relu(out.cam.float()), size=size, mode="bilinear", align_corners=False)
        cam = cam[0::2] + cam[1::2].flip(-1)  # image + its un-flipped mirror
        total = cam if total is None else total + cam
        if logits is None:
            logits = out.logits[0::2].float()
    assert total is not None and logits is not None  # at least one scale
    return total.cpu(), logits.cpu()


def save_cams(root: Path, id_: str, maps: np.ndarray, keys: np.ndarray, logits: np.ndarray,
              scales: list[float]) -> None:
    """One image's normalised CAMs, written atomically (a killed run leaves no half file)."""
    with atomic_path(root / f"{id_}.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, maps=maps.astype(np.float16), keys=keys, logits=logits.astype(np.float32),
                 scales=np.asarray(scales, np.float32))


def load_cams(root: Path, id_: str, scales: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(maps float32, keys, scale-1.0 logits) saved by :func:`save_cams`; a clear error when the
    file is missing or was made with other scales."""
    path = root / f"{id_}.npz"
    try:
        with np.load(path) as z:
            maps, keys, logits, made = z["maps"].astype(np.float32), z["keys"], z["logits"], z["scales"]
    except FileNotFoundError:
        raise DataError(f"{path}: missing; the kept CAMs do not cover image {id_!r} (rerun the stage "
                        "that made them)") from None
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: not a CAM file this project wrote ({e}); rerun the stage that made it") from e
    if not np.allclose(made, np.asarray(scales, np.float32)):
        raise DataError(f"{path}: made at scales {made.tolist()}, asked for {list(scales)} (cam.scales changed "
                        "since; rerun the stage that made them)")
    return maps, keys, logits


def stored_cams(data: Prepared, ids: list[str], cam: CamSettings, desc: str | None
                ) -> Iterator[tuple[dict, np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`dataset_cams`' items read from ``cam.source``; an item has the id, image and label."""
    from tqdm import tqdm

    assert cam.source is not None
    for id_ in tqdm(ids, desc=desc, unit="img", mininterval=2.0, leave=False, disable=desc is None):
        maps, keys, lg = load_cams(cam.source, id_, cam.scales)
        item = {"id": id_, "rgb": read_image(data.image_path(id_)),
                "label": torch.from_numpy(data.label_vector(id_))}
        yield item, maps, keys, lg


def dataset_cams(model: ISIMNet | None, data: Prepared, ids: list[str], cam: CamSettings, device: torch.device,
                 desc: str | None = "CAMs") -> Iterator[tuple[dict, np.ndarray, np.ndarray, np.ndarray]]:
    """CAMs of a whole split, image by image: (item, maps, keys, scale-1.0 logits), where
    ``maps``/``keys`` are :func:`normalise`'s. Equal-size images share forward passes; the
    model is in eval mode meanwhile and gets its previous mode back afterwards. ``desc``: the
    progress bar's name (None: no bar). With ``cam.source`` they are read from there, and
    ``model`` may be None; with ``cam.keep`` each image's are saved there as they come."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from isim.data.datasets import InferenceDataset, no_collate

    if cam.source is not None:
        yield from stored_cams(data, ids, cam, desc)
        return
    if model is None:
        raise ValueError("dataset_cams: no model and no kept CAMs (cam.source) to read")
    loader = DataLoader(InferenceDataset(data, ids, cam.transform, cam.scales), batch_size=None,
                        collate_fn=no_collate)
    was_training = model.training
    model.eval()
    progress = tqdm(total=len(ids), desc=desc, unit="img", mininterval=2.0, leave=False, disable=desc is None)
    try:
        for items in same_size_batches(loader, cam.batch_size):
            cams, logits = multiscale_cam(model, items, device)
            progress.update(len(items))
            for item, c, lg in zip(items, cams, logits):
                maps, keys = normalise(c, item["label"])
                if cam.keep is not None:
                    save_cams(cam.keep, item["id"], maps, keys, lg.numpy(), cam.scales)
                yield item, maps, keys, lg.numpy()
    finally:
        progress.close()
        model.train(was_training)


Task = Callable[[str, np.ndarray, np.ndarray, np.ndarray], Any]  # (id, rgb, maps, keys) -> result
Propagate = Callable[[dict, np.ndarray], np.ndarray]            # (item, maps) -> maps


@dataclass(frozen=True)
class CamsThen:
    """A pool job on a CPU: the CAMs of a chunk of ids, computed in the worker itself with
    ``threads`` torch threads, then ``task`` on each image. Returns [(result, logits, label)]."""
    model: ISIMNet | None
    data: Prepared
    cam: CamSettings
    task: Task
    propagate: Propagate | None
    threads: int

    def __call__(self, ids: list[str]) -> list[tuple[Any, np.ndarray, np.ndarray]]:
        torch.set_num_threads(self.threads)
        out = []
        for item, maps, keys, lg in dataset_cams(self.model, self.data, ids, self.cam, torch.device("cpu"), None):
            maps = self.propagate(item, maps) if self.propagate else maps
            out.append((self.task(item["id"], item["rgb"], maps, keys), lg, item["label"].numpy()))
        return out


def map_cams(model: ISIMNet | None, data: Prepared, ids: list[str], cam: CamSettings, device: torch.device,
             task: Task, workers: int, desc: str = "CAMs", propagate: Propagate | None = None
             ) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
    """``task(id, rgb, maps, keys)`` on every image's CAMs (``propagate``d first when given), in
    order: (result, scale-1.0 logits, image label) per image.

    On a GPU the CAMs come from this process and the tasks run in ``workers`` processes. On a CPU
    the CAMs cost as much as the CRF, and a single inference process cannot feed the workers fast
    enough (it held regeneration at ~80 % of the cores' limit), so each worker computes the CAMs
    of its own chunks (up to ``cam.batch_size`` images) with its share of the torch threads."""
    from tqdm import tqdm

    if workers > 0 and device.type == "cpu" and pool.forks():
        threads = max(1, torch.get_num_threads() // workers)
        job = CamsThen(model, data, cam, task, propagate, threads)
        # at least 4 chunks per worker, so that the last ones do not leave a worker idle long
        size = max(1, min(cam.batch_size, len(ids) // (4 * workers)))
        chunks = [(ids[i:i + size],) for i in range(0, len(ids), size)]
        with tqdm(total=len(ids), desc=desc, unit="img", mininterval=2.0, leave=False) as progress:
            for done in pool.imap(job, chunks, workers):
                progress.update(len(done))
                yield from done
        return

    labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def jobs() -> Iterator[tuple]:
        for item, maps, keys, lg in dataset_cams(model, data, ids, cam, device, desc):
            labels[item["id"]] = lg, item["label"].numpy()
            yield item["id"], item["rgb"], propagate(item, maps) if propagate else maps, keys

    for id_, res in zip(ids, pool.imap(task, jobs(), workers)):
        yield (res, *labels.pop(id_))


def normalise(cams: torch.Tensor, label: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Keep the classes in the image label; divide each map by its max.

    Returns (maps K x H x W float32 in [0, 1], keys K+1: 0 for background then class indices).
    """
    present = torch.nonzero(label > 0.5).flatten()
    maps = cams[present]
    maps = maps / (maps.flatten(1).amax(1).view(-1, 1, 1) + 1e-5)
    keys = np.concatenate([[0], present.numpy() + 1]).astype(np.int64)
    return maps.numpy().astype(np.float32), keys


def with_background(maps: np.ndarray, threshold: float) -> np.ndarray:
    """(K+1) x H x W scores: background scores ``threshold`` everywhere, then the class maps."""
    return np.concatenate([np.full((1, *maps.shape[1:]), threshold, np.float32), maps])


def to_mask(maps: np.ndarray, keys: np.ndarray, threshold: float) -> np.ndarray:
    """Background scores ``threshold`` everywhere; each pixel takes the highest score.
    Returns local label indices (0 = background, k = keys[k])."""
    return np.argmax(with_background(maps, threshold), axis=0)
