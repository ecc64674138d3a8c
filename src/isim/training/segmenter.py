"""The final segmenter (paper 4.1.7): a DeepLab net trained on the random-walk pseudo masks
as if they were ground truth. Images whose pseudo mask is all background teach nothing (the
same rule as ISIM's segmentation loss)."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from isim.config import Config
from isim.data.layout import Prepared
from isim.models.encoder import train_mode
from isim.models.segmenter import build_segmenter, segmenter_spec
from isim.runtime import seed_everything, setup
from isim.training.checkpoint import save_checkpoint
from isim.training.loop import MaskTraining, segmentation_loss

log = logging.getLogger(__name__)


def train_segmenter(cfg: Config, data: Prepared, masks_dir: Path, checkpoint: Path,
                    on_epoch: Callable[[dict], None] | None = None,
                    trained_on: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train on the masks in ``masks_dir`` (train split); save ``checkpoint`` (with ``trained_on``,
    what those masks are). Returns {history, seconds, model}."""
    seed_everything(cfg.seed)
    device = setup(cfg.runtime)
    sc, enc = cfg.segmenter, cfg.encoder
    spec = segmenter_spec(sc.arch, data.n_classes, enc.backbone, enc.backbone_kwargs, enc.output_stride,
                          sc.decoder_channels)
    model = build_segmenter(spec, enc.pretrained, enc.weights).to(device)
    run = MaskTraining(cfg, data, masks_dir, model.param_groups(sc.lr_encoder, sc.lr_decoder), sc.epochs,
                       sc.batch_size, device)
    history: list[dict] = []
    t_start = time.perf_counter()
    for epoch in range(1, sc.epochs + 1):
        train_mode(model, enc.freeze_bn)
        t0 = time.perf_counter()
        total, n, skipped = 0.0, 0, 0
        for batch in run.batches(epoch):
            valid = batch["seg_valid"].to(device)
            loss = segmentation_loss(model(batch["image"].to(device, non_blocking=True)),
                                     batch["mask"].to(device), valid)
            run.step(loss, f"segmenter epoch {epoch}")
            total += loss.item()
            skipped += int((~valid).sum())
            n += 1
        rec = {"epoch": epoch, "loss": total / max(1, n), "skipped_images": skipped,
               "seconds": round(time.perf_counter() - t0, 3), "lr": run.opt.param_groups[0]["lr"]}
        history.append(rec)
        log.info("segmenter epoch %d/%d loss %.4f %.1fs", epoch, sc.epochs, rec["loss"], rec["seconds"])
        if on_epoch:
            on_epoch(rec)
    save_checkpoint(checkpoint, spec, model, run.opt, run.sched, sc.epochs, 0, history, cfg.to_dict(), data.classes,
                    trained_on)
    return {"history": history, "seconds": time.perf_counter() - t_start, "model": model}
