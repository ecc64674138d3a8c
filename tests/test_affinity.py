"""AffinityNet, its labels and the random walk (PSA / IRN; paper 4.1.6)."""
import numpy as np
import pytest
import torch

from conftest import tiny_params
from isim.config import CrfCfg, from_dict
from isim.io import IGNORE, read_label_png
from isim.models import ModelError, build_model, load_affinity, model_spec
from isim.models.affinitynet import affinity, affinity_spec, build_affinity, crop_pairs, pair_offsets
from isim.pseudo import affinity_labels, masks, pool
from isim.pseudo.cam import CamSettings
from isim.pseudo.crf import DenseCRF
from isim.pseudo.walk import RandomWalk, transition, walk
from isim.training.affinitynet import affinity_loss, train_affinity
from isim.training.checkpoint import save_checkpoint


def test_pair_offsets_cover_the_disc_once():
    offs = pair_offsets(5)
    assert len(offs) == 34 and len(set(offs)) == 34  # PSA's 34 pairs at radius 5
    assert not any((-dy, -dx) in offs for dy, dx in offs)  # each unordered pair once
    assert all(dy * dy + dx * dx < 25 for dy, dx in offs)


def test_random_walk_fills_the_seeded_region_only():
    """Two regions with no affinity between them: a seed in one fills it, the other stays empty."""
    feats = torch.zeros(4, 12, 12)
    feats[:, :, 6:] = 50.0  # right half far from the left in feature space: affinity ~ 0
    seeds = torch.zeros(1, 12, 12)
    seeds[0, 5, 1] = 1.0  # one cell of the left half
    out = walk(seeds, transition(feats, radius=3, beta=10.0), steps=256)[0]
    assert out[:, :6].min() > 0.5 * out[:, :6].max() > 0  # spread over the whole left half
    assert out[:, 6:].abs().max() < 1e-6 * out[:, :6].max()  # nothing crossed the boundary


def test_transition_columns_sum_to_one():
    tt = transition(torch.rand(3, 5, 7), radius=3, beta=2.0).to_dense()
    np.testing.assert_allclose(tt.sum(1).numpy(), 1.0, rtol=1e-5)  # rows of T^T = columns of T


def test_affinity_loss_prefers_the_right_affinities():
    mask = torch.zeros(1, 8, 8, dtype=torch.long)
    mask[:, :, 4:] = 1
    mask[:, 0, 0] = IGNORE
    grid = (8, 8)
    good = torch.zeros(1, 2, 8, 8)
    good[:, 0, :, 4:] = 30.0  # features separate the two labels
    bad = torch.randn(1, 2, 8, 8) * 0.01  # everything alike
    loss_good, parts = affinity_loss(affinity(*crop_pairs(good, 3)), mask, grid, 3)
    loss_bad, _ = affinity_loss(affinity(*crop_pairs(bad, 3)), mask, grid, 3)
    assert loss_good < 0.01 < loss_bad
    assert set(parts) == {"bg_pos", "fg_pos", "neg"}


def test_grid_too_small_for_the_radius_is_named():
    with pytest.raises(ValueError, match="radius=5"):
        crop_pairs(torch.zeros(1, 1, 4, 4), 5)
    from isim.config import ConfigError
    with pytest.raises(ConfigError, match="affinity.radius"):
        from_dict(tiny_params(affinity={"radius": 6}))
    with pytest.raises(ConfigError, match="bg_threshold"):
        from_dict(tiny_params(affinity={"bg_threshold": 0.4}))


def test_an_affinity_label_keeps_what_both_thresholds_agree_on_and_runs_in_a_pool(tmp_path):
    # a plain object: callable here without any worker set-up, and the same in worker processes
    task = affinity_labels.AffinityLabeller(DenseCRF(CrfCfg()), False, 0.7, 0.1, tmp_path, masks.Truth(None))
    maps = np.zeros((1, 4, 4), np.float32)
    maps[0, :2], maps[0, 2] = 0.9, 0.4  # sure object, unsure, sure background
    keys = np.array([0, 2])
    rgb = np.zeros((4, 4, 3), np.uint8)
    lab = task.label(rgb, maps, keys)
    assert (lab[:2] == 2).all() and (lab[2] == IGNORE).all() and (lab[3] == 0).all()
    jobs = [(f"im{i}", rgb, maps, keys) for i in range(3)]
    assert list(pool.imap(task, jobs, 2)) == list(pool.imap(task, jobs, 0))
    np.testing.assert_array_equal(read_label_png(tmp_path / "im2.png"), lab)


def test_affinity_labels_learning_and_walk_on_tiny_data(tiny_data, tiny_cfg, tmp_path):
    """Labels from a model's CAMs (255 where the thresholds disagree), AffinityNet learns from
    them (loss falls), and the walk writes a round directory the evaluation can score."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = build_model(model_spec(tiny_cfg.encoder, tiny_cfg.model, tiny_data.n_classes))
    ids = tiny_data.ids("train")
    summary = affinity_labels.generate(model, tiny_data, ids, tmp_path / "aff", CamSettings.of(tiny_cfg),
                                       tiny_cfg.crf, tiny_cfg.affinity.fg_threshold, tiny_cfg.affinity.bg_threshold,
                                       device)
    assert summary["images"] == len(ids) and 0 < summary["labelled_share"] <= 1
    for id_ in ids:
        lab = read_label_png(tmp_path / "aff" / f"{id_}.png", tiny_data.n_classes)
        assert set(np.unique(lab)) <= {0, IGNORE, *tiny_data.labels[id_]}
    cfg = from_dict(tiny_params(affinity={"epochs": 6, "lr": 0.05}))
    result = train_affinity(cfg, tiny_data, tmp_path / "aff", tmp_path / "affinity.pt")
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < losses[0]
    net = load_affinity(tmp_path / "affinity.pt")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(tmp_path / "isim.pt", model_spec(cfg.encoder, cfg.model, tiny_data.n_classes), model, opt,
                    torch.optim.lr_scheduler.StepLR(opt, 1), 1, 1, [], {})
    with pytest.raises(ModelError, match="not an AffinityNet"):
        load_affinity(tmp_path / "isim.pt")
    walk_settings = masks.MaskSettings.of(cfg, cfg.random_walk.bg_threshold)
    rw = masks.generate(model, tiny_data, ids, tmp_path / "rw", walk_settings, device,
                        propagate=RandomWalk.of(net, cfg, device))
    assert rw.images == len(ids) and rw.raw is not None and rw.crf is not None
    for id_ in ids:
        m = read_label_png(tmp_path / "rw" / "crf" / f"{id_}.png", tiny_data.n_classes)
        assert set(np.unique(m)) <= {0, *tiny_data.labels[id_]}


def test_affinitynet_on_each_encoder_level_layout():
    """The stride-8 grid is found from the encoder's own feature info (ResNet and EfficientNet)."""
    for backbone, kwargs in (("resnet18", {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]}),
                             ("efficientnet_lite0", {})):
        net = build_affinity(affinity_spec(backbone, kwargs, 16, 32))
        assert net(torch.zeros(1, 3, 64, 96)).shape == (1, 32, 8, 12)
