"""AffinityNet, its labels and the random walk (PSA / IRN; paper 4.1.6)."""
import numpy as np
import pytest
import torch

from conftest import tiny_params
from isim import settings
from isim.config import CrfCfg, from_dict
from isim.io import IGNORE, read_label_png
from isim.models import ModelError, build_model, load_affinity, model_spec
from isim.models.affinitynet import affinity, affinity_spec, build_affinity, cell_labels, crop_pairs, pair_offsets
from isim.pseudo import confident, masks, pool
from isim.pseudo.crf import DenseCRF
from isim.pseudo.walk import RandomWalk, Rule, background_channel, candidates, decide, transition, walk
from isim.training.affinity_pairs import PairProbe, affinity_loss, train_affinity
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
    task = confident.AffinityLabeller(DenseCRF(CrfCfg()), False, 0.7, 0.1, tmp_path, masks.Truth(None))
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
    summary = confident.generate(model, tiny_data, ids, tmp_path / "aff", settings.cams(tiny_cfg),
                                       tiny_cfg.crf, tiny_cfg.affinity.fg_threshold, tiny_cfg.affinity.bg_threshold,
                                       device)
    assert summary["images"] == len(ids) and 0 < summary["labelled_share"] <= 1
    for id_ in ids:
        lab = read_label_png(tmp_path / "aff" / f"{id_}.png", tiny_data.n_classes)
        assert set(np.unique(lab)) <= {0, IGNORE, *tiny_data.labels[id_]}
    cfg = from_dict(tiny_params(affinity={"epochs": 6, "lr": 0.05}))
    result = train_affinity(*settings.affinity(cfg), tiny_data, tmp_path / "aff", tmp_path / "affinity.pt")
    losses = [r.loss for r in result.history]
    assert losses[-1] < losses[0]
    net = load_affinity(tmp_path / "affinity.pt")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(tmp_path / "isim.pt", model_spec(cfg.encoder, cfg.model, tiny_data.n_classes), model, opt,
                    torch.optim.lr_scheduler.StepLR(opt, 1), 1, 1, [], {})
    with pytest.raises(ModelError, match="not an AffinityNet"):
        load_affinity(tmp_path / "isim.pt")
    walker = RandomWalk(net, cfg.transform, cfg.affinity.radius, cfg.random_walk, device)
    rw = masks.generate(model, tiny_data, ids, tmp_path / "rw", settings.masks(cfg, cfg.threshold), device,
                        propagate=walker)
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


def test_cells_take_their_blocks_label_and_mixed_blocks_are_ignored():
    """A 4 x 4 image in 2 x 2 blocks: a pure block keeps its label, a block split 3:1 keeps its
    majority at purity 0.75 (not above), a 2:2 block is ignored; ignored pixels count against
    purity. Nearest sampling would have read each block's top-left pixel instead."""
    m = torch.tensor([[[0, 0, 1, 1],
                       [0, 0, 1, 0],
                       [2, 2, IGNORE, IGNORE],
                       [0, 0, IGNORE, 3]]])
    np.testing.assert_array_equal(cell_labels(m, (2, 2), 0.75)[0].numpy(), [[0, 1], [IGNORE, IGNORE]])
    np.testing.assert_array_equal(cell_labels(m, (2, 2), 0.9)[0].numpy(), [[0, IGNORE], [IGNORE, IGNORE]])
    # purity 0: the block's most frequent label (PSA); the mostly-ignored block keeps its one label
    assert cell_labels(m, (2, 2), 0.0)[0, 0, 1] == 1 and cell_labels(m, (2, 2), 0.0)[0, 1, 1] == 3


def test_affinity_label_margin_keeps_only_the_core_of_the_mask_as_confident_object(tmp_path):
    """With fg_threshold above the masks' threshold, pixels the mask calls object but whose CAM
    is below fg_threshold are ignored, not taught as object."""
    maps = np.array([[[0.9, 0.5, 0.35, 0.2, 0.05]]], np.float32)  # 1 class, 1 x 5 pixels
    keys, rgb = np.array([0, 1]), np.zeros((1, 5, 3), np.uint8)
    same = confident.AffinityLabeller(DenseCRF(CrfCfg()), False, 0.3, 0.1, tmp_path, masks.Truth(None))
    margin = confident.AffinityLabeller(DenseCRF(CrfCfg()), False, 0.6, 0.1, tmp_path, masks.Truth(None))
    # mask threshold 0.3: object where the CAM exceeds it
    assert same.label(rgb, maps, keys).tolist() == [[1, 1, 1, IGNORE, 0]]
    assert margin.label(rgb, maps, keys).tolist() == [[1, IGNORE, IGNORE, IGNORE, 0]]


def test_psa_rule_walks_a_background_channel_and_takes_the_argmax():
    maps = np.array([[[1.0, 0.5, 0.0]]], np.float32)
    np.testing.assert_allclose(background_channel(maps, 2.0), [[0.0, 0.25, 1.0]])
    walked = torch.tensor([[[0.6, 0.3, 0.1]]])
    bg = {2.0: torch.tensor([[0.2, 0.35, 0.8]])}
    scores = decide(walked, bg, Rule("psa", 2.0))
    # no rescaling: a pixel whose walked background beats every class's is background
    assert scores.shape == (2, 1, 3) and np.argmax(scores, 0).tolist() == [[1, 0, 0]]
    # IRN: the class maps over their maximum against a constant
    irn = decide(walked, bg, Rule("irn", 0.4))
    np.testing.assert_allclose(irn[1], [[1.0, 0.5, 1 / 6]], rtol=1e-6)
    assert np.argmax(irn, 0).tolist() == [[1, 1, 0]]


def test_walk_candidates_follow_the_mode_and_scalars_become_lists():
    cfg = from_dict(tiny_params(random_walk={"mode": "auto", "alpha": [4, 16], "bg_threshold": 0.3}))
    assert [r.name for r in candidates(cfg.random_walk)] == ["psa alpha=4", "psa alpha=16", "irn bg=0.3"]
    cfg = from_dict(tiny_params(random_walk={"mode": "irn", "alpha": 8, "bg_threshold": [0.2, 0.3]}))
    assert [r.name for r in candidates(cfg.random_walk)] == ["irn bg=0.2", "irn bg=0.3"]


def test_the_walk_never_labels_object_where_walked_background_wins(tiny_data, tiny_cfg):
    """PSA mode on a real (untrained) AffinityNet: every pixel of the masks is object only where
    some class's walked score beats the walked background channel."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    net = build_affinity(affinity_spec(tiny_cfg.encoder.backbone, tiny_cfg.encoder.backbone_kwargs, 16, 16))
    cfg = from_dict(tiny_params(random_walk={"mode": "psa", "alpha": 2, "exp_times": 2}))
    walker = RandomWalk(net, cfg.transform, cfg.affinity.radius, cfg.random_walk, device)
    model = build_model(model_spec(cfg.encoder, cfg.model, tiny_data.n_classes))
    from isim.pseudo.cam import dataset_cams
    for item, maps, keys, _ in dataset_cams(model, tiny_data, tiny_data.ids("train")[:3], settings.cams(cfg),
                                            device, None):
        scores = walker(item, maps)
        assert scores.shape == (len(keys), *maps.shape[1:])
        labels = np.argmax(scores, 0)
        assert (scores[0][labels > 0] <= scores[1:].max(0)[labels > 0]).all()
        assert (labels == 0).any() or (scores[0] < scores[1:].max(0)).all()
        every = walker.all_rules(item, maps)
        np.testing.assert_allclose(every[0], scores, rtol=1e-5, atol=1e-6)


def test_pair_probe_scores_features_that_separate_the_truth(tiny_data, tiny_cfg):
    """The probe's accuracies on ground-truth pairs: in [0, 100] for each kind of pair."""
    net = build_affinity(affinity_spec(tiny_cfg.encoder.backbone, tiny_cfg.encoder.backbone_kwargs, 16, 16))
    ids = tiny_data.ids("val")[:4]
    out = PairProbe(tiny_data, ids, tiny_cfg.transform, 3, 0.75)(net, torch.device("cpu"))
    assert {"pair_acc_bg", "pair_acc_neg"} <= set(out)
    assert all(0 <= v <= 100 for k, v in out.items() if k.startswith("pair_acc"))
