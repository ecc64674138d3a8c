"""Own data, class-index masks (MSRC, ADE20K, Cityscapes and CamVid style): real MSRC photos with
a class map that merges, sends to background and ignores, the void value, and each bad input."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import HORSE_SAMPLE, MSRC_SAMPLE
from isim.config import ConfigError, from_dict
from isim.data import own
from isim.data.prepared import Prepared
from isim.io import DataError, read_label_png

NAMES = (MSRC_SAMPLE / "classes.txt").read_text().split()
STUFF = ["building", "grass", "tree", "sky", "mountain", "water", "road"]
MAP = {"cow": "cow", "horse": "horse", "sheep": "sheep", "car": "car", "bicycle": "bicycle", "dog": "dog",
       "face": "person", "body": "person", **{s: "background" for s in STUFF}, "flower": "ignore"}
CLASSES = ["bicycle", "car", "cow", "dog", "horse", "person", "sheep"]


def _cfg(**over):
    own_cfg = {"format": "index", "images": str(MSRC_SAMPLE / "images"), "labels": str(MSRC_SAMPLE / "masks"),
               "names": str(MSRC_SAMPLE / "classes.txt"), "class_map": MAP, "classes": CLASSES,
               "val_fraction": 0.25}
    own_cfg.update(over)
    return from_dict({"data": {"source": "own", "own": own_cfg}})


def _raw(id_):
    return np.asarray(Image.open(MSRC_SAMPLE / "masks" / f"{id_}.png"))


def test_msrc_masks_map_merge_background_ignore_and_void(tmp_path):
    stats = own.prepare(_cfg().data, tmp_path / "p")
    data = Prepared.open(tmp_path / "p")
    assert stats["images"] == 16 and stats["skipped"] == 0 and data.classes == ["background", *CLASSES]
    person = data.classes.index("person")
    for id_ in ("16_22_s", "19_4_s", "1_24_s", "17_10_s"):
        raw, got = _raw(id_), read_label_png(data.mask_path(id_))
        assert got.shape == raw.shape
        # face and body are one person; stuff is background; void and the ignored class are 255
        for name, want in (("face", person), ("body", person), ("grass", 0), ("road", 0), ("building", 0),
                           ("horse", data.classes.index("horse")), ("flower", 255),
                           ("bicycle", data.classes.index("bicycle"))):
            sel = raw == NAMES.index(name)
            if sel.any():
                assert (got[sel] == want).all(), (id_, name)
        assert (got[raw == 255] == 255).all()
    # image-level labels follow the mapped masks: the grass-only photo is a negative
    assert data.labels["17_10_s"] == [] and data.labels["1_24_s"] == [data.classes.index("horse")]
    assert data.labels["16_22_s"] == sorted([data.classes.index("dog"), person])
    split = {s: set(data.ids(s)) for s in ("train", "val")}
    assert split["train"] | split["val"] == {p.stem for p in (MSRC_SAMPLE / "images").iterdir()}
    assert not split["train"] & split["val"]
    assert json.loads((tmp_path / "p/image_labels.json").read_text())["source"] == "own:index"


def test_unmapped_source_classes_follow_unmapped_and_are_named(tmp_path):
    cfg = _cfg(class_map={"horse": "horse", "cow": "cow"}, classes=["cow", "horse"], unmapped="ignore")
    stats = own.prepare(cfg.data, tmp_path / "p")
    got = read_label_png(tmp_path / "p/SegmentationClass/1_24_s.png")
    raw = _raw("1_24_s")
    assert (got[raw == NAMES.index("grass")] == 255).all() and (got[raw == NAMES.index("horse")] == 2).all()
    note = [w for w in stats["warnings"] if "not in its class_map" in w]
    assert note and "grass" in note[0] and "ignore" in note[0]
    # the class map names a class that occurs in no photo here: said as a likely cause
    stats = own.prepare(_cfg(class_map={**MAP, "cat": "person"}).data, tmp_path / "q")
    assert any("class_map: source classes that occur in no mask: " in w and w.endswith("cat")
               for w in stats["warnings"])


def test_with_the_horses_as_more_sources(tmp_path):
    cfg = _cfg(more_sources=[{"format": "masks", "images": str(HORSE_SAMPLE / "images"),
                              "labels": str(HORSE_SAMPLE / "masks"), "mask_class": "horse"}])
    stats = own.prepare(cfg.data, tmp_path / "p")
    data = Prepared.open(tmp_path / "p")
    assert stats["images"] == 24
    horse = data.classes.index("horse")
    assert sum(horse in v for v in data.labels.values()) == 2 + 8
    assert json.loads((tmp_path / "p/image_labels.json").read_text())["source"] == "own:index+masks"


def _copy(tmp_path, ids=("1_24_s", "1_27_s")):
    imgs, masks = tmp_path / "images", tmp_path / "masks"
    imgs.mkdir()
    masks.mkdir()
    for id_ in ids:
        shutil.copy(MSRC_SAMPLE / "images" / f"{id_}.jpg", imgs)
        shutil.copy(MSRC_SAMPLE / "masks" / f"{id_}.png", masks)
    return imgs, masks


def test_bad_inputs_are_named(tmp_path):
    imgs, masks = _copy(tmp_path)
    cfg = _cfg(images=str(imgs), labels=str(masks))
    # a value the names file lacks
    bad = _raw("1_27_s").copy()
    bad[0, :3] = 40
    Image.fromarray(bad).save(masks / "1_27_s.png")
    with pytest.raises(DataError, match=r"1_27_s.png: mask values \[40\] are not in classes.txt"):
        own.prepare(cfg.data, tmp_path / "o1")
    # skipped, counted, nothing written for it
    skip = from_dict({"data": {**cfg.data.model_dump(), "on_bad": "skip"}})
    assert own.prepare(skip.data, tmp_path / "o2")["skipped"] == 1
    assert not (tmp_path / "o2/JPEGImages/1_27_s.jpg").exists()
    # a mask of another size than its photo
    Image.fromarray(_raw("1_27_s")[:100]).save(masks / "1_27_s.png")
    with pytest.raises(DataError, match=r"1_27_s.png: mask is 320x100, its image 1_27_s.jpg 320x\d+: a class-index"):
        own.prepare(cfg.data, tmp_path / "o3")
    # colour-coded masks are not class indices
    Image.new("RGB", Image.open(imgs / "1_27_s.jpg").size).save(masks / "1_27_s.png")
    with pytest.raises(DataError, match=r"1_27_s.png: a class-index mask must be a palette or 8-bit grey"):
        own.prepare(cfg.data, tmp_path / "o4")
    (masks / "1_27_s.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"1_27_s.png: not a readable mask"):
        own.prepare(cfg.data, tmp_path / "o5")
    (masks / "1_27_s.png").unlink()
    with pytest.raises(DataError, match=r"1_27_s.jpg: image has no mask in"):
        own.prepare(cfg.data, tmp_path / "o6")
    # class_map names a class the names file does not have
    with pytest.raises(DataError, match=r"classes.txt: data.own.class_map names 'unicorn', which is not a class"):
        own.prepare(_cfg(class_map={**MAP, "unicorn": "horse"}).data, tmp_path / "o7")
    names = tmp_path / "names.txt"
    names.write_text("a\nb\na\n")
    with pytest.raises(DataError, match=r"names.txt: class names must be distinct, 'a' appears twice"):
        own.prepare(_cfg(names=str(names), class_map={"a": "horse"}).data, tmp_path / "o8")
    with pytest.raises(DataError, match=r"nothing.txt: names file is missing|nothing.txt is not an existing file"):
        own.prepare(_cfg(names=str(tmp_path / "nothing.txt")).data, tmp_path / "o9")


def test_grey_masks_a_yaml_names_file_and_a_void_value(tmp_path):
    """A Cityscapes-style set: grey PNGs, non-contiguous values named in a data.yaml, void 0."""
    imgs, masks = _copy(tmp_path, ids=("1_24_s",))
    raw = _raw("1_24_s")
    grey = np.where(raw == 255, 0, raw.astype(np.int32) + 7).astype(np.uint8)  # values 7.., void 0
    Image.fromarray(grey, "L").save(masks / "1_24_s.png")
    (tmp_path / "data.yaml").write_text("names:\n" + "".join(f"  {i + 7}: {n}\n" for i, n in enumerate(NAMES)))
    cfg = _cfg(images=str(imgs), labels=str(masks), names=str(tmp_path / "data.yaml"), void=0,
               class_map={"horse": "horse", "grass": "background", "building": "background"}, classes=["horse"])
    own.prepare(cfg.data, tmp_path / "p")
    got = read_label_png(tmp_path / "p/SegmentationClass/1_24_s.png")
    assert (got[raw == NAMES.index("horse")] == 1).all() and (got[raw == 255] == 255).all()
    assert (got[raw == NAMES.index("grass")] == 0).all()
    # void may not be a class's value
    with pytest.raises(DataError, match=r"value 7 is 'building' there but also data.own.void"):
        own.prepare(_cfg(images=str(imgs), labels=str(masks), names=str(tmp_path / "data.yaml"), void=7,
                         class_map={"horse": "horse"}, classes=["horse"]).data, tmp_path / "q")


@pytest.mark.parametrize("over, key, msg", [
    ({"names": ""}, "data.own.names", "must name the file with the source class names"),
    ({"class_map": {}}, "data.own.class_map", "must map source class names"),
    ({"class_map": {"horse": "unicorn"}}, "data.own.class_map.horse", "is not in data.own.classes"),
    ({"class_map": {"grass": "background", "horse": "ignore"}}, "data.own.class_map",
     "sends every source class to background or ignore"),
    ({"void": 300}, "data.own.void", ""),
])
def test_index_settings_are_checked_naming_the_key(over, key, msg):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ".*" + msg):
        _cfg(**over)
