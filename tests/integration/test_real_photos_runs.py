"""The real-photo pipeline as a user runs it, shrunk: MSRC photos (class-index masks) and horse
photos (figure/ground masks) through `isim params pipelines/real-photos.yaml` and `dvc repro` with
the offline pretrained encoder; then the fully supervised ceiling, the ImageNet-only anchor, and
`isim predict` on photos the model has never seen, with the model the last run validated best."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import COCO_SAMPLE, HORSE_SAMPLE, MSRC_SAMPLE, bin_path, dvc_project, real_photos_params, run
from isim.config import merged
from isim.inference import Predictor
from isim.io import read_image, read_label_png

TINY = {  # the preset's code paths at seconds-scale: small images, one ISIM round, no tracking server
    "crf_freq": 1,
    "data": {"own": {"max_side": 96, "val_fraction": 0.3}},
    "transform": {"resize_long": [64, 96], "crop": 64},
    "cam": {"scales": [1.0]},
    "model": {"decoder_channels": 16},
    "train": {"epochs": 2, "batch_size": 4},
    "rounds": {"warmup_epochs": 1},
    "affinity": {"radius": 3, "feature_channels": 32, "epochs": 1, "batch_size": 4},
    "segmenter": {"decoder_channels": 16, "epochs": 1, "batch_size": 4, "scales": [1.0]},
    "runtime": {"crf_workers": 0},
    "eval": {"thresholds": [0.3], "grid_images": 2},
    "tracking": {"enabled": False},
}


@pytest.fixture(scope="module")
def photo_repo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("photos")
    params = merged(real_photos_params(tmp), TINY)
    repo = dvc_project(tmp / "repo", params)
    shutil.copytree(MSRC_SAMPLE / "images", repo / "raw/msrc/images")
    shutil.copytree(MSRC_SAMPLE / "masks", repo / "raw/msrc/masks")
    shutil.copy(MSRC_SAMPLE / "classes.txt", repo / "raw/msrc/classes.txt")
    shutil.copytree(HORSE_SAMPLE / "images", repo / "raw/horse/images")
    shutil.copytree(HORSE_SAMPLE / "masks", repo / "raw/horse/masks")
    run([bin_path("dvc"), "add", "-q", "raw/msrc", "raw/horse"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "photos"], repo)
    run([bin_path("dvc"), "repro"], repo, timeout=900)
    return repo


def test_a_tiny_real_photo_pipeline_runs_through_dvc_repro(photo_repo):
    repo = photo_repo
    data = json.loads((repo / "data/prepared/image_labels.json").read_text())
    assert len(data["labels"]) == 16 + 8 and data["source"] == "own:index+masks"
    summary = json.loads((repo / "metrics/eval.json").read_text())["summary"]
    for k in ("baseline_miou", "baseline_crf_miou", "isim_miou", "isim_crf_miou", "isim_crf_recall",
              "isim_crf_precision", "isim_rw_miou", "isim_rw_crf_miou"):
        assert 0 <= summary[k] <= 100, k
    report = json.loads((repo / "reports/evaluation.json").read_text())
    assert report["isim"]["rounds"][-1]["crf"]["iou"]["horse"] is not None  # horse scored on its own
    state = __import__("torch").load(repo / "checkpoints/isim/round_02.pt", weights_only=True)
    assert state["spec"]["backbone"] == "efficientnet_lite0" and "person" in state["classes"]
    # the segmenter trained on the set that scored best on the holdout, and says which
    trained = json.loads((repo / "metrics/train_segmenter.json").read_text())
    walk = json.loads((repo / "pseudo/rw/summary.json").read_text())["holdout"]
    last = json.loads((repo / "pseudo/isim/round_02/summary.json").read_text())["holdout"]
    scores = {"ISIM+CRF": last["crf"]["miou"], "ISIM+RW": walk["raw"]["miou"], "ISIM+RW+CRF": walk["crf"]["miou"]}
    assert trained["trained_on_holdout_miou"] == max(scores.values()) == scores[trained["trained_on"]]
    # evaluate_segmenter set it beside the best ISIM round and recorded the better one
    seg = json.loads((repo / "reports/segmenter.json").read_text())
    best = json.loads((repo / "reports/best_model.json").read_text())
    better = max((seg["raw"]["miou"], "segmenter.pt"), (seg["isim_round"]["miou"], "round_"))
    assert better[1] in best["checkpoint"] and "higher val mIoU" in best["why"]
    assert seg["trained_on"]["name"] == trained["trained_on"] and "subset" in seg


def test_the_fully_supervised_ceiling_on_the_same_photos(photo_repo):
    """The same segmenter on the ground-truth masks of the same train photos, scored on the same val."""
    repo = photo_repo
    run([bin_path("isim"), "train-segmenter", "--data", "data/prepared", "--masks",
         "data/prepared/SegmentationClass", "--isim-checkpoints", "checkpoints/isim", "--checkpoint",
         "ceiling/segmenter.pt", "--metrics", "ceiling/train.json", "--plots", "ceiling/train.csv"], repo)
    run([bin_path("isim"), "evaluate-segmenter", "--data", "data/prepared", "--checkpoint", "ceiling/segmenter.pt",
         "--metrics", "ceiling/metrics.json", "--report", "ceiling/report.json"], repo)
    trained = json.loads((repo / "ceiling/train.json").read_text())
    assert trained["trained_on"] == "data/prepared/SegmentationClass" and trained["trained_on_holdout_miou"] is None
    ceiling = json.loads((repo / "ceiling/report.json").read_text())
    weak = json.loads((repo / "reports/segmenter.json").read_text())
    assert ceiling["images"] == weak["images"] and 0 <= ceiling["raw"]["miou"] <= 100
    assert "warning" not in ceiling  # no masks of its own to fall below


def test_the_imagenet_only_anchor_scores_the_horses(photo_repo):
    r = run([bin_path("isim"), "imagenet-cam", "--data", "data/prepared", "--out", "anchor.json"], photo_repo)
    report = json.loads((photo_repo / "anchor.json").read_text())
    assert "horse" in r.stdout and report["imagenet_classes"]["horse"] == [339]
    # the ImageNet 'sorrel' CAM finds the horses: better than calling every pixel horse
    data = json.loads((photo_repo / "data/prepared/image_labels.json").read_text())
    horse = data["classes"].index("horse")
    ids = [i for i in (photo_repo / "data/prepared/ImageSets/Segmentation/train.txt").read_text().split()
           if horse in data["labels"][i]]
    tp = total = 0
    for id_ in ids:
        gt = read_label_png(photo_repo / f"data/prepared/SegmentationClass/{id_}.png")
        tp, total = tp + int((gt == horse).sum()), total + int((gt != 255).sum())
    assert report["images"]["horse"] == len(ids) and report["iou"]["horse"] > 100 * tp / total


def test_predict_segments_photos_it_has_never_seen(photo_repo, tmp_path):
    repo = photo_repo
    unseen = tmp_path / "unseen"
    unseen.mkdir()
    src = sorted((COCO_SAMPLE / "images").glob("*.jpg"))[:2]
    shutil.copy(src[0], unseen / "colour.jpg")
    photo = Image.open(src[1])
    photo.convert("L").save(unseen / "grey.png")
    photo.convert("CMYK").save(unseen / "cmyk.jpg")
    photo.convert("RGBA").save(unseen / "rgba.png")
    (unseen / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (tmp_path / "list.txt").write_text("unseen/colour.jpg\nunseen/gone.jpg\n")
    r = run([bin_path("isim"), "predict", str(unseen), str(tmp_path / "list.txt"), "--out", "predictions",
             "--crf"], repo)
    assert "5 images segmented" in r.stdout and "2 skipped" in r.stdout and "broken.jpg" in r.stdout
    # the model the last `dvc repro` validated best, and why
    best = json.loads((repo / "reports/best_model.json").read_text())
    assert f"model: {best['checkpoint']} ({best['name']}, {best['why']}" in r.stdout
    out = repo / "predictions"
    report = json.loads((out / "predictions.json").read_text())
    assert set(report["images"]) == {"colour", "grey", "cmyk", "rgba", "colour_2"}
    assert report["checkpoint"] == best["checkpoint"]
    n = len(json.loads((repo / "data/prepared/image_labels.json").read_text())["classes"])
    for name in report["images"]:
        mask = read_label_png(out / f"{name}.png", n)
        over = read_image(out / f"{name}_overlay.jpg")
        w, h = report["images"][name]["size"]
        assert mask.shape == (h, w) and over.shape == (h, w, 3)
    # the masks are the checkpoint's own, computed again in this process from the checkpoint alone
    pred = Predictor(repo / best["checkpoint"])
    again = pred.segment(read_image(unseen / "colour.jpg"), crf=True)
    assert np.array_equal(again, read_label_png(out / "colour.png"))
    assert not list(out.glob(".*.tmp*"))  # atomic writes: no temp files left


def test_predict_refuses_a_baseline_checkpoint(photo_repo):
    r = run([bin_path("isim"), "predict", "raw/horse/images", "--out", "p", "--checkpoint",
             "checkpoints/baseline.pt"], photo_repo, check=False)
    assert r.returncode == 2 and "has no segmentation output" in r.stderr
