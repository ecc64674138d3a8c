import hashlib

import numpy as np
from PIL import Image

from isim.config import SyntheticCfg
from isim.data.prepared import Prepared, labels_from_mask
from isim.data.synthetic import generate, render, render_with_marks
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


def _evidence_features(cfg: SyntheticCfg, indices: range):
    """Per (image, object class): features of the body without its mark (mean colour relative to
    its grey level, per-channel spread: hue and stripe contrast) and of the mark (its colour
    shift from the body), with the class."""
    body, mark, cls = [], [], []
    for i in indices:
        img, lab, marks = render_with_marks(cfg, i)
        img = img.astype(np.float32)
        for c in np.unique(lab):
            if c in (0, IGNORE):
                continue
            b, m = img[(lab == c) & ~marks], img[(lab == c) & marks]
            if len(b) < 50 or len(m) < 5:
                continue
            body.append(np.r_[b.mean(0) - b.mean(), b.std(0)])
            mark.append(m.mean(0) - b.mean(0))
            cls.append(c)
    return np.array(body), np.array(mark), np.array(cls)


def _nearest_centroid_accuracy(x_train, y_train, x_test, y_test) -> float:
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    classes = np.unique(y_train)
    centroids = np.stack([x_train[y_train == c].mean(0) for c in classes])
    pred = classes[np.argmin(((x_test[:, None] - centroids[None]) ** 2).sum(-1), 1)]
    return float((pred == y_test).mean())


def test_bodies_carry_weaker_class_evidence_than_marks():
    """A tiny classifier (nearest centroid, trained on 120 images, tested on 80 others) names an
    object's class from its mark almost always, from the rest of its body far less often but
    well above chance (1/6) - and only when ``body_evidence`` is on."""
    acc = {}
    for evidence in (True, False):
        cfg = SyntheticCfg(body_evidence=evidence)
        b_tr, m_tr, y_tr = _evidence_features(cfg, range(120))
        b_te, m_te, y_te = _evidence_features(cfg, range(120, 200))
        acc[evidence] = (_nearest_centroid_accuracy(b_tr, y_tr, b_te, y_te),
                         _nearest_centroid_accuracy(m_tr, y_tr, m_te, y_te))
    body, mark = acc[True]
    assert mark > 0.95
    assert 0.4 < body < mark - 0.2, acc
    assert acc[False][0] < body - 0.2, acc  # the shared-body design: bodies say (almost) nothing


def test_body_evidence_off_keeps_the_shared_body_design():
    """``body_evidence: false`` draws every body from one distribution (the earlier design):
    deterministic per seed, and different from the evidence design's images."""
    off = SyntheticCfg(body_evidence=False)
    a, b = render_with_marks(off, 3), render_with_marks(off, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], render(SyntheticCfg(), 3)[0])
