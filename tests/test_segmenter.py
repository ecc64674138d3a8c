"""The final segmenter (paper 4.1.7): trains on pseudo masks, is scored on val, predicts."""
import numpy as np
import pytest
import torch

from conftest import tiny_params
from isim.config import from_dict
from isim.evaluation import evaluate_segmenter
from isim.inference import Predictor, latest_checkpoint, predict
from isim.io import read_label_png
from isim.models import ModelError, load_model, load_segmenter
from isim.models.segmenter import build_segmenter, segmenter_spec
from isim.training.segmenter import train_segmenter


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
    result = train_segmenter(cfg, tiny_data, masks, ck)
    losses = [r["loss"] for r in result["history"]]
    assert losses[-1] < losses[0]
    report = evaluate_segmenter(ck, tiny_data, "val", torch.device("cpu"), crf=True, scales=[1.0])
    assert report["images"] == len(tiny_data.ids("val")) and {"raw", "crf"} <= set(report)
    untrained = tmp_path / "untrained.pt"
    cfg0 = from_dict(tiny_params(segmenter={"epochs": 1, "decoder_channels": 16, "lr_encoder": 1e-9,
                                            "lr_decoder": 1e-9}))
    train_segmenter(cfg0, tiny_data, masks, untrained)
    before = evaluate_segmenter(untrained, tiny_data, "val", torch.device("cpu"), crf=False, scales=[1.0])
    assert report["raw"]["miou"] > before["raw"]["miou"]
    assert latest_checkpoint(tmp_path / "checkpoints") == ck
    out = predict(ck, [tiny_data.image_path(i) for i in tiny_data.ids("val")[:2]], tmp_path / "pred")
    assert len(out["images"]) == 2
    first = tiny_data.ids("val")[0]
    mask = read_label_png(tmp_path / "pred" / f"{first}.png")
    from isim.io import read_image
    np.testing.assert_array_equal(mask, Predictor(ck).segment(read_image(tiny_data.image_path(first))))
    assert isinstance(load_segmenter(ck), torch.nn.Module)
    with pytest.raises(ModelError, match="not an ISIM or CAM baseline"):
        load_model(ck)
