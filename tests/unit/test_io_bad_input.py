"""Bad input gets an error naming the file and the problem."""
import numpy as np
import pytest
from PIL import Image

from isim.data.datasets import TrainDataset
from isim.data.prepared import Prepared
from isim.io import DataError, read_image, read_label_png, write_label_png


def _rgb(h=20, w=30):
    return (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)


def test_truncated_and_corrupt_images(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(_rgb()).save(good)
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(DataError, match="trunc.jpg: not a readable image"):
        read_image(trunc)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not an image")
    with pytest.raises(DataError, match="junk.jpg: not a readable image"):
        read_image(junk)
    with pytest.raises(DataError, match="gone.jpg: image file is missing"):
        read_image(tmp_path / "gone.jpg")


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "LA", "I;16"])
def test_image_modes_become_rgb(tmp_path, mode):
    src = Image.fromarray(_rgb())
    img = src.convert(mode) if mode != "I;16" else src.convert("L").convert("I;16")
    ext = "jpg" if mode in ("L", "CMYK") else "png"
    p = tmp_path / f"x.{ext}"
    img.save(p)
    out = read_image(p)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8


def test_masks_must_be_index_pngs(tmp_path):
    m = np.zeros((8, 8), np.uint8)
    m[2:5, 2:5] = 3
    ok = tmp_path / "ok.png"
    write_label_png(ok, m)
    np.testing.assert_array_equal(read_label_png(ok, 21), m)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.stack([m * 40] * 3, -1)).save(rgb)
    with pytest.raises(DataError, match=r"rgb.png: mask has mode 'RGB'.*mapped to class indices"):
        read_label_png(rgb)
    deep = tmp_path / "deep.png"
    Image.fromarray(m.astype(np.uint16) * 1000).save(deep)
    with pytest.raises(DataError, match=r"deep.png: mask has mode 'I;16'"):
        read_label_png(deep)
    big = tmp_path / "big.png"
    write_label_png(big, np.full((4, 4), 30, np.uint8))
    with pytest.raises(DataError, match=r"big.png: mask holds label values \[30\]"):
        read_label_png(big, 21)


def test_atomic_write_leaves_no_half_file(tmp_path, monkeypatch):
    target = tmp_path / "mask.png"

    def boom(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        write_label_png(target, np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temp file remains


def test_split_ids_missing_labels_and_small_images(tiny_data, tiny_cfg, tmp_path):
    import shutil
    root = tmp_path / "p"
    shutil.copytree(tiny_data.root, root)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("syn_00000\nnot_there\n")
    with pytest.raises(DataError, match=r"train.txt: 1 ids have no image-level label.*not_there"):
        Prepared.open(root).ids("train")
    # an image smaller than the crop is padded: image 0, mask 255 (never background)
    data = Prepared.open(tiny_data.root)
    tcfg = tiny_cfg.transform.model_copy(update={"resize_long": [20, 20], "crop": 40})
    ds = TrainDataset(data, data.ids("train"), tcfg)
    pseudo = tmp_path / "pseudo"
    for id_ in data.ids("train"):
        write_label_png(pseudo / f"{id_}.png", np.ones((64, 64), np.uint8))
    ds.set_pseudo(pseudo)
    item = ds[0]
    assert item["image"].shape == (3, 40, 40)
    m = item["mask"]
    assert (m == 255).sum() == 40 * 40 - 20 * 20 and (m == 1).sum() == 20 * 20
    # a pseudo mask whose size differs from its image is refused, naming the file
    write_label_png(pseudo / f"{data.ids('train')[0]}.png", np.ones((10, 10), np.uint8))
    with pytest.raises(DataError, match=r"syn_00000.png: pseudo mask is \(10, 10\) but its image is \(64, 64\)"):
        ds[0]
