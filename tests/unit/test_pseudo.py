from dataclasses import replace

import numpy as np
import torch

from conftest import COCO_SAMPLE
from isim import settings
from isim.config import CrfCfg
from isim.io import read_image, read_label_png
from isim.models import build_model, model_spec
from isim.pseudo import cam as camlib
from isim.pseudo import masks as pseudo
from isim.pseudo.crf import DenseCRF


def test_cam_threshold_and_class_restriction():
    cams = torch.zeros(4, 6, 6)
    cams[1, :3] = 2.0
    cams[1, 3:] = 0.4  # 0.2 of the max: below a 0.3 background score
    cams[3] = 5.0      # strong, but class 3 is not in the image label
    label = torch.tensor([0.0, 1.0, 0.0, 0.0])
    maps, keys = camlib.normalise(cams, label)
    assert keys.tolist() == [0, 2] and maps.shape == (1, 6, 6)
    mask = keys[camlib.to_mask(maps, keys, 0.3)]
    assert (mask[:3] == 2).all() and (mask[3:] == 0).all()
    assert (keys[camlib.to_mask(maps, keys, 0.1)] == 2).all()


def test_dense_crf_snaps_a_rough_label_to_the_object():
    """Real pydensecrf on a real photograph's colours: a blob shifted off a square is pulled back."""
    rgb = np.full((64, 64, 3), 30, np.uint8)
    rgb[16:48, 16:48] = (220, 180, 40)
    rough = np.zeros((64, 64), np.int64)
    rough[20:52, 20:52] = 1  # shifted by 4 px and clipped
    out = DenseCRF(CrfCfg(bilateral_sxy=10, bilateral_srgb=20, bilateral_compat=5)).refine(rgb, rough, 2)
    truth = np.zeros((64, 64), bool)
    truth[16:48, 16:48] = True
    def iou(a):
        return (a & truth).sum() / (a | truth).sum()
    assert iou(out == 1) > iou(rough == 1) + 0.1
    photo = read_image(sorted((COCO_SAMPLE / "images").glob("*.jpg"))[0])
    labels = np.zeros(photo.shape[:2], np.int64)
    labels[: photo.shape[0] // 2] = 1
    refined = DenseCRF(CrfCfg()).refine(photo, labels, 2)
    assert refined.shape == labels.shape and set(np.unique(refined)) <= {0, 1}


def test_score_unary_grows_a_seed_over_its_body_and_labels_unary_does_not():
    """A CAM that lights a mark-sized corner of a uniform body and stays just under the
    background's score over the rest: the score unary lets the bilateral term hand the unsure
    body pixels to the object; the labels unary keeps the seed; neither crosses the body's edge."""
    rgb = np.full((64, 64, 3), 40, np.uint8)
    rgb[12:52, 12:52] = (170, 120, 90)
    body = np.zeros((64, 64), bool)
    body[12:52, 12:52] = True
    cam = np.where(body, 0.1, 0.0).astype(np.float32)
    cam[14:30, 14:30] = 1.0  # the seed: a sixth of the body
    scores = camlib.with_background(cam[None], 0.15)
    local = scores.argmax(0)
    assert local[body].mean() < 0.2  # the seed alone is above the threshold
    cfg = dict(bilateral_sxy=30, bilateral_srgb=10, bilateral_compat=10)
    grown = DenseCRF(CrfCfg(unary="scores", temperature=0.2, **cfg)).refine(rgb, local, 2, scores)
    kept = DenseCRF(CrfCfg(unary="labels", **cfg)).refine(rgb, local, 2, scores)
    assert grown[body].mean() > 0.9 and grown[~body].mean() < 0.02
    assert kept[body].mean() < 0.2


def test_pool_and_sequential_write_identical_rounds(tiny_data, tiny_cfg, tmp_path):
    """On a CPU the pool's workers compute the CAMs too (one thread each): same masks, scores
    and classification as one process."""
    torch.manual_seed(0)
    model = build_model(model_spec(tiny_cfg.encoder, None, tiny_data.n_classes))
    ids = tiny_data.ids("train")
    made = settings.masks(tiny_cfg, tiny_cfg.threshold)
    seq = pseudo.generate(model, tiny_data, ids, tmp_path / "seq", replace(made, workers=0), torch.device("cpu"))
    par = pseudo.generate(model, tiny_data, ids, tmp_path / "par", replace(made, workers=2), torch.device("cpu"))
    for id_ in ids:
        for kind in ("raw", "crf"):
            a = read_label_png(tmp_path / "seq" / kind / f"{id_}.png")
            b = read_label_png(tmp_path / "par" / kind / f"{id_}.png")
            np.testing.assert_array_equal(a, b)
            assert set(np.unique(a)) <= {0, *tiny_data.labels[id_]}  # only the image's own classes
    assert seq.raw == par.raw and seq.crf == par.crf and seq.raw is not None
    assert seq.classification == par.classification and seq.classification
    assert (tmp_path / "par" / "summary.json").is_file()
    assert not list((tmp_path / "par").rglob("*.tmp*"))  # no temp files left behind
