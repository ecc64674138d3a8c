"""Several processes under torchrun (gloo on CPU): sharded pseudo labels equal one process's,
two ranks train as one does at the same global batch, rank 0 alone writes, a killed rank is
restarted and resumes, and every way a distributed run can be set up wrong fails fast."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import bin_path, run, tiny_params

ENV = {"OMP_NUM_THREADS": "1"}


def _project(tmp_path: Path, tiny_data, **over) -> Path:
    params = tiny_params(**{"train": {"epochs": 3}, **over})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


def _isim(tmp_path: Path, *args: str, check: bool = True, timeout: int = 300):
    return run([bin_path("isim"), *args], tmp_path, ENV, check=check, timeout=timeout)


def _train(tmp_path: Path, data: Path, tag: str, *extra: str, check: bool = True):
    return _isim(tmp_path, "train-isim", "--data", str(data), "--checkpoints", f"ck{tag}", "--pseudo", f"ps{tag}",
                 "--metrics", f"m{tag}.json", "--plots", f"p{tag}.csv", *extra, check=check)


def test_sharded_pseudo_labels_are_byte_identical_to_one_process(tiny_data, tmp_path):
    proj = _project(tmp_path, tiny_data)
    _train(proj, tiny_data.root, "")
    ck = str(proj / "ck" / "round_03.pt")
    _isim(proj, "pseudo", "--checkpoint", ck, "--data", str(tiny_data.root), "--out", "one")
    _isim(proj, "pseudo", "--nproc", "2", "--checkpoint", ck, "--data", str(tiny_data.root), "--out", "two")
    for sub in ("raw", "crf"):
        names = sorted(os.listdir(proj / "one" / sub))
        assert names == sorted(os.listdir(proj / "two" / sub)) and len(names) == 12
        for n in names:
            assert (proj / "one" / sub / n).read_bytes() == (proj / "two" / sub / n).read_bytes(), n
    a, b = (json.loads((proj / d / "summary.json").read_text()) for d in ("one", "two"))
    assert a["crf"] == b["crf"] and a["raw"] == b["raw"] and a["classification"] == b["classification"]


def test_two_ranks_train_as_one_and_rank_0_alone_records(tiny_data, tmp_path):
    db = tmp_path / "mlflow.db"
    proj = _project(tmp_path, tiny_data, tracking={"enabled": True, "uri": f"sqlite:///{db}", "experiment": "ddp"})
    _train(proj, tiny_data.root, "1")
    r = _train(proj, tiny_data.root, "2", "--nproc", "2")
    assert "rank 0 of 2 on cpu (gloo)" in r.stderr
    one, two = (json.loads((proj / f"m{t}.json").read_text()) for t in ("1", "2"))
    assert two["rounds"] == one["rounds"] == 3 and two["epochs"] == 3
    # the same global batches and BatchNorm over them (train.sync_bn): the first epoch (classifier
    # only, no dropout) is one process's up to float noise
    first = [(proj / f"p{t}.csv").read_text().splitlines()[1].split(",") for t in ("1", "2")]
    assert float(first[1][2]) == pytest.approx(float(first[0][2]), rel=1e-5)
    assert first[1][5] == first[0][5]  # train label accuracy
    assert sorted(os.listdir(proj / "ps2")) == ["round_01", "round_02", "round_03"]
    assert len(os.listdir(proj / "ps2" / "round_03" / "crf")) == 12  # both shards in one round
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("ddp")
    runs = client.search_runs([exp.experiment_id], "tags.dvc_stage = 'train_isim'")
    assert len(runs) == 2  # one per training command, never one per rank
    two_run = max(runs, key=lambda x: x.info.start_time)
    assert len(client.get_metric_history(two_run.info.run_id, "loss")) == 3  # one value per epoch


@pytest.mark.parametrize("command", ["train-affinity", "train-segmenter"])
def test_affinitynet_and_the_segmenter_train_on_two_ranks_as_on_one(command, tiny_data, tmp_path):
    # DeepLabv2's head has no dropout, so two ranks over the same global batches (BatchNorm and
    # the losses' means over the global batch) follow one process up to float noise
    proj = _project(tmp_path, tiny_data, segmenter={"arch": "deeplabv2", "epochs": 2})
    gt = str(tiny_data.root / "SegmentationClass")
    masks = ["--labels", gt] if command == "train-affinity" else ["--masks", gt]
    for tag, extra in (("1", []), ("2", ["--nproc", "2"])):
        r = _isim(proj, command, "--data", str(tiny_data.root), *masks, "--checkpoint", f"ck{tag}.pt",
                  "--metrics", f"m{tag}.json", "--plots", f"p{tag}.csv", *extra)
    assert "rank 0 of 2 on cpu (gloo)" in r.stderr
    one, two = ([line.split(",") for line in (proj / f"p{t}.csv").read_text().splitlines()] for t in "12")
    assert one[0] == two[0] and len(one) == len(two) == 3  # the header and one row per epoch
    for a, b in zip(one[1:], two[1:]):
        assert [float(x) for x in b] == pytest.approx([float(x) for x in a], rel=1e-4, abs=1e-6)
    s1, s2 = (torch.load(proj / f"ck{t}.pt", weights_only=True) for t in "12")
    assert s1["spec"] == s2["spec"] and s2["epoch"] == 2


def _ranks(parent: int) -> dict[int, int]:
    """pid of each torchrun worker (by its RANK) under ``parent``."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"isim.cli" in cmd and b"TORCHELASTIC_RUN_ID" in b"".join(env) and \
                f"ISIM_TEST_PARENT={parent}".encode() in env:
            for kv in env:
                if kv.startswith(b"RANK="):
                    out[int(kv[5:])] = int(pid)
    return out


def test_a_killed_rank_is_restarted_and_the_run_resumes_to_the_same_result(tiny_data, tmp_path):
    proj = _project(tmp_path, tiny_data, train={"epochs": 4}, runtime={"max_restarts": 1})
    common = ["--data", str(tiny_data.root), "--nproc", "2"]
    _isim(proj, "train-isim", *common, "--checkpoints", "ck1", "--pseudo", "ps1", "--metrics", "m1.json",
          "--plots", "p1.csv")
    state = proj / "recovery" / "state.pt"
    e = dict(os.environ, ISIM_TEST_PARENT=str(os.getpid()), **ENV)
    p = subprocess.Popen([bin_path("isim"), "train-isim", *common, "--checkpoints", "ck2", "--pseudo", "ps2",
                          "--metrics", "m2.json", "--plots", "p2.csv", "--recovery", "recovery"], cwd=proj, env=e,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.monotonic()
    while not (state.is_file() and torch.load(state, weights_only=True)["epoch"] >= 2):
        assert p.poll() is None, p.stdout.read()[-3000:]
        assert time.monotonic() - t0 < 300
        time.sleep(0.01)
    os.kill(_ranks(os.getpid())[1], signal.SIGKILL)
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 0, out[-3000:]
    assert "continuing at epoch" in out
    one, two = (json.loads((proj / f"m{t}.json").read_text()) for t in ("1", "2"))
    assert {k: v for k, v in one.items() if k != "seconds"} == {k: v for k, v in two.items() if k != "seconds"}


@pytest.mark.parametrize("runtime, message", [
    ({"backend": "nccl"}, "runtime.backend=nccl needs CUDA"),
    ({"device": "cuda"}, "2 processes per node but this machine has 0 GPU(s)"),
    ({"nnodes": 2}, "runtime.nnodes=2 needs runtime.rdzv_endpoint"),
    ({"nproc_flag": "0"}, "--nproc 0: at least 1 process per node"),
    ({"nnodes": 2, "rdzv_endpoint": "10.255.255.1:29400", "dist_timeout_s": 3}, "10.255.255.1:29400: unreachable"),
])
def test_a_distributed_run_set_up_wrong_fails_within_seconds_naming_the_cause(tiny_data, tmp_path, runtime, message):
    if torch.cuda.is_available() and "device" in runtime:
        pytest.skip("this machine has GPUs")
    nproc = runtime.pop("nproc_flag", "2")
    proj = _project(tmp_path, tiny_data, runtime=runtime)
    t0 = time.monotonic()
    r = _train(proj, tiny_data.root, "", "--nproc", nproc, check=False)
    assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]
    assert time.monotonic() - t0 < 30


AGREE = """
import os, sys
from isim import distributed, runtime
from isim.config import RuntimeCfg
runtime.setup(RuntimeCfg(device="cpu"))
try:
    distributed.agree("params", {"threshold": 0.2 + 0.1 * distributed.rank()})
except distributed.DistributedError as e:
    print(f"rank {distributed.rank()}: {e}")
    sys.exit(3)
"""


def test_ranks_that_disagree_on_params_stop_naming_them(tmp_path):
    (tmp_path / "agree.py").write_text(AGREE)
    r = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
             str(tmp_path / "agree.py")], tmp_path, ENV, check=False, timeout=120)
    assert r.returncode != 0
    assert "the ranks disagree on params: rank 0" in r.stdout
