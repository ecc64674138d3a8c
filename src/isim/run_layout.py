"""Where a run's rounds live on disk: the one module that spells their names.

    <checkpoints>/round_XX.pt          the model that generated ISIM round XX
    <pseudo>/round_XX/                 one round's mask set; the CAM baseline's and the random
                                       walk's sets (pseudo/baseline, pseudo/rw) look alike:
        raw/<id>.png                   thresholded CAM, before CRF
        crf/<id>.png                   after dense CRF: the labels the next training phase learns from
        summary.json                   counts, timings, mIoU against ground truth, holdout scores
        cams/<id>.npz                  the CAMs the set was made from (the CAM baseline's and the
                                       last ISIM round's only): later stages read them, not the model

Everything else asks this module for these paths, so a change of layout is a change here.
"""
from __future__ import annotations

import json
from pathlib import Path

from isim.io import DataError
from isim.mask_scores import HoldoutScore, MaskSetSummary

ROUND_GLOB = "round_*"


def round_name(r: int) -> str:
    return f"round_{r:02d}"


def round_number(path: Path) -> int:
    """``round_03`` or ``round_03.pt`` -> 3."""
    return int(Path(path).name.split(".")[0].split("_")[1])


def round_dir(pseudo_root: str | Path, r: int) -> Path:
    return Path(pseudo_root) / round_name(r)


def round_checkpoint(checkpoints: str | Path, r: int) -> Path:
    """The checkpoint of the model that generated round ``r``."""
    return Path(checkpoints) / f"{round_name(r)}.pt"


def last_checkpoint(checkpoints: str | Path) -> Path | None:
    """The final model of a training run: its last ``round_XX.pt`` (None if there is none)."""
    found = sorted(Path(checkpoints).glob(f"{ROUND_GLOB}.pt"), key=round_number)
    return found[-1] if found else None


def final_checkpoint(checkpoints: str | Path) -> Path:
    """The final ISIM model of the train_isim stage; a clear error when the stage has not run."""
    found = last_checkpoint(checkpoints)
    if found is None:
        raise DataError(f"{checkpoints}: no round_XX.pt checkpoints; run train_isim first")
    return found


def rounds_of(pseudo_root: str | Path, required: bool = True) -> list[Path]:
    """The finished round folders, in order (``required``: an error when there is none)."""
    found = sorted((p for p in Path(pseudo_root).glob(ROUND_GLOB) if p.is_dir()), key=round_number)
    if not found and required:
        raise DataError(f"{pseudo_root}: no round_XX directories; run the training stage first")
    return found


def raw_dir(mask_set: str | Path) -> Path:
    return Path(mask_set) / "raw"


def crf_dir(mask_set: str | Path) -> Path:
    """The masks after CRF: what the next training phase learns from."""
    return Path(mask_set) / "crf"


def cams_dir(mask_set: str | Path) -> Path:
    """The CAMs a mask set was made from (pseudo/cam.py: ``save_cams``)."""
    return Path(mask_set) / "cams"


def kept_cams(mask_set: str | Path) -> Path:
    """:func:`cams_dir` of a mask set; a clear error when the set kept none."""
    found = cams_dir(mask_set)
    if not found.is_dir():
        raise DataError(f"{found}: missing; the mask set kept no CAMs (made by an older release?): rerun "
                        "the stage that made it")
    return found


def final_cams(pseudo_root: str | Path) -> Path:
    """The final ISIM model's CAMs of the train and holdout images: kept by its last round."""
    return kept_cams(rounds_of(pseudo_root)[-1])


def summary_path(mask_set: str | Path) -> Path:
    return Path(mask_set) / "summary.json"


def read_summary(mask_set: str | Path) -> MaskSetSummary:
    path = summary_path(mask_set)
    try:
        return MaskSetSummary.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise DataError(f"{path}: missing; the stage that writes it did not finish") from None
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a mask-set summary ({type(e).__name__}: {e}); rerun the stage "
                        "that writes it") from None


def holdout_scores(mask_set: str | Path) -> HoldoutScore | None:
    """The holdout mIoU of a mask set; None when the run had no holdout."""
    return read_summary(mask_set).holdout
