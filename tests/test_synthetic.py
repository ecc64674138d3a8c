import hashlib

import numpy as np
from PIL import Image

from isim.config import SyntheticCfg
from isim.data.layout import Prepared, labels_from_mask
from isim.data.synthetic import generate, render
from isim.io import IGNORE, PALETTE


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_and_determinism(tmp_path):
    cfg = SyntheticCfg(n_train=6, n_val=3, size=64, body_size=[30, 44])
    stats = generate(cfg, tmp_path / "a")
    generate(cfg, tmp_path / "b")
    assert stats["images"] == 9
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")  # same seed, same bytes
    data = Prepared.open(tmp_path / "a")
    assert len(data.ids("train")) == 6 and len(data.ids("val")) == 3
    assert data.classes[0] == "background" and data.classes[1:] == cfg.classes
    for id_ in data.ids("train"):
        img = Image.open(data.image_path(id_))
        assert img.format == "JPEG" and img.size == (64, 64)
        mask = Image.open(data.mask_path(id_))
        assert mask.mode == "P"
        pal = np.array(mask.getpalette()[: 3 * 21]).reshape(-1, 3)
        np.testing.assert_array_equal(pal, PALETTE[:21])
        arr = np.asarray(mask)
        assert data.labels[id_] == labels_from_mask(arr, data.n_classes)
    other = SyntheticCfg(n_train=6, n_val=3, size=64, body_size=[30, 44], seed=1)
    assert not np.array_equal(render(cfg, 0)[0], render(other, 0)[0])


def test_benchmark_design_properties():
    """Void band, 1-3 objects, and a mark that is a small part of its body."""
    cfg = SyntheticCfg()
    n_objects, fg_fraction = [], []
    for i in range(40):
        img, mask = render(cfg, i)
        assert img.shape == (cfg.size, cfg.size, 3) and img.dtype == np.uint8
        assert (mask == IGNORE).any(), "VOC-style void band missing"
        labels = labels_from_mask(mask, len(cfg.classes) + 1)
        assert 1 <= len(labels) <= cfg.objects[1]
        n_objects.append(len(labels))
        fg_fraction.append(np.mean((mask > 0) & (mask != IGNORE)))
    assert len(set(n_objects)) > 1
    assert 0.1 < np.mean(fg_fraction) < 0.7
    # the void band is a band: a few pixels wide, not whole objects
    img, mask = render(cfg, 0)
    assert np.mean(mask == IGNORE) < 0.2
