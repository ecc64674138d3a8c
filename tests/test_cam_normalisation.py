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


def test_masks_are_scored_against_the_ground_truth_with_the_images_class_keys():
    bench = benchmark("cam_normalisation")
    cams = np.zeros((1, 4, 4), np.float32)
    cams[0, :2] = 1.0
    cams[0, 2] = 0.2  # below a threshold of 0.3 after the max normalisation: background
    gt = np.zeros((4, 4), np.uint8)
    gt[:3] = 3  # class 3 covers three rows; the mask finds two
    photo = {"rgb": np.zeros((4, 4, 3), np.uint8), "gt": gt, "keys": np.array([0, 3]), "cams": cams}
    background_only = {**photo, "cams": np.zeros((0, 4, 4), np.float32), "gt": np.zeros((4, 4), np.uint8)}
    conf = bench.score([photo, background_only], bench.NORMS["class max"], 0.3, 4)
    assert conf[3, 3] == 8 and conf[3, 0] == 4 and conf[0, 0] == 4 + 16 and conf.sum() == 32
    assert bench.score([photo], bench.NORMS["class max"], 0.1, 4)[3, 3] == 12  # a lower threshold takes row 3
