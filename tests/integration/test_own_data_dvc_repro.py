"""Own data the way a new user meets it: raw files under raw/ as DVC dependencies, CSV mode
through the whole pipeline, the usual mistakes (unset paths, empty or wrong class maps, labels
one folder too high, images without labels), paint order, half-written outputs, and typos that
must not cost the outputs of the last good run."""
import csv
import json
import shutil
from pathlib import Path

from PIL import Image

from conftest import COCO_SAMPLE, PIPELINE, VOC, VOC_MAP, bin_path, dvc_project, run, tiny_params
from isim.visualize import GRID_HEADER


def _small_copy(dst: Path, long_side: int = 128) -> None:
    """coco_sample's photos, shrunk (polygons are normalised, so labels still fit)."""
    (dst / "images").mkdir(parents=True)
    for p in sorted((COCO_SAMPLE / "images").glob("*.jpg")):
        im = Image.open(p)
        im.thumbnail((long_side, long_side))
        im.convert("RGB").save(dst / "images" / p.name, quality=92)
    shutil.copytree(COCO_SAMPLE / "labels", dst / "labels")
    shutil.copy(COCO_SAMPLE / "data.yaml", dst / "data.yaml")


def _yolo(root: str = "raw/coco", **over) -> dict:
    own_cfg = {"format": "yolo", "images": f"{root}/images", "labels": f"{root}/labels",
               "names": f"{root}/data.yaml", "classes": VOC, "class_map": VOC_MAP, **over}
    return {"source": "own", "own": own_cfg}


def _ran(output: str) -> set[str]:
    return {ln.split("'")[1] for ln in output.splitlines() if ln.startswith("Running stage '")}


def test_raw_files_are_dependencies_and_the_run_cache_cannot_bring_back_stale_data(tmp_path):
    repo = tmp_path / "repo"
    _small_copy(tmp_path / "coco")
    repo = dvc_project(repo, tiny_params(data={**_yolo(), "on_bad": "skip"}))
    shutil.copytree(tmp_path / "coco", repo / "raw/coco")
    dvc = bin_path("dvc")
    run([dvc, "add", "-q", "raw/coco"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "raw data"], repo)
    assert _ran(run([dvc, "repro", "prepare"], repo).stdout) == {"check", "prepare"}
    meta = lambda: json.loads((repo / "data/prepared/image_labels.json").read_text())  # noqa: E731
    assert 15 not in meta()["labels"]["000000000025"]  # a giraffe photo: no person
    # a label file edited: prepare reruns and the new person is in the dataset
    with (repo / "raw/coco/labels/000000000025.txt").open("a") as f:
        f.write("0 0.1 0.1 0.4 0.1 0.4 0.4 0.1 0.4\n")  # class 0 = person
    assert _ran(run([dvc, "repro", "prepare"], repo).stdout) == {"prepare"}
    assert 15 in meta()["labels"]["000000000025"]
    # an image truncated, then removed: the dataset follows, never a run-cache copy of the old one
    img = repo / "raw/coco/images/000000000034.jpg"
    img.write_bytes(img.read_bytes()[:200])
    assert _ran(run([dvc, "repro", "prepare"], repo).stdout) == {"prepare"}
    assert "000000000034" in meta()["skipped"] and "000000000034" not in meta()["labels"]
    img.unlink()
    (repo / "raw/coco/labels/000000000034.txt").unlink()
    assert _ran(run([dvc, "repro", "prepare"], repo).stdout) == {"prepare"}
    assert "000000000034" not in meta()["skipped"] and "000000000034" not in meta()["labels"]
    assert len(meta()["labels"]) == 63


def test_csv_mode_runs_the_whole_pipeline_and_reports_accuracy_only(tmp_path):
    repo = dvc_project(tmp_path / "repo", tiny_params(data={"source": "own", "own": {
        "format": "csv", "images": "raw/coco/images", "labels": "raw/coco/labels.csv", "classes": VOC}}))
    _small_copy(tmp_path / "coco", long_side=96)
    (repo / "raw/coco").mkdir()
    shutil.copytree(tmp_path / "coco/images", repo / "raw/coco/images")
    with (COCO_SAMPLE / "image_labels.csv").open() as f, (repo / "raw/coco/labels.csv").open("w") as out:
        out.write("id,classes\n")
        for row in csv.DictReader(f):
            out.write(f"{row['image_id']},{'|'.join(row['voc_classes'].split())}\n")
    r = run([bin_path("dvc"), "repro"], repo)
    assert _ran(r.stdout) == PIPELINE
    summary = json.loads((repo / "metrics/eval.json").read_text())["summary"]
    assert {"baseline_train_label_acc", "isim_val_label_acc"} <= set(summary)
    assert not [k for k in summary if "miou" in k]
    assert "no masks" in json.loads((repo / "reports/evaluation.json").read_text())["note"]
    assert any((repo / "pseudo/baseline/crf").iterdir()) and (repo / "pseudo/isim/round_01/crf").is_dir()
    from PIL import Image  # Fig. 5 without a ground-truth column: image, CAM, every round, ISIM+RW
    assert Image.open(repo / "reports/fig5.jpg").height == GRID_HEADER + 2 * (120 + 4)


