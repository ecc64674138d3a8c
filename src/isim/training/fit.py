"""Training: the CAM baseline (classification only) and ISIM rounds (paper Algorithm 1).

ISIM: ``warmup_epochs`` of classification only; then pseudo labels are regenerated from the
model's own CAMs (threshold + dense CRF) - every ``crf_freq`` epochs, or when the losses have
converged - and training continues on classification + segmentation loss. Every round's
checkpoint and pseudo-label set are written as ``round_XX``; after the last epoch one more
round is generated from the final model (the run's result).
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from isim import metrics
from isim.pseudo import masks as pseudo
from isim.config import Config
from isim.data.datasets import TrainDataset
from isim.data.layout import Prepared
from isim.io import IGNORE, atomic_path, write_json
from isim.models.net import CHECKPOINT_FORMAT, ISIMNet, build_model, check_identity, identity

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on meaningfully (NaN loss, nothing to learn from)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"train.device={name}, but CUDA is not available on this machine")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


class PolyLR(torch.optim.lr_scheduler.LambdaLR):
    """lr = base_lr * (1 - step / total) ** power, per parameter group; a scheduler with its
    own state, kept apart from the optimizer (SGD keeps its real momentum)."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, power: float = 0.9):
        self.total_steps, self.power = max(1, total_steps), power
        super().__init__(optimizer, lambda step: max(0.0, 1 - step / self.total_steps) ** self.power)


def segmentation_loss(seg: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Cross-entropy ignoring 255; images whose pseudo mask is all background contribute
    nothing at all (paper Eq. 2-3, as a real ignore rather than a zeroed logit)."""
    mask = mask.clone()
    mask[~valid] = IGNORE
    if not bool((mask != IGNORE).any()):
        return seg.sum() * 0.0
    return F.cross_entropy(seg.float(), mask, ignore_index=IGNORE)


@dataclass
class Schedule:
    """When to regenerate pseudo labels (fixed frequency, or on converged losses)."""

    warmup: int
    freq: int
    mode: str = "fixed"
    tol: float = 0.01
    patience: int = 2
    _flat: int = field(default=0, init=False)  # consecutive epochs with a flat loss

    def due(self, epoch: int, history: list[dict]) -> bool:
        """Regenerate before training ``epoch`` (1-based)?"""
        if epoch <= self.warmup:
            return False
        if epoch == self.warmup + 1:
            return True
        if self.mode == "fixed":
            return (epoch - self.warmup - 1) % self.freq == 0
        # converge: the total loss changed by less than tol (relative) for `patience` epochs
        if len(history) >= 2:
            a, b = history[-2]["loss"], history[-1]["loss"]
            self._flat = self._flat + 1 if abs(a - b) <= self.tol * max(abs(a), 1e-8) else 0
        if self._flat >= self.patience:
            self._flat = 0
            return True
        return False


def save_checkpoint(path: Path, model: ISIMNet, ident: dict, opt, sched, epoch: int, round_: int,
                    history: list[dict], cfg: Config) -> None:
    state = {"format": CHECKPOINT_FORMAT, "identity": ident, "model": model.state_dict(),
             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
             "round": round_, "history": history, "config": cfg.to_dict()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, model: ISIMNet, ident: dict) -> dict:
    """Load weights into ``model``; refuse a checkpoint of another model or backbone."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise TrainingError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not an isim checkpoint (format {CHECKPOINT_FORMAT} expected)")
    check_identity(path, state["identity"], ident)
    model.load_state_dict(state["model"])
    return state


def load_model(path: str | Path, cfg: Config, arch: str, n_classes: int, device: torch.device) -> ISIMNet:
    model = build_model(cfg.model, arch, n_classes)
    load_checkpoint(path, model, identity(cfg.model, arch, n_classes))
    return model.to(device).eval()


def train(cfg: Config, data: Prepared, variant: str, ckpt_dir: str | Path, pseudo_dir: str | Path | None,
          on_epoch: Callable[[dict], None] | None = None,
          on_round: Callable[[int, Path, dict], None] | None = None,
          resume: str | Path | None = None) -> dict:
    """Train the ``cam`` baseline or ``isim``; ``resume`` continues from a round checkpoint
    (the same result as an uninterrupted run). Returns {history, rounds, seconds, model}."""
    if variant not in ("cam", "isim"):
        raise ValueError(f"variant must be cam or isim, got {variant!r}")
    seed_everything(cfg.seed)
    device = resolve_device(cfg.train.device)
    arch = "cam" if variant == "cam" else cfg.model.arch
    ckpt_dir = Path(ckpt_dir)
    model = build_model(cfg.model, arch, data.n_classes).to(device)
    ident = identity(cfg.model, arch, data.n_classes)
    tc = cfg.train
    ids = data.ids("train")
    ds = TrainDataset(data, ids, cfg.transform, seed=cfg.seed)
    gen = torch.Generator()  # reseeded every epoch, so a resumed run shuffles like an uninterrupted one
    loader = DataLoader(ds, batch_size=tc.batch_size, shuffle=True, drop_last=len(ids) > tc.batch_size,
                        num_workers=tc.num_workers, generator=gen, pin_memory=device.type == "cuda",
                        persistent_workers=False)
    opt = torch.optim.SGD(model.param_groups(cfg.lr_encoder, cfg.lr_decoder, cfg.lr_classifier),
                          lr=cfg.lr_encoder, momentum=tc.momentum, weight_decay=tc.weight_decay)
    sched = PolyLR(opt, tc.epochs * len(loader), tc.poly_power)
    use_amp = tc.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    schedule = Schedule(tc.warmup_epochs, cfg.crf_freq, tc.regen, tc.converge_tol, tc.converge_patience)
    history: list[dict] = []
    rounds: list[dict] = []
    start, labels_done = 1, False
    if resume is not None:
        if variant != "isim":
            raise TrainingError("--resume continues ISIM rounds; the CAM baseline has none")
        state = load_checkpoint(resume, model, ident)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history, start = list(state["history"]), state["epoch"] + 1
        for r in range(1, state["round"] + 1):
            summary_path = Path(pseudo_dir) / f"round_{r:02d}" / "summary.json"
            if summary_path.is_file():
                rounds.append(json.loads(summary_path.read_text()))
            elif r < state["round"]:
                raise TrainingError(f"{summary_path}: missing; round {r} is incomplete, resume from "
                                    f"round_{r:02d}.pt")
        if rounds:
            ds.set_pseudo(pseudo.label_dir(Path(pseudo_dir) / f"round_{len(rounds):02d}"))
        # the checkpoint was saved just before its round's labels were made: make them only if missing
        labels_done = len(rounds) == state["round"]
        log.info("resuming from %s: round %d, epoch %d", resume, len(rounds), start)
    t_start = time.perf_counter()

    def regenerate(epoch: int) -> None:
        r = len(rounds) + 1
        round_dir = Path(pseudo_dir) / f"round_{r:02d}"
        save_checkpoint(ckpt_dir / f"round_{r:02d}.pt", model, ident, opt, sched, epoch, r, history, cfg)
        summary = pseudo.generate(model, data, ids, round_dir, cfg, device, desc=f"round {r}")
        summary.update(round=r, after_epoch=epoch)
        write_json(round_dir / "summary.json", summary)
        rounds.append(summary)
        log.info("round %d (after epoch %d): %s", r, epoch,
                 {k: summary[k] for k in ("cam", "crf") if k in summary} or summary["crf_bg_only"])
        if on_round:
            on_round(r, round_dir, summary)
        bad = summary["crf_bg_only"] / max(1, summary["images"])
        if bad >= tc.max_bad_pseudo:
            raise TrainingError(
                f"round {r} (after epoch {epoch}): {summary['crf_bg_only']} of {summary['images']} pseudo "
                "masks are all background; the classifier's CAMs never exceed the threshold. Train longer "
                "(train.warmup_epochs), lower `threshold`, or check the image-level labels")
        ds.set_pseudo(pseudo.label_dir(round_dir))

    for epoch in range(start, tc.epochs + 1):
        if variant == "isim" and schedule.due(epoch, history) and not (epoch == start and labels_done):
            regenerate(epoch - 1)
        ds.set_epoch(epoch)
        # shuffling and dropout (ASPP) draw from per-epoch seeds: a resumed run matches an uninterrupted one
        gen.manual_seed(cfg.seed * 100003 + epoch)
        torch.manual_seed(cfg.seed * 100003 + epoch)
        model.train()
        t0 = time.perf_counter()
        sums = {"loss": 0.0, "loss_cls": 0.0, "loss_seg": 0.0}
        n_batches, seg_skipped = 0, 0
        all_logits, all_targets = [], []
        for batch in loader:
            x = batch["image"].to(device, non_blocking=True)
            y = batch["label"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                out = model(x, with_seg=ds.pseudo_dir is not None)
                loss_cls = F.multilabel_soft_margin_loss(out["logits"].float(), y)
                loss = loss_cls
                loss_seg = torch.zeros((), device=device)
                if "seg" in out and ds.pseudo_dir is not None:
                    valid = batch["seg_valid"].to(device)
                    seg_skipped += int((~valid).sum())
                    loss_seg = segmentation_loss(out["seg"], batch["mask"].to(device), valid)
                    loss = loss + loss_seg
            if not torch.isfinite(loss):
                raise TrainingError(f"epoch {epoch}: loss is {loss.item()} (cls {loss_cls.item()}, "
                                    f"seg {loss_seg.item()}); lower the learning rates")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            sums["loss"] += loss.item()
            sums["loss_cls"] += loss_cls.item()
            sums["loss_seg"] += loss_seg.item()
            n_batches += 1
            all_logits.append(out["logits"].detach().float().cpu().numpy())
            all_targets.append(batch["label"].numpy())
        rec = {k: v / max(1, n_batches) for k, v in sums.items()}
        rec.update(epoch=epoch, round=len(rounds), seconds=round(time.perf_counter() - t0, 3),
                   seg_skipped_images=seg_skipped, lr_encoder=opt.param_groups[0]["lr"],
                   **{f"train_{k}": v for k, v in metrics.classification(
                       np.concatenate(all_logits), np.concatenate(all_targets)).items()})
        history.append(rec)
        log.info("epoch %d/%d loss %.4f (cls %.4f seg %.4f) acc %.1f %.1fs", epoch, tc.epochs, rec["loss"],
                 rec["loss_cls"], rec["loss_seg"], rec["train_label_acc"], rec["seconds"])
        if on_epoch:
            on_epoch(rec)
    if variant == "isim" and not (rounds and rounds[-1].get("after_epoch") == tc.epochs):
        regenerate(tc.epochs)  # the final model's pseudo labels: the run's result
    else:
        save_checkpoint(ckpt_dir / "final.pt", model, ident, opt, sched, tc.epochs, 0, history, cfg)
    return {"history": history, "rounds": rounds, "seconds": time.perf_counter() - t_start,
            "n_rounds": len(rounds), "model": model}
