"""Own data: YOLO/COCO polygons (the real coco_sample) and image-level CSV labels."""
import csv
import json

import numpy as np
import pytest
from matplotlib.path import Path as MplPath
from PIL import Image

from conftest import COCO_SAMPLE, HORSE_SAMPLE, VOC, VOC_MAP
from isim.config import from_dict
from isim.data import own
from isim.data.prepared import Prepared
from isim.io import DataError, read_image, read_label_png


def _cfg(unmapped="background", **over):
    own_cfg = {"format": "yolo", "images": str(COCO_SAMPLE / "images"), "labels": str(COCO_SAMPLE / "labels"),
               "names": str(COCO_SAMPLE / "data.yaml"), "classes": VOC, "class_map": VOC_MAP,
               "unmapped": unmapped}
    own_cfg.update(over)
    return from_dict({"data": {"source": "own", "own": own_cfg}})


def _reference_mask(polys, w, h, src_to_tgt, unmapped):
    """Independent rasteriser: pixel centres inside each polygon (matplotlib), same draw order."""
    yy, xx = np.mgrid[0:h, 0:w]
    centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1)
    out = np.zeros(h * w, np.uint8)
    for cls, xy in sorted(polys, key=lambda p: (p[0] in src_to_tgt, -own.polygon_area(p[1]))):
        inside = MplPath(xy * [w, h]).contains_points(centres)
        out[inside] = src_to_tgt.get(cls, unmapped)
    return out.reshape(h, w)


@pytest.fixture(scope="module")
def coco_prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("coco") / "prepared"
    stats = own.prepare(_cfg().data, out)
    return out, stats


def test_every_image_comes_through(coco_prepared):
    out, stats = coco_prepared
    data = Prepared.open(out)
    images = sorted(p.stem for p in (COCO_SAMPLE / "images").glob("*.jpg"))
    assert stats["images"] == len(images) == 64 and stats["skipped"] == 0
    assert sorted(data.ids("train") + data.ids("val")) == images
    assert data.ids("val"), "a validation split exists"
    # image-level labels agree with the sample's own table (VOC classes per image)
    with (COCO_SAMPLE / "image_labels.csv").open() as f:
        table = {r["image_id"]: sorted(r["voc_classes"].split()) for r in csv.DictReader(f)}
    for id_ in images:
        assert sorted(data.classes[c] for c in data.labels[id_]) == table[id_], id_
    assert stats["no_object_images"] == sum(1 for v in table.values() if not v) == 14


def test_rasterisation_matches_polygons(coco_prepared):
    out, _ = coco_prepared
    data = Prepared.open(out)
    names = own.read_names(COCO_SAMPLE / "data.yaml")
    src_to_tgt = {names.index(s): data.classes.index(t) for s, t in VOC_MAP.items()}
    total_ours, total_ref = np.zeros(21), np.zeros(21)
    for id_ in sorted(data.labels)[:24]:
        w, h = Image.open(COCO_SAMPLE / "images" / f"{id_}.jpg").size
        polys = own.read_polygons(COCO_SAMPLE / "labels" / f"{id_}.txt", len(names))
        ours = read_label_png(data.mask_path(id_))
        assert ours.shape == (h, w)
        ref = _reference_mask(polys, w, h, src_to_tgt, 0)
        c_ours = np.bincount(ours.ravel(), minlength=21)[:21]
        c_ref = np.bincount(ref.ravel(), minlength=21)[:21]
        perimeter = np.zeros(21)
        for cls, xy in polys:
            pts = xy * [w, h]
            perimeter[src_to_tgt.get(cls, 0)] += np.linalg.norm(np.diff(pts, axis=0, append=pts[:1]), axis=1).sum()
        for c in np.nonzero(c_ref + c_ours)[0]:
            if c == 0:
                continue
            # only pixels along a polygon's outline may go either way; interiors must agree
            assert abs(int(c_ours[c]) - int(c_ref[c])) <= perimeter[c] + 0.01 * c_ref[c], (id_, c)
        total_ours += c_ours
        total_ref += c_ref
    fg = slice(1, None)
    assert abs(total_ours[fg].sum() - total_ref[fg].sum()) / total_ref[fg].sum() < 0.02


def test_unmapped_objects_can_be_ignored(tmp_path):
    own.prepare(_cfg(unmapped="ignore").data, tmp_path / "p")
    data = Prepared.open(tmp_path / "p")
    giraffe = read_label_png(data.mask_path("000000000025"))  # giraffes only: not a VOC class
    assert (giraffe == 255).mean() > 0.05 and data.labels["000000000025"] == []


def test_yolo_bad_inputs(tmp_path):
    imgs, labels = tmp_path / "images", tmp_path / "labels"
    imgs.mkdir()
    labels.mkdir()
    Image.new("RGB", (20, 10)).save(imgs / "a.jpg")
    (labels / "a.txt").write_text("99 0.1 0.1 0.5 0.1 0.5 0.5\n")
    cfg = _cfg(images=str(imgs), labels=str(labels))
    with pytest.raises(DataError, match=r"a.txt:1: class index 99 is not in data.yaml"):
        own.prepare(cfg.data, tmp_path / "out")
    (labels / "a.txt").write_text("0 0.1 0.1 0.5\n")
    with pytest.raises(DataError, match=r"a.txt:1: a polygon needs an even number"):
        own.prepare(cfg.data, tmp_path / "out")
    bad_map = _cfg(images=str(imgs), labels=str(labels), class_map={"unicorn": "horse"})
    with pytest.raises(DataError, match="class_map names 'unicorn'"):
        own.prepare(bad_map.data, tmp_path / "out")
    (labels / "a.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.5\n")
    (imgs / "b.jpg").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"b.jpg: not a readable image"):
        own.prepare(cfg.data, tmp_path / "out")


def test_csv_labels_without_masks(tmp_path):
    imgs = tmp_path / "images"
    imgs.mkdir()
    for i, mode in enumerate(["RGB", "L", "RGBA", "CMYK"]):
        ext = "png" if mode == "RGBA" else "jpg"
        Image.new(mode, (16, 12)).save(imgs / f"im{i}.{ext}")
    table = tmp_path / "labels.csv"
    table.write_text("id,classes\nim0,cat|dog\nim1,dog\nim2,\nim3,cat\n")
    cfg = from_dict({"data": {"source": "own", "own": {"format": "csv", "images": str(imgs), "labels": str(table),
                                                       "classes": ["cat", "dog"], "val_fraction": 0.0}}})
    stats = own.prepare(cfg.data, tmp_path / "out")
    data = Prepared.open(tmp_path / "out")
    assert stats == {"images": 4, "skipped": 0, "no_object_images": 1, "no_label_file": 0, "warnings": []}
    assert not data.has_masks and data.labels == {"im0": [1, 2], "im1": [2], "im2": [], "im3": [1]}
    assert read_image(data.image_path("im2")).shape == (12, 16, 3)
    table.write_text("id,classes\nim0,cat|horse\n")
    with pytest.raises(DataError, match=r"labels.csv:2: class 'horse' is not in data.own.classes"):
        own.prepare(cfg.data, tmp_path / "out2")
    table.write_text("id,classes\nim0,cat\nim9,dog\n")
    with pytest.raises(DataError, match=r"id 'im9' has no image"):
        own.prepare(cfg.data, tmp_path / "out3")
    skip = from_dict({"data": {"source": "own", "on_bad": "skip", "own": {
        "format": "csv", "images": str(imgs), "labels": str(table), "classes": ["cat", "dog"]}}})
    stats = own.prepare(skip.data, tmp_path / "out4")
    meta = json.loads((tmp_path / "out4" / "image_labels.json").read_text())
    assert stats["images"] == 1 and stats["skipped"] == 4 and set(meta["skipped"]) == {"im9", "im1", "im2", "im3"}


def _photos(tmp_path, **over):
    """The horse photos (masks format) with the COCO photos as their negatives: two sources."""
    own_cfg = {"format": "masks", "images": str(HORSE_SAMPLE / "images"), "labels": str(HORSE_SAMPLE / "masks"),
               "mask_class": "horse", "classes": VOC,
               "more_sources": [{"format": "yolo", "images": str(COCO_SAMPLE / "images"),
                                 "labels": str(COCO_SAMPLE / "labels"), "names": str(COCO_SAMPLE / "data.yaml"),
                                 "class_map": VOC_MAP}]}
    own_cfg.update(over)
    return from_dict({"data": {"source": "own", "own": own_cfg}})


def test_figure_ground_masks_and_a_second_source_make_one_dataset(tmp_path):
    stats = own.prepare(_photos(tmp_path).data, tmp_path / "p")
    data = Prepared.open(tmp_path / "p")
    assert stats["images"] == 8 + 64 and stats["skipped"] == 0
    horse = VOC.index("horse") + 1
    assert sum(1 for v in data.labels.values() if horse in v) == 8  # COCO has no horse: its negatives
    for n in ["001", "002", "006"]:
        id_ = f"horse{n}"
        with Image.open(HORSE_SAMPLE / "masks" / f"{id_}.jpg") as m:
            src = np.asarray(m.convert("L")) > 128
        with Image.open(HORSE_SAMPLE / "images" / f"{id_}.jpg") as im:
            photo = im.size
        mask = read_label_png(data.mask_path(id_))
        img = read_image(data.image_path(id_))
        assert img.shape[:2] == mask.shape
        if src.size < photo[0] * photo[1]:  # the smaller one sets the size: the mask is kept as drawn
            assert mask.shape == src.shape and np.array_equal(mask == horse, src)
        else:
            assert mask.shape == (photo[1], photo[0])
            assert abs((mask == horse).mean() - src.mean()) < 0.01
        assert set(np.unique(mask)) <= {0, horse} and data.labels[id_] == [horse]
    assert json.loads((tmp_path / "p/image_labels.json").read_text())["source"] == "own:masks+yolo"


def test_max_side_shrinks_photos_and_masks_together(tmp_path):
    own.prepare(_photos(tmp_path, max_side=96).data, tmp_path / "p")
    data = Prepared.open(tmp_path / "p")
    for id_ in ["horse001", "000000000034"]:
        img, mask = read_image(data.image_path(id_)), read_label_png(data.mask_path(id_))
        assert max(img.shape[:2]) == 96 and img.shape[:2] == mask.shape
    assert data.labels["000000000034"] == []  # zebra: no VOC class, still a negative
    assert VOC.index("horse") + 1 in np.unique(read_label_png(data.mask_path("horse001")))


def test_figure_ground_bad_inputs(tmp_path):
    imgs, masks = tmp_path / "images", tmp_path / "masks"
    imgs.mkdir()
    masks.mkdir()
    Image.new("RGB", (40, 20)).save(imgs / "a.jpg")
    Image.new("L", (20, 10), 255).save(masks / "a.png")
    Image.new("RGB", (40, 20)).save(imgs / "b.jpg")
    cfg = _photos(tmp_path, images=str(imgs), labels=str(masks), more_sources=[])
    with pytest.raises(DataError, match=r"b.jpg: image has no mask in .*masks"):
        own.prepare(cfg.data, tmp_path / "o1")
    Image.new("L", (10, 10)).save(masks / "b.png")
    with pytest.raises(DataError, match=r"b.png: mask is 10x10, its image b.jpg 40x20: the aspect ratios differ"):
        own.prepare(cfg.data, tmp_path / "o2")
    (masks / "b.png").write_bytes(b"no png")
    with pytest.raises(DataError, match=r"b.png: not a readable (image|mask)"):
        own.prepare(cfg.data, tmp_path / "o3")
    skip = from_dict({"data": {**cfg.data.model_dump(), "on_bad": "skip"}})
    assert own.prepare(skip.data, tmp_path / "o4")["skipped"] == 1
    assert not (tmp_path / "o4/JPEGImages/b.jpg").exists()
    Image.new("RGB", (40, 20)).save(imgs / "horse001.png")  # the same id in two sources
    two = _photos(tmp_path, images=str(imgs), labels=str(masks),
                  more_sources=[{"format": "masks", "images": str(HORSE_SAMPLE / "images"),
                                 "labels": str(HORSE_SAMPLE / "masks"), "mask_class": "horse"}])
    (masks / "b.png").unlink()
    (imgs / "b.jpg").unlink()
    Image.new("L", (40, 20)).save(masks / "horse001.png")
    with pytest.raises(DataError, match=r"horse001.jpg: its id 'horse001' is taken by .*horse001.png"):
        own.prepare(two.data, tmp_path / "o5")


@pytest.mark.parametrize("over, key", [
    ({"mask_class": "unicorn"}, "data.own.mask_class"),
    ({"more_sources": [{"format": "csv", "images": "x", "labels": "y.csv"}]}, "data.own.more_sources"),
    ({"more_sources": [{"format": "yolo", "images": "x", "labels": "y"}]}, "data.own.more_sources.0.names"),
])
def test_source_settings_are_checked_naming_the_key(tmp_path, over, key):
    from isim.config import ConfigError
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _photos(tmp_path, **over)
