"""Recovery after an interruption: a killed train_isim (and every other trained model, through
the one engine) continues from its last finished epoch and ends exactly as an uninterrupted
run; a recovery state of other params or other training masks is never reused."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import tiny_params
from isim import settings


class Interrupted(Exception):
    pass


def _cfg(**over):
    from isim.config import from_dict
    return from_dict(tiny_params(train={"epochs": 4}, **over))


def _recovery(cfg, data, root, masks=None):
    from isim.training.recovery import Recovery, fingerprint
    return Recovery(root, fingerprint(cfg.to_dict(), data.root, data.ids("train"), masks))


def _equal_runs(a: dict, b: dict, a_ck: Path, b_ck: Path) -> None:
    assert [h.loss for h in a.history] == [h.loss for h in b.history]
    assert [r.crf.miou for r in a.rounds] == [r.crf.miou for r in b.rounds]
    last = sorted(a_ck.glob("round_*.pt"))[-1].name
    wa = torch.load(a_ck / last, weights_only=True)["model"]
    wb = torch.load(b_ck / last, weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_run_stopped_after_an_epoch_continues_there_and_ends_as_an_uninterrupted_one(tiny_data, tmp_path, caplog):
    from isim.training.isim import train_isim
    cfg = _cfg()
    full = train_isim(*settings.isim(cfg), tiny_data, tmp_path / "full_ck", tmp_path / "full_ps")
    rec = _recovery(cfg, tiny_data, tmp_path / "recovery")

    def stop_after_3(h):
        if h.epoch == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_isim(*settings.isim(cfg), tiny_data, tmp_path / "ck", tmp_path / "ps", recovery=rec,
                   on_epoch=stop_after_3)
    shutil.rmtree(tmp_path / "ck")  # DVC removes a stage's outputs before running it again
    shutil.rmtree(tmp_path / "ps")
    epochs_run = []
    with caplog.at_level(logging.INFO, logger="isim.training"):
        again = train_isim(*settings.isim(cfg), tiny_data, tmp_path / "ck", tmp_path / "ps", recovery=rec,
                           on_epoch=lambda h: epochs_run.append(h.epoch))
    assert "3 epochs and 2 rounds done, continuing at epoch 4" in caplog.text
    assert epochs_run == [1, 2, 3, 4]  # epochs 1-3 replayed to the tracker, epoch 4 trained
    _equal_runs(full, again, tmp_path / "full_ck", tmp_path / "ck")
    assert sorted(os.listdir(tmp_path / "ps")) == sorted(os.listdir(tmp_path / "full_ps"))


def test_a_recovery_state_of_other_params_is_refused(tiny_data, tmp_path, caplog):
    from isim.training.isim import train_isim
    cfg = _cfg()
    rec = _recovery(cfg, tiny_data, tmp_path / "recovery")

    def stop(h):
        raise Interrupted

    with pytest.raises(Interrupted):
        train_isim(*settings.isim(cfg), tiny_data, tmp_path / "ck", tmp_path / "ps", recovery=rec, on_epoch=stop)
    assert (tmp_path / "recovery" / "state.pt").is_file()
    other = _cfg(threshold=0.3)
    epochs_run = []
    with caplog.at_level(logging.WARNING, logger="isim.training.recovery"):
        train_isim(*settings.isim(other), tiny_data, tmp_path / "ck2", tmp_path / "ps2",
                   recovery=_recovery(other, tiny_data, tmp_path / "recovery"),
                   on_epoch=lambda h: epochs_run.append(h.epoch))
    assert "recovery state of a run with other params; not reused" in caplog.text
    assert epochs_run == [1, 2, 3, 4]


@pytest.mark.parametrize("model", ["segmenter", "affinity"])
def test_the_segmenter_and_affinitynet_continue_after_their_last_epoch(model, tiny_data, tmp_path, caplog):
    from isim.training.affinity_pairs import train_affinity
    from isim.training.supervised import train_segmenter
    fn = {"segmenter": train_segmenter, "affinity": train_affinity}[model]
    cfg = _cfg(**{model: {"epochs": 3}})
    args = getattr(settings, model)(cfg)  # what its stage passes

    def train(*rest, **kwargs):
        return fn(*args, *rest, **kwargs)

    masks = tmp_path / "masks"
    shutil.copytree(tiny_data.root / "SegmentationClass", masks)
    full = train(tiny_data, masks, tmp_path / "full.pt")
    rec = _recovery(cfg, tiny_data, tmp_path / "recovery", masks)

    def stop_after_2(h):
        if h.epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(tiny_data, masks, tmp_path / "again.pt", on_epoch=stop_after_2, recovery=rec)
    epochs_run = []
    with caplog.at_level(logging.INFO, logger="isim.training.engine"):
        again = train(tiny_data, masks, tmp_path / "again.pt", recovery=rec,
                      on_epoch=lambda h: epochs_run.append(h.epoch))
    assert "2 epochs done, continuing at epoch 3" in caplog.text
    assert epochs_run == [1, 2, 3]
    drop = ("seconds",)
    assert [{k: v for k, v in h.row().items() if k not in drop} for h in again.history] == \
        [{k: v for k, v in h.row().items() if k not in drop} for h in full.history]
    wa, wb = (torch.load(tmp_path / f, weights_only=True)["model"] for f in ("full.pt", "again.pt"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # the same params on other masks (e.g. a new round of pseudo labels): not reused
    (masks / sorted(os.listdir(masks))[0]).write_bytes((masks / sorted(os.listdir(masks))[1]).read_bytes())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="isim.training.recovery"):
        train(tiny_data, masks, tmp_path / "other.pt", recovery=_recovery(cfg, tiny_data, rec.root, masks),
              on_epoch=lambda h: epochs_run.append(h.epoch))
    assert "recovery state of a run with other data; not reused" in caplog.text
    assert epochs_run[3:] == [1, 2, 3]
