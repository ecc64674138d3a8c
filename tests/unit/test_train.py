import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_params
from isim import settings
from isim.config import from_dict
from isim.io import write_label_png
from isim.models import ModelError, build_model, model_spec
from isim.models.encoder import train_mode
from isim.run_layout import final_cams
from isim.training.baseline import train_baseline
from isim.training.checkpoint import load_checkpoint
from isim.training.engine import EpochRecord, TrainingError, loader_workers, segmentation_loss
from isim.training.isim import Schedule, train_isim


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


def test_poly_lr_is_torchs_and_keeps_real_momentum(tiny_data):
    """torch's PolynomialLR gives the closed form base_lr * (1 - t / T) ** power at every step
    (the sequence the project's own scheduler produced), per parameter group."""
    from isim.training.baseline import cam_engine
    cfg = from_dict(tiny_params(train={"epochs": 2, "poly_power": 0.9}))
    tr = cam_engine(*settings.isim(cfg)[:2], tiny_data)
    opt, sched = tr.opt, tr.sched
    assert isinstance(sched, torch.optim.lr_scheduler.PolynomialLR)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 1e-4
    total = 2 * len(tr.loader)
    bases = [g["lr"] for g in opt.param_groups]
    assert bases == [cfg.lr_encoder, cfg.lr_classifier, cfg.lr_decoder]
    for t in range(1, total + 1):
        opt.step()
        sched.step()
        for g, base in zip(opt.param_groups, bases):
            assert math.isclose(g["lr"], base * max(0.0, 1 - t / total) ** 0.9, rel_tol=1e-9, abs_tol=1e-15)
    assert sched.state_dict()["last_epoch"] == total


def test_regeneration_schedules():
    fixed = Schedule(warmup=5, freq=10)
    assert [e for e in range(1, 51) if fixed.due(e, [])] == [6, 16, 26, 36, 46]  # paper default: 5 rounds
    conv = Schedule(warmup=1, freq=10, mode="converge", tol=0.01, patience=2)
    losses = [1.0, 0.9, 0.899, 0.8985, 0.5, 0.4, 0.3999, 0.3998, 0.3997]
    history = [EpochRecord(i, x, 0.0) for i, x in enumerate(losses, 1)]
    due = [e for e in range(1, len(losses) + 1) if conv.due(e, history[:e - 1])]
    assert due == [2, 5, 9]


def _tiny(tmp_path, **over):
    return from_dict(tiny_params(**over))


def test_isim_rounds_write_addressable_outputs(tiny_data, tmp_path):
    cfg = _tiny(tmp_path)
    r = train_isim(*settings.isim(cfg), tiny_data, tmp_path / "ck", tmp_path / "pseudo")
    # warm-up 1 epoch, regenerate every epoch after it (crf_freq 1), plus the final model's round
    assert len(r.rounds) == 3
    ids = tiny_data.ids("train")
    for k in (1, 2, 3):
        assert (tmp_path / "ck" / f"round_{k:02d}.pt").is_file()
        for kind in ("raw", "crf"):
            assert sorted(p.stem for p in (tmp_path / "pseudo" / f"round_{k:02d}" / kind).glob("*.png")) == sorted(ids)
    # the final model's CAMs are kept once, by the last round only, for the chain after ISIM
    assert sorted(p.stem for p in final_cams(tmp_path / "pseudo").glob("*.npz")) == sorted(ids)
    assert not any((tmp_path / "pseudo" / f"round_{k:02d}" / "cams").exists() for k in (1, 2))
    hist = r.history
    assert hist[0].figures["loss_seg"] == 0 and hist[1].figures["loss_seg"] > 0  # joint training after warm-up
    s = model_spec(cfg.encoder, cfg.model, tiny_data.n_classes)
    state = load_checkpoint(tmp_path / "ck" / "round_02.pt", build_model(s), s)
    assert state["round"] == 2 and state["epoch"] == 2 and "optimizer" in state and "scheduler" in state
    # a checkpoint of another architecture is refused, saying which
    other = model_spec(cfg.encoder, cfg.model.model_copy(update={"arch": "unetcam"}), tiny_data.n_classes)
    with pytest.raises(ModelError, match="arch: checkpoint has 'deeplabcam', expected 'unetcam'"):
        load_checkpoint(tmp_path / "ck" / "round_02.pt", build_model(other), other)


def test_cpu_training_is_deterministic(tiny_data, tmp_path):
    cfg = _tiny(tmp_path, train={"epochs": 2})
    a = train_baseline(*settings.baseline(cfg), tiny_data, tmp_path / "a.pt").history
    b = train_baseline(*settings.baseline(cfg), tiny_data, tmp_path / "b.pt").history
    assert [h.loss for h in a] == [h.loss for h in b]
    sa = torch.load(tmp_path / "a.pt", weights_only=True)["model"]
    sb = torch.load(tmp_path / "b.pt", weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_nan_loss_stops_naming_the_epoch(tiny_data, tmp_path):
    cfg = _tiny(tmp_path, lr_encoder=1e12, lr_classifier=1e12, train={"epochs": 3})
    with pytest.raises(TrainingError, match=r"epoch \d: loss is (nan|inf)"):
        train_baseline(*settings.baseline(cfg), tiny_data, tmp_path / "ck.pt")


def test_all_background_pseudo_masks_stop_naming_the_round(tiny_data, tmp_path, monkeypatch):
    from isim.pseudo import masks as pseudo

    real = pseudo.generate

    def blank(model, data, ids, out, *args, **kw):
        summary = real(model, data, ids, out, *args, **kw)
        for id_ in ids:  # as if every CAM stayed below the threshold
            write_label_png(out / "crf" / f"{id_}.png", np.zeros((64, 64), np.uint8))
        summary.crf_bg_only = len(ids)
        return summary

    monkeypatch.setattr(pseudo, "generate", blank)
    with pytest.raises(TrainingError, match=r"round 1 \(after epoch 1\): 12 of 12 pseudo masks are all background"):
        train_isim(*settings.isim(_tiny(tmp_path)), tiny_data, tmp_path / "ck", tmp_path / "ps")


def test_resume_from_a_round_equals_an_uninterrupted_run(tiny_data, tmp_path):
    cfg = _tiny(tmp_path, train={"epochs": 4}, rounds={"warmup_epochs": 1})
    full = train_isim(*settings.isim(cfg), tiny_data, tmp_path / "full_ck", tmp_path / "full_ps")
    import shutil
    shutil.copytree(tmp_path / "full_ck", tmp_path / "ck")
    shutil.copytree(tmp_path / "full_ps", tmp_path / "ps")
    for r in (3, 4):  # as if the run had died while making round 3's labels
        (tmp_path / "ck" / f"round_{r:02d}.pt").unlink()
        shutil.rmtree(tmp_path / "ps" / f"round_{r:02d}", ignore_errors=True)
    (tmp_path / "ps" / "round_03").mkdir()
    resumed = train_isim(*settings.isim(cfg), tiny_data, tmp_path / "ck", tmp_path / "ps",
                         resume=tmp_path / "ck" / "round_02.pt")
    assert [h.loss for h in resumed.history] == [h.loss for h in full.history]
    assert len(resumed.rounds) == len(full.rounds) == 4
    a = torch.load(tmp_path / "full_ck" / "round_04.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "ck" / "round_04.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("freeze", [False, True])
def test_frozen_bn_keeps_the_encoders_statistics_and_still_learns_its_scale(freeze):
    cfg = from_dict(tiny_params())
    torch.manual_seed(0)
    model = build_model(model_spec(cfg.encoder, cfg.model, 3))
    bns = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    before = {name: m.running_mean.clone() for name, m in bns.items()}
    train_mode(model, freeze)
    out = model(torch.rand(2, 3, 56, 56))
    (out.logits.sum() + out.seg.sum()).backward()
    moved = {name: not torch.equal(before[name], m.running_mean) for name, m in bns.items()}
    enc = [moved[n] for n in bns if n.startswith("encoder.")]
    dec = [moved[n] for n in bns if not n.startswith("encoder.")]
    assert enc and dec and all(dec)  # the new decoder always learns its statistics
    assert (not any(enc)) if freeze else all(enc)
    assert all(m.weight.grad is not None for n, m in bns.items() if n.startswith("encoder."))  # scale still learns


def test_loader_workers_never_exceed_the_cpus_this_process_may_use():
    import os
    cpus = len(os.sched_getaffinity(0))
    assert loader_workers(0) == 0 and loader_workers(1) == 1
    assert loader_workers(cpus + 6) == cpus  # the VOC preset's 8 on a small machine
