"""The final segmenter (paper 4.1.7): trains on pseudo masks, is scored on val, predicts."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import tiny_params
from isim import settings
from isim.config import from_dict
from isim.evaluation import evaluate_segmenter
from isim.inference import Predictor, latest_checkpoint, predict
from isim.io import read_label_png
from isim.models import ModelError, load_model, load_segmenter
from isim.models.segmenter import build_segmenter, segmenter_spec
from isim.training.supervised import train_segmenter


@pytest.mark.parametrize("arch", ["deeplabv3", "deeplabv2"])
def test_segmenter_shapes(arch):
    spec = segmenter_spec(arch, 5, "resnet18", {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]}, 16, 16)
    assert build_segmenter(spec)(torch.zeros(2, 3, 48, 64)).shape == (2, 5, 48, 64)


def test_segmenter_learns_from_masks_and_is_scored_on_val(tiny_data, tmp_path):
    """Trained on the ground-truth masks of the train split (the easiest pseudo masks), the loss
    falls and val mIoU beats the untrained model's; `isim predict` defaults to it."""
    cfg = from_dict(tiny_params(segmenter={"epochs": 8, "decoder_channels": 16, "batch_size": 4,
                                           "scales": [1.0]}))
    masks = tiny_data.root / "SegmentationClass"
    ck = tmp_path / "checkpoints" / "segmenter.pt"
    result = train_segmenter(*settings.segmenter(cfg), tiny_data, masks, ck)
    losses = [r.loss for r in result.history]
    assert losses[-1] < losses[0]
    report = evaluate_segmenter(ck, tiny_data, "val", torch.device("cpu"), crf=True, scales=[1.0])
    assert report.images == len(tiny_data.ids("val")) and report.raw is not None and report.crf is not None
    untrained = tmp_path / "untrained.pt"
    cfg0 = from_dict(tiny_params(segmenter={"epochs": 1, "decoder_channels": 16, "lr_encoder": 1e-9,
                                            "lr_decoder": 1e-9}))
    train_segmenter(*settings.segmenter(cfg0), tiny_data, masks, untrained)
    before = evaluate_segmenter(untrained, tiny_data, "val", torch.device("cpu"), crf=False, scales=[1.0])
    assert report.raw.miou > before.raw.miou
    assert latest_checkpoint(ck, tmp_path / "isim", tmp_path / "none.json")[0] == ck
    out = predict(ck, [tiny_data.image_path(i) for i in tiny_data.ids("val")[:2]], tmp_path / "pred")
    assert len(out["images"]) == 2
    first = tiny_data.ids("val")[0]
    mask = read_label_png(tmp_path / "pred" / f"{first}.png")
    from isim.io import read_image
    np.testing.assert_array_equal(mask, Predictor(ck).segment(read_image(tiny_data.image_path(first))))
    assert isinstance(load_segmenter(ck), torch.nn.Module)
    with pytest.raises(ModelError, match="not an ISIM or CAM baseline"):
        load_model(ck)


@pytest.fixture(scope="module")
def segmenter_ck(tiny_data, tmp_path_factory):
    cfg = from_dict(tiny_params(segmenter={"epochs": 1, "decoder_channels": 16, "scales": [1.0]}))
    ck = tmp_path_factory.mktemp("seg") / "segmenter.pt"
    train_segmenter(*settings.segmenter(cfg), tiny_data, tiny_data.root / "SegmentationClass", ck)
    return ck


def test_export_voc_writes_the_servers_layout(segmenter_ck, tmp_path):
    """A VOC folder of real photographs (grayscale among them): one palette PNG per listed image at
    the image's size, packed under results/VOC2012/Segmentation/comp6_test_cls/."""
    import shutil
    import tarfile

    from PIL import Image

    from conftest import VOC_SAMPLE
    from isim.inference import export_voc
    root = tmp_path / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    ids = sorted(p.stem for p in (VOC_SAMPLE / "JPEGImages").glob("*.jpg"))[:3]
    for id_ in ids:
        shutil.copy(VOC_SAMPLE / "JPEGImages" / f"{id_}.jpg", root / "JPEGImages")
    Image.open(root / "JPEGImages" / f"{ids[0]}.jpg").convert("L").save(root / "JPEGImages" / f"{ids[0]}.jpg")
    (root / "ImageSets" / "Segmentation" / "test.txt").write_text("\n".join(ids) + "\n")
    archive = export_voc(segmenter_ck, root, tmp_path / "out")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert names == [f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png" for i in ids]
        for id_, member in zip(ids, tar.getmembers()):
            png = Image.open(tar.extractfile(member))
            assert png.mode == "P" and png.size == Image.open(root / "JPEGImages" / f"{id_}.jpg").size
            assert int(np.asarray(png).max()) < 7  # class indices of this 6-class dataset
    # an image the list names but the folder lacks stops the export and names it; no archive is made
    (root / "ImageSets" / "Segmentation" / "test.txt").write_text("\n".join(ids + ["2099_000001"]) + "\n")
    from isim.io import DataError
    with pytest.raises(DataError, match="2099_000001.jpg"):
        export_voc(segmenter_ck, root, tmp_path / "again")
    assert not (tmp_path / "again" / "results.tar.gz").exists()
    with pytest.raises(DataError, match="val.txt: missing"):
        export_voc(segmenter_ck, root, tmp_path / "x", split="val")


def test_checkpoints_without_a_segmentation_output_are_refused(tiny_data, tmp_path):
    from isim.models.affinitynet import affinity_spec, build_affinity
    from isim.training.checkpoint import save_checkpoint
    spec = affinity_spec("resnet18", {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]}, 16, 16)
    net = build_affinity(spec)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    save_checkpoint(tmp_path / "affinity.pt", spec, net, opt, torch.optim.lr_scheduler.StepLR(opt, 1), 1, 0, [], {})
    with pytest.raises(ModelError, match="no segmentation output"):
        Predictor(tmp_path / "affinity.pt")


def test_predict_skips_huge_images_and_names_an_empty_folder(segmenter_ck, tiny_data, tmp_path):
    from isim.io import DataError
    images = [tiny_data.image_path(i) for i in tiny_data.ids("val")[:2]]
    report = predict(segmenter_ck, images, tmp_path / "out", max_pixels=64 * 63)  # 64 x 64 images
    assert not report["images"] and len(report["skipped"]) == 2
    assert all("over the limit of 4032" in why for why in report["skipped"].values())
    assert not list((tmp_path / "out").glob("*.png"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images in .*empty"):
        predict(segmenter_ck, [tmp_path / "empty"], tmp_path / "out2")


def test_predict_batches_equal_sizes_and_gives_the_one_by_one_masks(segmenter_ck, tiny_data, tmp_path):
    """Mixed sizes, a grayscale photo and a broken file, batched and with CRF in worker processes:
    every mask equals `Predictor.segment` of that image alone, the report keeps the input order."""
    from PIL import Image

    from isim.io import read_image
    src = tmp_path / "in"
    src.mkdir()
    ids = tiny_data.ids("val")[:4]
    paths = []
    for k, id_ in enumerate(ids):  # 64 x 64, 48 x 80, 64 x 64, 48 x 80 (grayscale): two sizes, interleaved
        im = Image.open(tiny_data.image_path(id_))
        if k % 2:
            im = im.resize((80, 48))
        if k == 3:
            im = im.convert("L")
        paths.append(src / f"p{k}.png")
        im.save(paths[-1])
    (src / "p9_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    paths.insert(2, src / "p9_broken.jpg")
    one = Predictor(segmenter_ck)
    batched = predict(segmenter_ck, paths, tmp_path / "b", crf=True, batch_size=8, workers=2)
    assert list(batched["images"]) == ["p0", "p1", "p2", "p3"]  # input order, the broken file skipped
    assert list(batched["skipped"]) == [str(src / "p9_broken.jpg")]
    for name in batched["images"]:
        rgb = read_image(src / f"{name}.png")
        np.testing.assert_array_equal(read_label_png(tmp_path / "b" / f"{name}.png"), one.segment(rgb, crf=True))
        assert (tmp_path / "b" / f"{name}_overlay.jpg").is_file()
    single = predict(segmenter_ck, paths, tmp_path / "s", crf=True, batch_size=1, workers=0)
    assert single["images"] == batched["images"]


def test_segmenter_evaluation_is_the_same_batched_and_with_crf_workers(segmenter_ck, tiny_data):
    cpu = torch.device("cpu")
    serial = evaluate_segmenter(segmenter_ck, tiny_data, "val", cpu, crf=True, scales=[1.0, 0.5], batch_size=1)
    pooled = evaluate_segmenter(segmenter_ck, tiny_data, "val", cpu, crf=True, scales=[1.0, 0.5], batch_size=4,
                                workers=2)
    assert pooled.raw.confusion == serial.raw.confusion
    assert pooled.crf.confusion == serial.crf.confusion


def test_the_segmenter_can_start_from_the_isim_models_encoder(tiny_data, tiny_cfg, tmp_path):
    """segmenter.init: isim copies the final ISIM model's encoder weights; another encoder is
    refused with a message naming the difference."""
    from isim.models import build_model, model_spec
    from isim.training.checkpoint import save_checkpoint
    from isim.training.supervised import init_encoder
    torch.manual_seed(0)
    isim_spec = model_spec(tiny_cfg.encoder, tiny_cfg.model, tiny_data.n_classes)
    isim = build_model(isim_spec)
    opt = torch.optim.SGD(isim.parameters(), lr=0.1)
    ck = tmp_path / "round_01.pt"
    save_checkpoint(ck, isim_spec, isim, opt, torch.optim.lr_scheduler.StepLR(opt, 1), 1, 1, [], {})
    enc = tiny_cfg.encoder
    spec = segmenter_spec("deeplabv3", tiny_data.n_classes, enc.backbone, enc.backbone_kwargs, enc.output_stride, 16)
    seg = build_segmenter(spec)
    init_encoder(seg, spec, ck)
    for (k, a), (_, b) in zip(seg.encoder.state_dict().items(), isim.encoder.state_dict().items()):
        assert torch.equal(a, b), k
    other = replace(spec, backbone_kwargs={"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 128]})
    with pytest.raises(ModelError, match="backbone_kwargs"):
        init_encoder(build_segmenter(other), other, ck)
