"""The real-photo pipeline as a user runs it, shrunk: horse photos with figure/ground masks and
COCO photos through `isim params pipelines/real-photos.yaml` and `dvc repro` with the offline
pretrained encoder, then `isim predict` on photos the model has never seen."""
import json
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import COCO_SAMPLE, HORSE_SAMPLE, REPO, bin_path, dvc_project, merge, run
from isim.config import from_dict
from isim.inference import Predictor
from isim.io import read_image, read_label_png

PRESET = REPO / "pipelines/real-photos.yaml"
COCO_TRAIN = ["000000000025", "000000000034", "000000000042", "000000000061", "000000000071", "000000000073"]
TINY = {  # the preset's code paths at seconds-scale: small images, one ISIM round, no tracking server
    "crf_freq": 1,
    "data": {"own": {"max_side": 96, "val_fraction": 0.25}},
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


def _preset_params(tmp_path) -> dict:
    """params.yaml after `isim params pipelines/real-photos.yaml`, as a user gets it."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    run([bin_path("isim"), "--params", "params.yaml", "params", str(PRESET)], tmp_path)
    return yaml.safe_load((tmp_path / "params.yaml").read_text())


def test_the_preset_applies_onto_params_yaml(tmp_path):
    cfg = from_dict(_preset_params(tmp_path))
    assert cfg.encoder.backbone == "efficientnet_lite0" and cfg.encoder.weights == "package"
    assert cfg.encoder.backbone_kwargs == {}  # the slim ResNet's kwargs replaced, not merged
    assert [s.format for _, s in cfg.data.own.sources()] == ["masks", "yolo"]
    assert cfg.data.own.more_sources[0].class_map["couch"] == "sofa"


@pytest.fixture(scope="module")
def photo_repo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("photos")
    params = merge(_preset_params(tmp), TINY)
    repo = dvc_project(tmp / "repo", params)
    shutil.copytree(HORSE_SAMPLE / "images", repo / "raw/horse/images")
    shutil.copytree(HORSE_SAMPLE / "masks", repo / "raw/horse/masks")
    for sub in ("images", "labels"):
        (repo / "raw/coco" / sub).mkdir(parents=True)
    for id_ in COCO_TRAIN:
        shutil.copy(COCO_SAMPLE / "images" / f"{id_}.jpg", repo / "raw/coco/images")
        shutil.copy(COCO_SAMPLE / "labels" / f"{id_}.txt", repo / "raw/coco/labels")
    shutil.copy(COCO_SAMPLE / "data.yaml", repo / "raw/coco/data.yaml")
    run([bin_path("dvc"), "add", "-q", "raw/horse", "raw/coco"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "photos"], repo)
    run([bin_path("dvc"), "repro"], repo, timeout=900)
    return repo


def test_a_tiny_real_photo_pipeline_runs_through_dvc_repro(photo_repo):
    repo = photo_repo
    data = json.loads((repo / "data/prepared/image_labels.json").read_text())
    assert len(data["labels"]) == 8 + len(COCO_TRAIN) and data["source"] == "own:masks+yolo"
    summary = json.loads((repo / "metrics/eval.json").read_text())["summary"]
    for k in ("baseline_miou", "baseline_crf_miou", "isim_miou", "isim_crf_miou", "isim_crf_recall",
              "isim_crf_precision"):
        assert 0 <= summary[k] <= 100, k
    report = json.loads((repo / "reports/evaluation.json").read_text())
    assert report["isim"]["rounds"][-1]["crf"]["iou"]["horse"] is not None  # horse scored on its own
    state = __import__("torch").load(repo / "checkpoints/isim/round_02.pt", weights_only=True)
    assert state["spec"]["backbone"] == "efficientnet_lite0" and state["classes"][13] == "horse"


def test_predict_segments_photos_it_has_never_seen(photo_repo, tmp_path):
    repo = photo_repo
    unseen = tmp_path / "unseen"
    unseen.mkdir()
    src = sorted(p for p in (COCO_SAMPLE / "images").glob("*.jpg") if p.stem not in COCO_TRAIN)[:2]
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
    out = repo / "predictions"
    report = json.loads((out / "predictions.json").read_text())
    assert set(report["images"]) == {"colour", "grey", "cmyk", "rgba", "colour_2"}
    assert report["checkpoint"].endswith("segmenter.pt")  # the final model of the last `dvc repro`
    for name in report["images"]:
        mask = read_label_png(out / f"{name}.png", 21)
        over = read_image(out / f"{name}_overlay.jpg")
        w, h = report["images"][name]["size"]
        assert mask.shape == (h, w) and over.shape == (h, w, 3)
    # the masks are the checkpoint's own, computed again in this process from the checkpoint alone
    pred = Predictor(repo / "checkpoints/segmenter.pt")
    again = pred.segment(read_image(unseen / "colour.jpg"), crf=True)
    assert np.array_equal(again, read_label_png(out / "colour.png"))
    assert not list(out.glob(".*.tmp*"))  # atomic writes: no temp files left


def test_predict_refuses_a_baseline_checkpoint(photo_repo):
    r = run([bin_path("isim"), "predict", "raw/horse/images", "--out", "p", "--checkpoint",
             "checkpoints/baseline.pt"], photo_repo, check=False)
    assert r.returncode == 2 and "has no segmentation output" in r.stderr


def _bench_run(variant: str, seed: int, walk: float | None) -> dict:
    """One run's record as benchmarks/real_photos.py keeps it; ``walk`` is the ISIM + RW mIoU."""
    masks = lambda m: {"miou": m, "crf_miou": m + 1, "precision": 30.0, "recall": 80.0,  # noqa: E731
                       "crf_precision": 31.0, "crf_recall": 81.0}
    summary = {"baseline_miou": 18.0 + seed, "baseline_crf_miou": 19.0 + seed, "isim_miou": 17.0 + seed,
               "isim_crf_miou": 20.0 + seed}
    iou = {"cam_crf": {"background": 50.0, "horse": 30.0 + seed}, "isim_crf": {"background": 52.0, "horse": 33.0}}
    rounds = [{"round": 0, "name": "CAM", **masks(18.0)}, {"round": 1, "name": "ISIM round 1", **masks(17.0)}]
    if walk is not None:
        summary |= {"isim_rw_miou": walk, "isim_rw_crf_miou": walk - 1}
        iou |= {"rw": {"background": 60.0, "horse": 40.0 + seed},
                "rw_crf": {"background": 59.0, "horse": 39.0 + seed}}
        rounds.append({"round": 2, "name": "ISIM + RW", **masks(walk)})
    return {"variant": variant, "seed": seed, "seconds": 60.0, "summary": summary, "iou": iou, "rounds": rounds}


def _bench():
    """benchmarks/real_photos.py as a module (benchmarks/ is not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("real_photos", REPO / "benchmarks" / "real_photos.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_real_photo_report_gives_walk_rows_only_for_the_seeds_that_walked():
    bench = _bench()
    # seed 2 ran before the walk existed: every CAM / ISIM row still covers three seeds
    runs = [_bench_run("pretrained", 0, 25.0), _bench_run("pretrained", 1, 27.0), _bench_run("pretrained", 2, None)]
    text = bench.tables(runs)
    assert "| pretrained | 3 | 19.00 ± 1.00 | 20.00 ± 1.00 | 18.00 ± 1.00 | 21.00 ± 1.00 | 1.00 ± 0.00 |" in text
    # the walk's row names its seeds and averages only them: RW − ISIM = (25 − 17, 27 − 18)
    assert "| pretrained | 0, 1 | 20.50 ± 0.71 | 26.00 ± 1.41 | 25.00 ± 1.41 | 8.50 ± 0.71 | 40.50 ± 0.71 |" in text
    assert "| horse | 31.0 | 33.0 | 39.5 |" in text and "| ISIM+RW+CRF |" in text
    assert "| ISIM + RW | 2 | 26.0 |" in text and "| CAM | 3 | 18.0 |" in text
    # no run walked: no walk table, no walk column
    plain = bench.tables([_bench_run("scratch", 0, None)])
    assert "random walk" not in plain and "ISIM+RW" not in plain


def test_real_photo_targets_judge_each_figure_against_its_baseline():
    bench = _bench()
    pre = [_bench_run("pretrained", s, None) for s in range(3)]
    scr = [_bench_run("scratch", s, None) for s in range(3)]
    for r, gain in zip(pre, (4.0, 5.0, 6.0)):  # ISIM+CRF − CAM+CRF = 5 ± 1: met
        r["summary"]["isim_crf_miou"] = r["summary"]["baseline_crf_miou"] + gain
    for r in scr:
        r["summary"]["baseline_miou"] -= 16  # pretrained CAM 19 vs scratch 3: +16, met
    for r, gain in zip(scr, (0.0, 6.0, 12.0)):  # 6 ± 6: the mean passes, the spread does not
        r["summary"]["isim_crf_miou"] = r["summary"]["baseline_crf_miou"] + gain
    pre[0] |= {"clean_state": True, "seconds": 19 * 60.0}
    scr[1] |= {"clean_state": True, "seconds": 21 * 60.0}
    lines = bench.target_lines(pre + scr)
    assert lines == [
        "real-photo pipeline from a clean state (pretrained, seeds 0): 19.0 min (target <= 20 min: met)",
        "real-photo pipeline from a clean state (scratch, seeds 1): 21.0 min (target <= 20 min: NOT met)",
        "pretrained CAM - from-scratch CAM (baseline): +16.00 mIoU (target >= +15: met)",
        "ISIM - CAM gain (pretrained): +5.00 ± 1.00 mIoU over 3 seeds (target >= +3 and > 2 std: met)",
        "ISIM - CAM gain (scratch): +6.00 ± 6.00 mIoU over 3 seeds (target >= +3 and > 2 std: NOT met)",
    ]
