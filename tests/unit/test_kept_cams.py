"""CAMs kept by a mask set and read back by the stages after it (pseudo/cam.py: keep/source)."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from isim import settings
from isim.io import DataError
from isim.models import build_model, model_spec
from isim.pseudo import masks
from isim.pseudo.cam import dataset_cams, load_cams
from isim.run_layout import final_cams

CPU = torch.device("cpu")


@pytest.fixture
def model(tiny_data, tiny_cfg):
    torch.manual_seed(0)
    return build_model(model_spec(tiny_cfg.encoder, tiny_cfg.model, tiny_data.n_classes)).eval()


def test_kept_cams_read_back_as_they_were_computed(tiny_data, tiny_cfg, model, tmp_path):
    ids = tiny_data.ids("train")[:5]
    cam = replace(settings.cams(tiny_cfg), scales=[1.0, 0.5])
    computed = list(dataset_cams(model, tiny_data, ids, replace(cam, keep=tmp_path / "cams"), CPU, None))
    read = list(dataset_cams(None, tiny_data, ids, replace(cam, source=tmp_path / "cams"), CPU, None))
    assert [it["id"] for it, *_ in read] == ids
    for (a, maps_a, keys_a, lg_a), (b, maps_b, keys_b, lg_b) in zip(computed, read):
        np.testing.assert_array_equal(a["rgb"], b["rgb"])
        assert torch.equal(a["label"], b["label"])
        np.testing.assert_array_equal(keys_a, keys_b)
        np.testing.assert_array_equal(lg_a, lg_b)
        np.testing.assert_allclose(maps_a, maps_b, atol=1e-3)  # kept in float16
    assert not list((tmp_path / "cams").glob(".*"))  # no temp file left behind


def test_kept_cams_refuse_other_scales_a_missing_image_and_a_broken_file(tiny_data, tiny_cfg, model, tmp_path):
    ids = tiny_data.ids("train")[:2]
    cam = replace(settings.cams(tiny_cfg), scales=[1.0], keep=tmp_path)
    list(dataset_cams(model, tiny_data, ids, cam, CPU, None))
    with pytest.raises(DataError, match=rf"{ids[0]}\.npz: made at scales \[1\.0\], asked for \[1\.0, 2\.0\]"):
        load_cams(tmp_path, ids[0], [1.0, 2.0])
    with pytest.raises(DataError, match=r"nope\.npz: missing"):
        load_cams(tmp_path, "nope", [1.0])
    (tmp_path / f"{ids[1]}.npz").write_bytes(b"half a file")
    with pytest.raises(DataError, match=rf"{ids[1]}\.npz: not a CAM file"):
        load_cams(tmp_path, ids[1], [1.0])
    with pytest.raises(ValueError, match="no model and no kept CAMs"):
        next(dataset_cams(None, tiny_data, ids, settings.cams(tiny_cfg), CPU, None))


def test_masks_from_kept_cams_match_the_model_s_in_worker_processes(tiny_data, tiny_cfg, model, tmp_path):
    """The pool path (each worker reads its own chunks) gives the masks the model gives."""
    ids = tiny_data.ids("train")
    made = replace(settings.masks(tiny_cfg, tiny_cfg.threshold), workers=2)
    kept = replace(made, cam=replace(made.cam, keep=tmp_path / "cams"))
    fresh = masks.generate(model, tiny_data, ids, tmp_path / "a", kept, CPU)
    read = replace(made, cam=replace(made.cam, source=tmp_path / "cams"))
    again = masks.generate(None, tiny_data, ids, tmp_path / "b", read, CPU)
    assert sorted(p.stem for p in (tmp_path / "cams").glob("*.npz")) == sorted(ids)
    assert fresh.raw is not None and again.raw is not None and fresh.crf is not None and again.crf is not None
    assert abs(fresh.raw.miou - again.raw.miou) < 0.5 and abs(fresh.crf.miou - again.crf.miou) < 0.5
    assert fresh.classification == again.classification


def test_final_cams_says_when_the_last_round_kept_none(tmp_path):
    (tmp_path / "round_01" / "crf").mkdir(parents=True)
    with pytest.raises(DataError, match=r"round_01/cams: missing; .* rerun the stage"):
        final_cams(tmp_path)


def test_without_keep_the_chain_computes_the_cams_from_the_final_model(tiny_data, tmp_path):
    """cam.keep false (the VOC preset: gigabytes of CAMs): no round keeps them, and the chain's
    stages run the final model instead; with keep the same outputs are refused, naming the folder."""
    from conftest import tiny_params
    from isim.config import from_dict
    from isim.pseudo.cam import final_cams_or_model
    from isim.stages import affinity_labels as stage
    from isim.training.isim import train_isim

    cfg = from_dict(tiny_params(cam={"keep": False}))
    train_isim(*settings.isim(cfg), tiny_data, tmp_path / "ck", tmp_path / "ps")
    assert not list((tmp_path / "ps").glob("round_*/cams"))
    model, cams = final_cams_or_model(cfg.cam.keep, tmp_path / "ck", tmp_path / "ps", CPU)
    assert model is not None and cams is None
    stage.run(cfg, tiny_data.root, tmp_path / "ck", tmp_path / "ps", tmp_path / "aff")
    assert sorted(p.stem for p in (tmp_path / "aff").glob("*.png")) == sorted(tiny_data.ids("train"))
    with pytest.raises(DataError, match=r"round_\d\d/cams: missing"):
        final_cams_or_model(from_dict(tiny_params()).cam.keep, tmp_path / "ck", tmp_path / "ps", CPU)
