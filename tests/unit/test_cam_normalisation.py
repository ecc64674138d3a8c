"""benchmarks/cam_normalisation.py: each normalisation does what its name says, and the masks it
scores are the pipeline's (background at the threshold, argmax, the image's class keys)."""
import numpy as np

from conftest import benchmark


def test_each_normalisation_sets_its_own_scale():
    norms = benchmark("cam_normalisation").NORMS
    strong = np.zeros((20, 20), np.float32)
    strong[:10] = 4.0
    weak = np.ones((20, 20), np.float32)
    weak[0, 0] = 100.0  # one hot pixel over a flat map
    maps = np.stack([strong, weak])
    by_class = norms["class max"](maps)
    assert np.allclose(by_class.reshape(2, -1).max(1), 1, atol=1e-4)
    assert by_class[1, 5, 5] < 0.02  # the hot pixel sets the scale of the flat map
    by_image = norms["image max"](maps)
    assert np.isclose(by_image[0].max(), 0.04, atol=1e-4) and np.isclose(by_image[1].max(), 1, atol=1e-4)
    robust = norms["class p99"](maps)
    assert robust.max() <= 1 and robust[1, 5, 5] > 0.99  # the 99th percentile ignores the hot pixel
    min_max = norms["class min-max"](maps)
    assert np.allclose(min_max.reshape(2, -1).min(1), 0) and np.allclose(min_max.reshape(2, -1).max(1), 1, atol=1e-4)


def test_masks_are_made_and_scored_by_the_pipelines_writer(tiny_data, tiny_cfg):
    from isim.io import read_label_png
    from isim.pseudo.crf import DenseCRF
    bench = benchmark("cam_normalisation")
    id_ = next(i for i in tiny_data.ids("train") if tiny_data.label_vector(i).any())
    gt = read_label_png(tiny_data.mask_path(id_), tiny_data.n_classes)
    classes = [int(c) for c in np.unique(gt) if 0 < c < tiny_data.n_classes]
    # each class's CAM is its ground truth, at 1 in the bottom half and 0.2 in the top half
    top = np.arange(gt.shape[0])[:, None] < gt.shape[0] // 2
    cams = np.stack([np.where(gt == c, np.where(top, 0.2, 1.0), 0.0) for c in classes]).astype(np.float32)
    photo = {"id": id_, "rgb": np.zeros((*gt.shape, 3), np.uint8), "keys": np.array([0, *classes]), "cams": cams}
    crf = DenseCRF(tiny_cfg.crf)
    raw, same = bench.score([photo], bench.NORMS["class max"], 0.3, tiny_data, crf, refine=False)
    assert np.array_equal(raw, same)  # no CRF: the refined matrix is the raw one
    for c in classes:
        assert raw[c, c] == ((gt == c) & ~top).sum()  # 0.2 falls below the threshold: background
        assert raw[c, 0] == ((gt == c) & top).sum()
    low, _ = bench.score([photo], bench.NORMS["class max"], 0.1, tiny_data, crf, refine=False)
    assert all(low[c, c] == (gt == c).sum() for c in classes)  # a lower threshold takes the top half too
    no_class = {**photo, "keys": np.array([0]), "cams": np.zeros((0, *gt.shape), np.float32)}
    none, _ = bench.score([no_class], bench.NORMS["class max"], 0.3, tiny_data, crf, refine=False)
    assert none[:, 1:].sum() == 0 and none[:, 0].sum() == raw.sum()  # a label without classes: all background
    _, refined = bench.score([photo], bench.NORMS["class max"], 0.3, tiny_data, crf)
    assert refined.sum() == raw.sum() and not np.array_equal(refined, raw)  # the CRF ran on the same pixels
