"""The CUDA path: mixed precision (bf16 where the GPU has it, else fp16 + GradScaler),
channels_last, cuDNN autotuning, and NCCL ranks. These run only where CUDA exists (they are
reported as skipped elsewhere, never as passed)."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from conftest import bin_path, run, tiny_params
from isim import settings

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_isim_trains_on_the_gpu_with_mixed_precision_and_channels_last(tiny_data, tmp_path):
    from isim.config import from_dict
    from isim.runtime import amp_dtype
    from isim.training.isim import train_isim
    cfg = from_dict(tiny_params(runtime={"device": "cuda", "crf_workers": 0}, train={"epochs": 3, "amp": True}))
    assert amp_dtype(True, torch.device("cuda")) in (torch.bfloat16, torch.float16)
    out = train_isim(*settings.isim(cfg), tiny_data, tmp_path / "ck", tmp_path / "ps")
    assert all(torch.isfinite(torch.tensor(h.loss)) for h in out.history)
    assert len(out.rounds) == 3 and out.rounds[-1].images == 12
    assert next(out.model.parameters()).is_cuda
    assert torch.backends.cudnn.benchmark


def test_gpu_pseudo_labels_match_the_cpu_within_a_few_pixels(tiny_data, tmp_path):
    from isim.config import from_dict
    from isim.models import build_model, model_spec
    from isim.pseudo import masks
    cfg = from_dict(tiny_params())
    torch.manual_seed(0)
    model = build_model(model_spec(cfg.encoder, cfg.model, tiny_data.n_classes))
    ids = tiny_data.ids("train")
    made = settings.masks(cfg, cfg.threshold)
    cpu = masks.generate(model, tiny_data, ids, None, made, torch.device("cpu"))
    gpu = masks.generate(model.cuda(), tiny_data, ids, None, made, torch.device("cuda"))
    assert gpu.crf.miou == pytest.approx(cpu.crf.miou, abs=0.5)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_nccl_ranks_train(tiny_data, tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(train={"epochs": 2}), sort_keys=False))
    r = run([bin_path("isim"), "train-isim", "--nproc", "2", "--data", str(tiny_data.root), "--checkpoints", "ck",
             "--pseudo", "ps", "--metrics", "m.json", "--plots", "p.csv"], tmp_path)
    assert "rank 0 of 2 on cuda:0 (nccl)" in r.stderr
    assert json.loads((tmp_path / "m.json").read_text())["rounds"] == 2
