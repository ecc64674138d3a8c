"""Which masks the final segmenter trains on, which model `isim predict` uses by default, and the
warning for a final model below its own training masks: each decided from recorded scores."""
import json
from pathlib import Path

import pytest

from isim.evaluation import best_round, pick_model
from isim.inference import Candidate, ModelChoice, latest_checkpoint
from isim.mask_scores import HoldoutScore, MaskSetSummary
from isim.pseudo.choice import Choice, choose
from isim.stages.evaluate_segmenter import collapse_warning


def _summary(folder: Path, holdout: tuple[float, float] | None) -> None:
    folder.mkdir(parents=True)
    s = MaskSetSummary(3, 1.0, 3.0, 0, 0, 0.25, True, holdout=HoldoutScore(*holdout, 2, 0, 0.1) if holdout else None)
    (folder / "summary.json").write_text(json.dumps(s.to_json()))


def _chain(tmp_path, rounds: list[float | None], rw: tuple[float, float] | None) -> tuple[Path, Path]:
    isim, walk = tmp_path / "pseudo/isim", tmp_path / "pseudo/rw"
    for r, crf in enumerate(rounds, 1):
        _summary(isim / f"round_{r:02d}", (1.0, crf) if crf is not None else None)
    _summary(walk, rw)
    return isim, walk


@pytest.mark.parametrize("rw, key", [((40.0, 45.0), "rw_crf"), ((52.0, 45.0), "rw"), ((30.0, 35.0), "isim_crf"),
                                     ((50.0, 50.0), "rw_crf")])
def test_the_segmenter_trains_on_the_best_masks_on_the_holdout(tmp_path, rw, key):
    isim, walk = _chain(tmp_path, [20.0, 40.0], rw)
    c = choose(isim, walk)
    assert c.key == key
    folders = {"isim_crf": isim / "round_02/crf", "rw": walk / "raw", "rw_crf": walk / "crf"}
    assert c.masks == str(folders[key]) and c.holdout_miou == c.scores[key]
    assert "best holdout mIoU" in c.why and "ISIM+RW+CRF" in c.why


def test_an_override_and_a_dataset_without_scores(tmp_path):
    isim, walk = _chain(tmp_path, [20.0, 50.0], (40.0, 45.0))
    c = choose(isim, walk, "isim_crf")
    assert c.key == "isim_crf" and c.holdout_miou == 50.0 and "segmenter.masks" in c.why
    isim, walk = _chain(tmp_path / "b", [None], None)
    c = choose(isim, walk)
    assert c.key == "rw_crf" and c.holdout_miou is None and "paper" in c.why


def test_best_round_is_the_best_on_the_holdout(tmp_path):
    isim, _ = _chain(tmp_path, [20.0, 50.0, 45.0], None)
    assert best_round(isim) == (2, 50.0)
    isim, _ = _chain(tmp_path / "b", [None, None], None)
    assert best_round(isim) == (2, None)
    # round 1's model never trained its segmentation branch: it competes only when alone
    isim, _ = _chain(tmp_path / "c", [52.9, 51.0, 52.7], None)
    assert best_round(isim) == (3, 52.7)
    isim, _ = _chain(tmp_path / "d", [30.0], None)
    assert best_round(isim) == (1, 30.0)


def _write_best(tmp_path, seg_miou, isim_miou) -> Path:
    ck = tmp_path / "checkpoints"
    (ck / "isim").mkdir(parents=True)
    (ck / "segmenter.pt").write_bytes(b"x")
    (ck / "isim/round_02.pt").write_bytes(b"x")
    chosen = pick_model(Candidate("final segmenter", str(ck / "segmenter.pt"), seg_miou),
                        Candidate("ISIM round 2", str(ck / "isim/round_02.pt"), isim_miou, 50.0))
    best = tmp_path / "reports/best_model.json"
    best.parent.mkdir()
    best.write_text(json.dumps(chosen.to_json()))
    assert ModelChoice.from_json(json.loads(best.read_text())) == chosen  # the file's contract, both ways
    return best


def test_predict_uses_the_segmenter_when_it_validates_better(tmp_path):
    best = _write_best(tmp_path, 60.0, 55.0)
    path, why = latest_checkpoint(tmp_path / "checkpoints/segmenter.pt", tmp_path / "checkpoints/isim", best)
    assert path.name == "segmenter.pt"
    assert "final segmenter 60.00 vs ISIM round 2 55.00" in why and str(best) in why


def test_predict_uses_the_isim_round_when_it_validates_better(tmp_path):
    best = _write_best(tmp_path, 3.5, 40.0)
    path, why = latest_checkpoint(tmp_path / "checkpoints/segmenter.pt", tmp_path / "checkpoints/isim", best)
    assert path.name == "round_02.pt"
    assert "ISIM round 2 40.00 vs final segmenter 3.50" in why
    # a record naming a checkpoint that is gone falls back to the newest, and says so in `why`
    (tmp_path / "checkpoints/isim/round_02.pt").unlink()
    path, why = latest_checkpoint(tmp_path / "checkpoints/segmenter.pt", tmp_path / "checkpoints/isim", best)
    assert path.name == "segmenter.pt" and "no model comparison" in why
    best.write_text("{")
    with pytest.raises(Exception, match="best_model.json: not a model choice"):
        latest_checkpoint(tmp_path / "checkpoints/segmenter.pt", tmp_path / "checkpoints/isim", best)


def test_collapse_warning_names_both_figures():
    on = Choice("rw_crf", "pseudo/rw/crf", 52.5, {"rw_crf": 52.5}, "best holdout mIoU")
    text = collapse_warning(on, 3.46)
    assert text and "3.46" in text and "52.50" in text and "ISIM+RW+CRF" in text
    assert collapse_warning(on, 60.0) is None
    assert collapse_warning(on, 50.0) is None  # 0.95 of its masks: no collapse
    assert "0.94 of the ISIM+RW+CRF" in collapse_warning(on, 49.5)
    assert collapse_warning(Choice.given(Path("masks")), 3.0) is None
    assert collapse_warning(None, 3.0) is None  # a checkpoint that records no masks
    assert "mIoU with CRF on the holdout" in collapse_warning(on, 40.0, "with CRF")
