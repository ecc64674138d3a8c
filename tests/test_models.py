import pytest
import torch

from isim.config import ModelCfg
from isim.models.net import ModelError, build_model, check_identity, identity

TINY = {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]}


@pytest.mark.parametrize("arch, upsample", [("cam", "learnable"), ("deeplabcam", "learnable"),
                                            ("unetcam", "learnable"), ("unetcam", "bilinear")])
def test_variants_shapes(arch, upsample):
    cfg = ModelCfg(backbone="resnet18", backbone_kwargs=TINY, decoder_channels=8, unet_upsample=upsample)
    m = build_model(cfg, arch, 7).eval()
    x = torch.randn(2, 3, 64, 80)
    out = m(x)
    assert out["cam"].shape == (2, 6, 4, 5)  # output stride 16
    assert torch.allclose(out["logits"], out["cam"].mean((2, 3)))  # GAP + 1x1 == mean of the CAM
    assert m.classifier.bias is None
    if arch == "cam":
        assert "seg" not in out and m.decoder is None
    else:
        assert out["seg"].shape == (2, 7, 64, 80)
    groups = {g["name"] for g in m.param_groups(0.1, 0.01, 1.0)}
    assert groups == ({"encoder", "classifier"} if arch == "cam" else {"encoder", "classifier", "decoder"})


def test_unet_upsampling_kinds_differ():
    learn = build_model(ModelCfg(backbone="resnet18", backbone_kwargs=TINY, decoder_channels=8), "unetcam", 3)
    bil = build_model(ModelCfg(backbone="resnet18", backbone_kwargs=TINY, decoder_channels=8,
                               unet_upsample="bilinear"), "unetcam", 3)
    assert any(isinstance(u, torch.nn.ConvTranspose2d) for u in learn.decoder.ups)
    assert not any(isinstance(u, torch.nn.ConvTranspose2d) for u in bil.decoder.ups)


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101", "resnet152", "resnest50d", "resnest101e",
                                      "resnest200e", "resnest269e"])
def test_paper_backbones_construct_and_run(backbone):
    m = build_model(ModelCfg(backbone=backbone, decoder_channels=16), "deeplabcam", 21).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 64, 64))
    assert out["cam"].shape == (1, 20, 4, 4) and out["seg"].shape == (1, 21, 64, 64)


def test_pretrained_unreachable_is_a_clear_error():
    import time
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match=r"model.backbone=resnet18: pretrained weights .*model.weights"):
        build_model(ModelCfg(backbone="resnet18", pretrained=True), "cam", 3)
    assert time.perf_counter() - t0 < 20  # no minutes of download retries


def test_local_weights_file(tmp_path):
    src = build_model(ModelCfg(backbone="resnet18", backbone_kwargs=TINY), "cam", 3)
    path = tmp_path / "enc.pt"
    torch.save(src.encoder.state_dict(), path)
    dst = build_model(ModelCfg(backbone="resnet18", backbone_kwargs=TINY, weights=str(path)), "cam", 3)
    for a, b in zip(src.encoder.state_dict().values(), dst.encoder.state_dict().values()):
        assert torch.equal(a, b)
    other = tmp_path / "other.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, other)
    with pytest.raises(ModelError, match="other.pt: weights do not fit the encoder"):
        build_model(ModelCfg(backbone="resnet18", backbone_kwargs=TINY, weights=str(other)), "cam", 3)
    with pytest.raises(ModelError, match="does not exist"):
        build_model(ModelCfg(backbone="resnet18", weights=str(tmp_path / "nope.pt")), "cam", 3)


def test_identity_mismatch_names_the_difference():
    a = identity(ModelCfg(backbone="resnet18"), "deeplabcam", 21)
    b = identity(ModelCfg(backbone="resnet50"), "unetcam", 21)
    with pytest.raises(ModelError, match=r"ck.pt: checkpoint is from another model; arch: checkpoint has "
                                         r"'deeplabcam', expected 'unetcam'; backbone: .*'resnet18'"):
        check_identity("ck.pt", a, b)
