import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from isim.config import from_dict
from isim.io import write_label_png
from isim.training.fit import PolyLR, Schedule, TrainingError, load_checkpoint, segmentation_loss, train
from isim.models.net import ModelError, build_model, identity
from conftest import tiny_params


def test_segmentation_loss_truly_skips_all_background_images():
    torch.manual_seed(0)
    seg = torch.randn(3, 4, 5, 5)
    mask = torch.randint(0, 4, (3, 5, 5))
    mask[0, 0, 0] = 255
    valid = torch.tensor([True, False, True])
    loss = segmentation_loss(seg, mask, valid)
    kept = torch.cat([mask[0].flatten(), mask[2].flatten()])
    logits = torch.cat([seg[0].flatten(1).T, seg[2].flatten(1).T])
    expected = F.cross_entropy(logits[kept != 255], kept[kept != 255])
    assert torch.allclose(loss, expected)
    # nothing valid: zero loss and zero gradient, not log(C) and not NaN
    seg.requires_grad_(True)
    none = segmentation_loss(seg, mask, torch.tensor([False, False, False]))
    none.backward()
    assert none.item() == 0.0 and seg.grad.abs().sum() == 0


def test_poly_lr_and_real_momentum():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 0.1}, {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1.0}],
                          lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = PolyLR(opt, total_steps=10, power=0.9)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 1e-4
    for _ in range(5):
        opt.step()
        sched.step()
    assert math.isclose(opt.param_groups[0]["lr"], 0.1 * 0.5 ** 0.9)
    assert math.isclose(opt.param_groups[1]["lr"], 1.0 * 0.5 ** 0.9)
    state = sched.state_dict()
    assert state["last_epoch"] == 5


def test_regeneration_schedules():
    fixed = Schedule(warmup=5, freq=10)
    assert [e for e in range(1, 51) if fixed.due(e, [])] == [6, 16, 26, 36, 46]  # paper default: 5 rounds
    conv = Schedule(warmup=1, freq=10, mode="converge", tol=0.01, patience=2)
    losses = [1.0, 0.9, 0.899, 0.8985, 0.5, 0.4, 0.3999, 0.3998, 0.3997]
    due = [e for e in range(1, len(losses) + 1) if conv.due(e, [{"loss": x} for x in losses[:e - 1]])]
    assert due == [2, 5, 9]


def _tiny(tmp_path, **over):
    return from_dict(tiny_params(**over))


def test_isim_rounds_write_addressable_outputs(tiny_data, tmp_path):
    cfg = _tiny(tmp_path)
    r = train(cfg, tiny_data, "isim", tmp_path / "ck", tmp_path / "pseudo")
    # warm-up 1 epoch, regenerate every epoch after it (crf_freq 1), plus the final model's round
    assert r["n_rounds"] == 3
    ids = tiny_data.ids("train")
    for k in (1, 2, 3):
        assert (tmp_path / "ck" / f"round_{k:02d}.pt").is_file()
        for kind in ("cam", "crf"):
            assert sorted(p.stem for p in (tmp_path / "pseudo" / f"round_{k:02d}" / kind).glob("*.png")) == sorted(ids)
    hist = r["history"]
    assert hist[0]["loss_seg"] == 0 and hist[1]["loss_seg"] > 0  # joint training after warm-up
    model = build_model(cfg.model, "deeplabcam", tiny_data.n_classes)
    state = load_checkpoint(tmp_path / "ck" / "round_02.pt", model, identity(cfg.model, "deeplabcam", 7))
    assert state["round"] == 2 and state["epoch"] == 2 and "optimizer" in state and "scheduler" in state
    # a checkpoint of another architecture is refused, saying which
    other = build_model(cfg.model, "unetcam", tiny_data.n_classes)
    with pytest.raises(ModelError, match="arch: checkpoint has 'deeplabcam', expected 'unetcam'"):
        load_checkpoint(tmp_path / "ck" / "round_02.pt", other, identity(cfg.model, "unetcam", 7))


def test_cpu_training_is_deterministic(tiny_data, tmp_path):
    cfg = _tiny(tmp_path, train={"epochs": 2, "warmup_epochs": 2})
    a = train(cfg, tiny_data, "cam", tmp_path / "a", None)["history"]
    b = train(cfg, tiny_data, "cam", tmp_path / "b", None)["history"]
    assert [h["loss"] for h in a] == [h["loss"] for h in b]
    sa = torch.load(tmp_path / "a" / "final.pt", weights_only=True)["model"]
    sb = torch.load(tmp_path / "b" / "final.pt", weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_nan_loss_stops_naming_the_epoch(tiny_data, tmp_path):
    cfg = _tiny(tmp_path, lr_encoder=1e12, lr_classifier=1e12, train={"epochs": 3, "warmup_epochs": 3})
    with pytest.raises(TrainingError, match=r"epoch \d: loss is (nan|inf)"):
        train(cfg, tiny_data, "cam", tmp_path / "ck", None)


def test_all_background_pseudo_masks_stop_naming_the_round(tiny_data, tmp_path, monkeypatch):
    from isim.pseudo import masks as pseudo

    real = pseudo.generate

    def blank(model, data, ids, out, cfg, device, **kw):
        summary = real(model, data, ids, out, cfg, device, **kw)
        for id_ in ids:  # as if every CAM stayed below the threshold
            write_label_png(out / "crf" / f"{id_}.png", np.zeros((64, 64), np.uint8))
        summary["crf_bg_only"] = len(ids)
        return summary

    monkeypatch.setattr(pseudo, "generate", blank)
    with pytest.raises(TrainingError, match=r"round 1 \(after epoch 1\): 12 of 12 pseudo masks are all background"):
        train(_tiny(tmp_path), tiny_data, "isim", tmp_path / "ck", tmp_path / "ps")


def test_resume_from_a_round_equals_an_uninterrupted_run(tiny_data, tmp_path):
    cfg = _tiny(tmp_path, train={"epochs": 4, "warmup_epochs": 1})
    full = train(cfg, tiny_data, "isim", tmp_path / "full_ck", tmp_path / "full_ps")
    import shutil
    shutil.copytree(tmp_path / "full_ck", tmp_path / "ck")
    shutil.copytree(tmp_path / "full_ps", tmp_path / "ps")
    for r in (3, 4):  # as if the run had died while making round 3's labels
        (tmp_path / "ck" / f"round_{r:02d}.pt").unlink()
        shutil.rmtree(tmp_path / "ps" / f"round_{r:02d}", ignore_errors=True)
    (tmp_path / "ps" / "round_03").mkdir()
    resumed = train(cfg, tiny_data, "isim", tmp_path / "ck", tmp_path / "ps", resume=tmp_path / "ck" / "round_02.pt")
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    assert resumed["n_rounds"] == full["n_rounds"] == 4
    a = torch.load(tmp_path / "full_ck" / "round_04.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "ck" / "round_04.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
