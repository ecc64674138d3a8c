"""Own data the way a new user meets it: raw files under raw/ as DVC dependencies, CSV mode
through the whole pipeline, the usual mistakes (unset paths, empty or wrong class maps, labels
one folder too high, images without labels), paint order, half-written outputs, and typos that
must not cost the outputs of the last good run."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import COCO_SAMPLE, VOC, VOC_MAP, bin_path, dvc_project, run, tiny_params
from isim.config import ConfigError, from_dict
from isim.data import own
from isim.data.prepared import Prepared
from isim.io import DataError, read_label_png


def _yolo(root: str = "raw/coco", **over) -> dict:
    own_cfg = {"format": "yolo", "images": f"{root}/images", "labels": f"{root}/labels",
               "names": f"{root}/data.yaml", "classes": VOC, "class_map": VOC_MAP, **over}
    return {"source": "own", "own": own_cfg}


def test_raw_inputs_outside_raw_are_refused_before_anything_runs(tmp_path):
    repo = dvc_project(tmp_path / "repo", tiny_params(data=_yolo(root=str(COCO_SAMPLE))))
    r = run([bin_path("dvc"), "repro"], repo, check=False)
    assert r.returncode != 0 and "data.own.images" in r.stderr + r.stdout and "outside raw/" in r.stderr + r.stdout


def test_unset_or_missing_paths_name_their_key(tmp_path):
    with pytest.raises(ConfigError, match="data.own.names: must name the file with the source class names"):
        from_dict({"data": _yolo(names="")})
    with pytest.raises(ConfigError, match="data.own.class_map: must map source class names"):
        from_dict({"data": _yolo(class_map={})})
    with pytest.raises(DataError, match="data.own.images: .* is not an existing folder"):
        own.prepare(from_dict({"data": _yolo(root=str(tmp_path / "nowhere"))}).data, tmp_path / "out")
    cfg = from_dict({"data": _yolo(root=str(COCO_SAMPLE), names=str(COCO_SAMPLE))}).data
    with pytest.raises(DataError, match=r"data.own.names: .* is not an existing file \(it is a folder\)"):
        own.prepare(cfg, tmp_path / "out")


def test_labels_one_folder_too_high_fail_with_the_likely_cause(tmp_path):
    # Ultralytics layout: labels/train2017/<id>.txt, with `labels:` naming labels/
    (tmp_path / "labels").mkdir()
    shutil.copytree(COCO_SAMPLE / "labels", tmp_path / "labels" / "train2017")
    cfg = from_dict({"data": _yolo(root=str(COCO_SAMPLE), labels=str(tmp_path / "labels"))}).data
    with pytest.raises(DataError, match=r"none of the 64 images contains a target class.*one folder too high"):
        own.prepare(cfg, tmp_path / "out")
    ok = from_dict({"data": {**_yolo(root=str(COCO_SAMPLE), labels=str(tmp_path / "labels")),
                             "allow_negatives_only": True}}).data
    stats = own.prepare(ok, tmp_path / "out2")
    assert stats["no_label_file"] == 64 and any("64 of 64 images contain no target class" in w
                                                for w in stats["warnings"])


def test_a_target_class_nothing_maps_to_and_images_without_labels_are_warned_about(tmp_path):
    labels = tmp_path / "labels"
    shutil.copytree(COCO_SAMPLE / "labels", labels)
    for p in sorted(labels.glob("*.txt"))[:5]:
        p.unlink()
    cfg = from_dict({"data": _yolo(root=str(COCO_SAMPLE), labels=str(labels), classes=[*VOC, "unicorn"])}).data
    stats = own.prepare(cfg, tmp_path / "out")
    text = "\n".join(stats["warnings"])
    assert "5 of 64 images have no label file" in text
    assert "target classes that occur in no image:" in text and "unicorn" in text


def test_an_unmapped_object_never_erases_a_mapped_one_on_a_real_photo(tmp_path):
    # a person (mapped) with a tie (unmapped) drawn after it, inside it: the tie must not cut a hole
    (tmp_path / "images").mkdir()
    shutil.copy(COCO_SAMPLE / "images/000000000025.jpg", tmp_path / "images/a.jpg")
    (tmp_path / "labels").mkdir()
    person = "0 0.2 0.2 0.8 0.2 0.8 0.9 0.2 0.9"
    tie = "27 0.45 0.3 0.55 0.3 0.55 0.6 0.45 0.6"  # class 27 = tie, not in the map
    (tmp_path / "labels/a.txt").write_text(f"{person}\n{tie}\n")
    for unmapped, hole_value in (("background", 0), ("ignore", 255)):
        cfg = from_dict({"data": _yolo(root=str(tmp_path), names=str(COCO_SAMPLE / "data.yaml"),
                                       unmapped=unmapped)}).data
        out = tmp_path / f"out-{unmapped}"
        own.prepare(cfg, out)
        mask = read_label_png(out / "SegmentationClass/a.png", 21)
        h, w = mask.shape
        inside_tie = mask[int(0.35 * h):int(0.55 * h), int(0.47 * w):int(0.53 * w)]
        assert (inside_tie == 15).all(), np.unique(inside_tie)  # still person
        assert hole_value not in np.unique(inside_tie)


def test_a_failed_prepare_leaves_no_half_dataset_and_a_skipped_image_no_file(tmp_path):
    images = tmp_path / "images"
    shutil.copytree(COCO_SAMPLE / "images", images)
    last = sorted(images.glob("*.jpg"))[-1]
    last.write_bytes(b"not a jpeg")
    out = tmp_path / "prepared"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(data=_yolo(root=str(COCO_SAMPLE), images=str(images)))))
    r = run([bin_path("isim"), "--params", str(params), "prepare", "--out", str(out)], tmp_path, check=False)
    assert r.returncode == 2 and last.name in r.stderr
    assert not out.exists() and not any(tmp_path.glob(".prepared*"))  # nothing that looks like a dataset
    # on_bad: skip with a bad label file: its image leaves no JPEG behind
    labels = tmp_path / "labels"
    shutil.copytree(COCO_SAMPLE / "labels", labels)
    (labels / "000000000025.txt").write_text("0 0.1 0.2\n")
    cfg = from_dict({"data": {**_yolo(root=str(COCO_SAMPLE), labels=str(labels)), "on_bad": "skip"}}).data
    own.prepare(cfg, out)
    assert not (out / "JPEGImages/000000000025.jpg").exists()
    assert not (out / "SegmentationClass/000000000025.png").exists()
    assert "000000000025" not in Prepared.open(out).labels


def test_photos_under_the_embedded_settings_are_told_which_preset_fits(tmp_path, caplog):
    from isim.stages import warn_if_photo_sized
    out = tmp_path / "prepared"
    own.prepare(from_dict({"data": _yolo(root=str(COCO_SAMPLE))}).data, out)
    data = Prepared.open(out)
    embedded = from_dict(tiny_params()).transform
    with caplog.at_level("WARNING"):
        warn_if_photo_sized(embedded, data)
    assert "apply pipelines/photo.yaml" in caplog.text and "px on their long side" in caplog.text
    caplog.clear()
    photo = from_dict({"transform": yaml.safe_load((Path(__file__).parents[2] / "pipelines/photo.yaml")
                                                   .read_text())["transform"]}).transform
    with caplog.at_level("WARNING"):
        warn_if_photo_sized(photo, data)
    assert "photo.yaml" not in caplog.text
