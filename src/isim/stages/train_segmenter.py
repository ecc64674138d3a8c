"""Stage ``train_segmenter``: the final DeepLab model on the best pseudo-mask set (chosen on the
holdout images, ``segmenter.masks``) or on a given mask folder (ground truth: the fully
supervised ceiling), registered in MLflow's Model Registry."""
from __future__ import annotations

import logging
from pathlib import Path

from isim import distributed, settings
from isim.config import Config
from isim.data.prepared import Prepared
from isim.pseudo.choice import Choice, choose
from isim.run_layout import final_checkpoint
from isim.stages import recovery_for, train_stage
from isim.training.supervised import train_segmenter

log = logging.getLogger(__name__)


def run(cfg: Config, data_dir: Path, checkpoint: Path, metrics: Path, plots: Path, masks: Path | None = None,
        isim_pseudo: Path | None = None, rw_pseudo: Path | None = None, recovery_dir: Path | None = None,
        isim_checkpoints: Path | None = None) -> None:
    """``masks``: train on this folder as it is; else choose among ``isim_pseudo``'s last round
    and ``rw_pseudo``'s two sets. ``isim_checkpoints``: where the final ISIM model is, for
    ``segmenter.init: isim``."""
    data = Prepared.open(data_dir)
    init_from = None
    if cfg.segmenter.init == "isim":
        if isim_checkpoints is None:
            log.warning("segmenter.init is isim but no --isim-checkpoints were given: the encoder starts from the "
                        "encoder section's weights")
        else:
            init_from = final_checkpoint(isim_checkpoints)
            log.info("the final segmenter's encoder starts from %s", init_from)
    if masks is not None:
        choice = Choice.given(masks)
    else:
        assert isim_pseudo is not None and rw_pseudo is not None
        choice = choose(isim_pseudo, rw_pseudo, cfg.segmenter.masks)
        masks = Path(choice.masks)
        log.info("the final segmenter trains on %s (%s): %s", choice.name, masks, choice.why)
    if distributed.is_main():
        checkpoint.unlink(missing_ok=True)
    recovery = recovery_for(cfg, data, recovery_dir, masks)

    def after(tr, result) -> None:
        tr.log_params({"trained_on": choice.name, "trained_on_why": choice.why})
        if choice.holdout_miou is not None:
            tr.log_metrics({"trained_on_holdout_miou": choice.holdout_miou})

    summary = train_stage(cfg, "train_segmenter", lambda on_epoch, tr: train_segmenter(
        *settings.segmenter(cfg), data, masks, checkpoint, on_epoch=on_epoch, trained_on=choice.to_dict(),
        recovery=recovery, init_from=init_from),
        ("epoch", "loss", "skipped_images"), metrics, plots, recovery, prefix="segmenter_",
        after=after, summarize=lambda result: {
            "trained_on": choice.name, "trained_on_holdout_miou": choice.holdout_miou,
            "encoder_from": str(init_from) if init_from is not None else "encoder section"})
    log.info("trained the final segmenter: %s", summary)
