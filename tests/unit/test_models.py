"""Models: one shared check per architecture (segmentation_models_pytorch style), plus weights,
checkpoints and export."""
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from isim.config import EncoderCfg, ModelCfg
from isim.models import ModelError, ModelSpec, Output, build_model, check_spec, load_model, model_spec

TINY = {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]}


def spec(arch="deeplabcam", backbone="resnet18", kwargs=TINY, n=7, **model):
    enc = EncoderCfg(backbone=backbone, backbone_kwargs=kwargs)
    return model_spec(enc, None if arch == "baseline" else ModelCfg(arch=arch, decoder_channels=8, **model), n)


class ArchCheck:
    """What every architecture must do; each architecture is a three-line subclass."""

    arch, upsample = "baseline", "learnable"

    def build(self):
        extra = {"unet_upsample": self.upsample} if self.arch == "unetcam" else {}
        return build_model(spec(self.arch, **extra)).eval()

    def test_outputs_are_tensors_of_the_right_shape(self):
        m = self.build()
        out = m(torch.randn(2, 3, 64, 80))
        assert isinstance(out, Output) and out.cam.shape == (2, 6, 4, 5)  # output stride 16
        assert torch.allclose(out.logits, out.cam.mean((2, 3)))  # GAP + 1x1 == mean of the CAM
        assert m.cam_head.conv.bias is None
        if self.arch == "baseline":
            assert out.seg is None and m.decoder is None
        else:
            assert out.seg.shape == (2, 7, 64, 80)
        c = m.classify(torch.randn(1, 3, 32, 32))
        assert c.seg is None and c.logits.shape == (1, 6)
        groups = {g["name"] for g in m.param_groups(0.1, 0.01, 1.0)}
        assert groups == ({"encoder", "classifier"} | ({"decoder"} if self.arch != "baseline" else set()))
        n_params = sum(p.numel() for g in m.param_groups(0.1, 0.01, 1.0) for p in g["params"])
        assert n_params == sum(p.numel() for p in m.parameters())  # every weight has its LR

    def test_exports_with_torch_export(self):
        m = self.build()
        x = torch.randn(2, 3, 64, 64)
        prog = torch.export.export(m, (x,))
        got = prog.module()(x)
        for a, b in zip(m(x), got):
            assert (a is None and b is None) or torch.allclose(a, b, atol=1e-5)


class TestBaseline(ArchCheck):
    arch = "baseline"


class TestDeepLabCAM(ArchCheck):
    arch = "deeplabcam"


class TestUNetCAMLearnable(ArchCheck):
    arch, upsample = "unetcam", "learnable"


class TestUNetCAMBilinear(ArchCheck):
    arch, upsample = "unetcam", "bilinear"


def test_unet_upsampling_kinds_differ():
    learn = build_model(spec("unetcam", n=3))
    bil = build_model(spec("unetcam", n=3, unet_upsample="bilinear"))
    assert any(isinstance(u, torch.nn.ConvTranspose2d) for u in learn.decoder.ups)
    assert not any(isinstance(u, torch.nn.ConvTranspose2d) for u in bil.decoder.ups)


def test_unknown_arch_lists_the_valid_ones():
    with pytest.raises(ModelError, match=r"'fcn' is not one of \['baseline', 'deeplabcam', 'unetcam'\]"):
        build_model(replace(spec(), arch="fcn"))


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101", "resnet152", "resnest50d", "resnest101e",
                                      "resnest200e", "resnest269e"])
def test_paper_backbones_construct_and_run(backbone):
    m = build_model(spec(backbone=backbone, kwargs={}, n=21)).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 64, 64))
    assert out.cam.shape == (1, 20, 4, 4) and out.seg.shape == (1, 21, 64, 64)


def test_pretrained_unreachable_is_a_clear_error():
    import time
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match=r"encoder.backbone=resnet18: pretrained weights .*encoder.weights"):
        build_model(spec("baseline", kwargs={}, n=3), pretrained=True)
    assert time.perf_counter() - t0 < 20  # no minutes of download retries


def test_local_weights_file(tmp_path):
    src = build_model(spec("baseline", n=3))
    path = tmp_path / "enc.pt"
    torch.save(src.encoder.state_dict(), path)
    dst = build_model(spec("baseline", n=3), weights=str(path))
    for a, b in zip(src.encoder.state_dict().values(), dst.encoder.state_dict().values()):
        assert torch.equal(a, b)
    other = tmp_path / "other.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, other)
    with pytest.raises(ModelError, match=r"other.pt: tensor conv1.weight has shape \(1,\)"):
        build_model(spec("baseline", n=3), weights=str(other))
    with pytest.raises(ModelError, match="does not exist"):
        build_model(spec("baseline", n=3), weights=str(tmp_path / "nope.pt"))


def test_spec_mismatch_names_the_difference():
    a, b = spec("deeplabcam", n=21), spec("unetcam", backbone="resnet50", n=21)
    with pytest.raises(ModelError, match=r"ck.pt: checkpoint is from another model; arch: checkpoint has "
                                         r"'deeplabcam', expected 'unetcam'; backbone: .*'resnet18'"):
        check_spec("ck.pt", a, b)


def test_a_checkpoint_loads_without_params_or_hub_weights(tmp_path):
    """A model trained from hub weights is rebuilt from its checkpoint alone, offline."""
    from isim.training.checkpoint import save_checkpoint
    s = spec("unetcam", kwargs={}, n=5)
    m = build_model(s)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, 10)
    save_checkpoint(tmp_path / "ck.pt", s, m, opt, sched, 1, 1, [], {"encoder": {"pretrained": True}})
    code = ("import sys, torch, huggingface_hub.constants as h; h.HF_HUB_OFFLINE = True;"
            "from isim.models import load_model; m = load_model(sys.argv[1]);"
            "print(m(torch.zeros(1, 3, 32, 32)).seg.shape)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ck.pt")], capture_output=True, text=True)
    assert r.returncode == 0 and "torch.Size([1, 5, 32, 32])" in r.stdout, r.stderr[-2000:]
    loaded = load_model(tmp_path / "ck.pt")
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), loaded.state_dict().values()))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="bad.pt: not a loadable checkpoint"):
        load_model(tmp_path / "bad.pt")


def test_a_checkpoint_keeps_its_spec_as_plain_types_and_older_specs_still_read(tmp_path):
    s = spec("unetcam", n=4)
    d = s.to_dict()
    assert all(isinstance(v, (str, int, dict)) for v in d.values())  # torch.load(weights_only=True) reads it
    assert ModelSpec.from_dict(d, "ck.pt") == s
    # a checkpoint of the release before kept None for unused fields
    old = {"arch": "baseline", "n_classes": 4, "backbone": "resnet18", "backbone_kwargs": {}, "output_stride": 16,
           "decoder_channels": None, "unet_upsample": None}
    assert ModelSpec.from_dict(old, "ck.pt").decoder_channels == 0
    with pytest.raises(ModelError, match="ck.pt: its model spec is not one this release reads"):
        ModelSpec.from_dict({**old, "heads": 3}, "ck.pt")
