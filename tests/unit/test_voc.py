"""VOC 2012 + SBD preparation, on the real VOC masks shipped in tests/fixtures/voc_sample."""
import re

import numpy as np
import pytest
import scipy.io
from PIL import Image

from conftest import VOC_SAMPLE
from isim.config import from_dict
from isim.data import voc
from isim.data.prepared import VOC_CLASSES, Prepared, labels_from_mask
from isim.io import DataError, read_label_png, write_label_png


def _source_counts():
    text = (VOC_SAMPLE.parents[1] / "SOURCE.md").read_text()
    rows = re.findall(r"^\| (\w+) \| (\d+) \| (\d+) \| (\d+) \|$", text, re.M)
    return {name: (int(a), int(b), int(c)) for name, a, b, c in rows}


def test_real_voc_masks_give_the_published_class_counts():
    expected = _source_counts()
    assert len(expected) == 20
    counts = {}
    for split, col in (("train", 0), ("val", 1)):
        ids = voc.read_list(VOC_SAMPLE / "ImageSets" / "Segmentation" / f"{split}.txt")
        for id_ in ids:
            mask = read_label_png(VOC_SAMPLE / "SegmentationClass" / f"{id_}.png", 21)
            for c in labels_from_mask(mask, 21):
                counts.setdefault(VOC_CLASSES[c], [0, 0])[col] += 1
    for name, (tr, va, tv) in expected.items():
        assert counts[name] == [tr, va], name
        assert tr + va == tv


def _fake_voc(tmp_path, n_sbd=3):
    """A VOC root with real masks for 4 ids (2 train, 2 val), JPEGs of matching size, and an SBD
    root with .mat masks for 2 extra ids plus one that is also in VOC val (must be dropped)."""
    root = tmp_path / "VOC2012"
    train = voc.read_list(VOC_SAMPLE / "ImageSets" / "Segmentation" / "train.txt")[:2]
    val = voc.read_list(VOC_SAMPLE / "ImageSets" / "Segmentation" / "val.txt")[:2]
    for id_ in train + val:
        mask = read_label_png(VOC_SAMPLE / "SegmentationClass" / f"{id_}.png", 21)
        write_label_png(root / "SegmentationClass" / f"{id_}.png", mask)
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", mask.shape[::-1], (120, 90, 60)).save(root / "JPEGImages" / f"{id_}.jpg")
    seg = root / "ImageSets" / "Segmentation"
    seg.mkdir(parents=True)
    (seg / "train.txt").write_text("".join(f"{i}\n" for i in train))
    (seg / "val.txt").write_text("".join(f"{i}\n" for i in val))
    sbd = tmp_path / "sbd"
    (sbd / "cls").mkdir(parents=True)
    sbd_ids = [f"2099_{k:06d}" for k in range(n_sbd - 1)]
    for k, id_ in enumerate(sbd_ids):
        m = np.zeros((30, 40), np.uint8)
        m[5:20, 5:25] = 7 + k
        scipy.io.savemat(sbd / "cls" / f"{id_}.mat", {"GTcls": {"Segmentation": m, "CategoriesPresent": [7 + k]}})
        Image.new("RGB", (40, 30)).save(root / "JPEGImages" / f"{id_}.jpg")
    (sbd / "train.txt").write_text(f"{sbd_ids[0]}\n{val[0]}\n")
    (sbd / "val.txt").write_text("".join(f"{i}\n" for i in sbd_ids[1:]))
    return root, sbd, train, val, sbd_ids


def test_prepare_voc_with_sbd(tmp_path):
    root, sbd, train, val, sbd_ids = _fake_voc(tmp_path)
    cfg = from_dict({"data": {"source": "voc", "voc": {"voc_root": str(root), "sbd_root": str(sbd)}}})
    out = tmp_path / "prepared"
    stats = voc.prepare(cfg.data, out)
    data = Prepared.open(out)
    assert sorted(data.ids("train")) == sorted(train + sbd_ids)  # VOC val id from SBD is dropped
    assert data.ids("val") == val
    assert stats["images"] == len(train) + len(sbd_ids) + len(val)
    assert data.labels[sbd_ids[0]] == [7] and data.labels[sbd_ids[1]] == [8]
    sbd_mask = read_label_png(data.mask_path(sbd_ids[0]))
    assert Image.open(data.mask_path(sbd_ids[0])).mode == "P" and (sbd_mask == 7).sum() == 15 * 20
    for id_ in train:  # VOC's own masks keep their 255 boundary band
        assert (read_label_png(data.mask_path(id_)) == 255).any()


def test_train_aug_size_on_the_real_lists():
    ids = voc.read_list(VOC_SAMPLE / "ImageSets" / "SegmentationAug" / "train_aug.txt")
    assert len(ids) == 10582
    assert not set(ids) & set(voc.read_list(VOC_SAMPLE / "ImageSets" / "Segmentation" / "val.txt"))


def test_bad_voc_inputs(tmp_path):
    root, sbd, train, val, sbd_ids = _fake_voc(tmp_path)
    (root / "JPEGImages" / f"{train[0]}.jpg").unlink()
    cfg = from_dict({"data": {"source": "voc", "voc": {"voc_root": str(root), "sbd_root": str(sbd)}}})
    with pytest.raises(DataError, match=rf"{train[0]}.jpg: image file is missing"):
        voc.prepare(cfg.data, tmp_path / "out")
    skip = from_dict({"data": {"source": "voc", "on_bad": "skip",
                               "voc": {"voc_root": str(root), "sbd_root": str(sbd)}}})
    stats = voc.prepare(skip.data, tmp_path / "out2")
    assert stats["skipped"] == 1
    import json
    meta = json.loads((tmp_path / "out2" / "image_labels.json").read_text())
    assert "image file is missing" in meta["skipped"][train[0]]
    # a mask whose size differs from its image
    Image.new("RGB", (7, 7)).save(root / "JPEGImages" / f"{train[0]}.jpg")
    with pytest.raises(DataError, match=r"image is 7x7 but its mask is"):
        voc.prepare(cfg.data, tmp_path / "out3")
    # a broken SBD file
    (sbd / "cls" / f"{sbd_ids[0]}.mat").write_bytes(b"nonsense")
    Image.new("RGB", (1, 1)).save(root / "JPEGImages" / f"{train[0]}.jpg")
    with pytest.raises(DataError):
        voc.prepare(cfg.data, tmp_path / "out4")
    with pytest.raises(DataError, match="not an SBD GTcls file"):
        voc.read_sbd_mat(sbd / "cls" / f"{sbd_ids[0]}.mat")
