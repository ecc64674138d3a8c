"""Tracking and storage with real parts: an `mlflow server` process whose artifacts go to a local
S3-compatible endpoint (moto in server mode), and DVC push/pull through that endpoint."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, bin_path, dvc_project, free_port, run, stage_cmds, tiny_params, wait_for_http

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
STAGE_CMDS = stage_cmds()
STAGES = [s for s in STAGE_CMDS if s != "check"]  # check validates params and tracks nothing


@pytest.fixture(scope="module")
def s3():
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, **{k.lower(): v for k, v in CREDS.items()
                                                          if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")
    client.create_bucket(Bucket="isim")
    yield endpoint, client
    server.stop()


@pytest.fixture(scope="module")
def mlflow_server(s3, tmp_path_factory):
    endpoint, _ = s3
    work = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    env = {**os.environ, **CREDS, "MLFLOW_S3_ENDPOINT_URL": endpoint}
    log = open(work / "server.log", "w")  # noqa: SIM115 - the server writes to it until teardown
    proc = subprocess.Popen(
        [bin_path("mlflow"), "server", "--app-name", "isim", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}", "--artifacts-destination", "s3://isim/mlartifacts"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(url + "/health", proc, work / "server.log", "mlflow server")
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


def _client_env(uri: str) -> dict:
    """A client with no S3 credentials: artifacts travel through the tracking server."""
    env = {k: "" for k in CREDS} | {"MLFLOW_TRACKING_URI": uri}
    return env


def _workdir(tmp_path: Path, **over) -> Path:
    """A project folder (params.yaml, and dvc.yaml, where `isim predict` and the dataset record
    find the stages' paths) whose stages the test runs by their commands, without DVC."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(**over), sort_keys=False))
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    return tmp_path


def test_pipeline_runs_are_tracked_with_artifacts_in_s3(mlflow_server, s3, tmp_path):
    _, s3client = s3
    work = _workdir(tmp_path, tracking={"enabled": True, "experiment": "tracked"})
    env = _client_env(mlflow_server)
    for stage in STAGES:
        r = run([bin_path("isim"), *STAGE_CMDS[stage][1:]], work, env=env)
        assert "without tracking" not in r.stderr, r.stderr[-3000:]
        # no library warnings (e.g. MLflow refusing a model's input example); the method's own
        # warnings (a tiny final segmenter below its masks) are not what this checks
        assert not re.search(r"WARNING mlflow|\w+Warning: ", r.stderr), r.stderr[-3000:]
    r = run([bin_path("isim"), *STAGE_CMDS["evaluate"][1:]], work, env=env)  # a re-run joins the same parent

    from mlflow.tracking import MlflowClient
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("tracked")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("isim.kind") == "pipeline"]
    assert len(parents) == 1
    parent = parents[0]
    # the stage ends by printing where to look: the runs table and the run, answered by the tracking server
    table, run_page = re.search(r"MLflow: runs table (\S+) \(this run: (\S+)\)", r.stderr).groups()
    view = "?workflowType=machine_learning"  # MLflow's model-training view, whatever the browser chose before
    assert table == f"{mlflow_server}/#/experiments/{exp.experiment_id}/runs{view}", table
    assert run_page == f"{table.removesuffix(view)}/{parent.info.run_id}{view}", run_page
    with urllib.request.urlopen(table.split("#")[0], timeout=10) as page:
        assert page.status == 200 and b"<html" in page.read(2000).lower()
    assert float(parent.data.params["threshold"]) == tiny_params()["threshold"]
    assert parent.data.params["model.arch"] == "deeplabcam"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == sorted(STAGES + ["evaluate"])
    assert all(r.info.status == "FINISHED" and r.data.tags["git_commit"] for r in children)
    train = next(r for r in children if r.info.run_name == "train_isim")
    loss = client.get_metric_history(train.info.run_id, "loss")
    assert [m.step for m in loss] == [1, 2, 3]
    rounds = client.get_metric_history(train.info.run_id, "pseudo_crf_miou")
    assert [m.step for m in rounds] == [1, 2, 3]
    arts = {a.path for a in client.list_artifacts(train.info.run_id, "rounds")}
    assert arts == {f"rounds/round_0{k}.png" for k in (1, 2, 3)}
    models = client.search_logged_models([exp.experiment_id], filter_string=f"source_run_id = '{train.info.run_id}'")
    assert [m.name for m in models] == ["isim_model"]
    # the logged model (torch.export, no pickle) loads in a fresh process, as torch and as a served
    # pyfunc model, and computes the CAM the checkpoint does
    code = ("import sys, json, numpy as np, torch, mlflow.pytorch, mlflow.pyfunc;"
            "t = mlflow.pytorch.load_model(sys.argv[1])(torch.ones(2, 3, 56, 56));"
            "p = mlflow.pyfunc.load_model(sys.argv[1]).predict(np.ones((2, 3, 56, 56), np.float32));"
            "print(json.dumps([t.sum().item(), float(p.sum()), list(p.shape)]))")
    r = run([sys.executable, "-c", code, f"models:/{models[0].model_id}"], work, env=env)
    from isim.models import load_model
    ref = load_model(work / "checkpoints/isim/round_03.pt")(torch.ones(2, 3, 56, 56)).cam
    torch_sum, served_sum, shape = json.loads(r.stdout.strip().splitlines()[-1])
    assert shape == list(ref.shape)
    assert all(abs(g - ref.sum().item()) <= 1e-3 * (1 + abs(g)) for g in (torch_sum, served_sum))
    ev = next(r for r in children if r.info.run_name == "evaluate")
    assert "isim_miou" in ev.data.metrics and "gain" in ev.data.metrics
    sweep = client.get_metric_history(ev.info.run_id, "isim_sweep_miou")
    assert [m.step for m in sweep] == [0, 1]
    artifacts = {a.path for a in client.list_artifacts(ev.info.run_id)}
    assert artifacts >= {"confusion_isim_final.png", "eval.json", "fig5.jpg"}
    # the artifacts are objects in the bucket behind the server
    # the registry holds what `isim predict` uses: @candidate is the validated best of the run
    # (the final segmenter or the best ISIM round), both ways, and serves the masks predict writes
    ev_seg = next(r for r in children if r.info.run_name == "evaluate_segmenter")
    _served_is_predicted(client, work, env, ev_seg.info.run_id)
    cmd = STAGE_CMDS["evaluate_segmenter"][1:]
    alone = [a for i, a in enumerate(cmd) if not {a, cmd[i - 1]} & {"--isim-checkpoints", "--isim-pseudo"}]
    run([bin_path("isim"), *alone], work, env=env)  # no ISIM round to compare: the segmenter
    assert _served_is_predicted(client, work, env)["model"] == "final segmenter"
    # a segmenter that calls every pixel the class rarest on val (absent, if one is): mIoU 0 or
    # nearly, below any round (the tiny rounds score about 1)
    from isim.data.prepared import Prepared
    from isim.io import read_label_png
    data = Prepared.open(work / "data/prepared")
    counts = np.zeros(data.n_classes, np.int64)
    for id_ in data.ids("val"):
        m = read_label_png(data.mask_path(id_))
        counts += np.bincount(m[m < data.n_classes].ravel(), minlength=data.n_classes)
    rarest = 1 + int(np.argmin(counts[1:]))
    state = torch.load(work / "checkpoints/segmenter.pt", weights_only=True)
    for k, v in state["model"].items():
        if "head" in k and k.endswith("bias"):
            v.zero_()[rarest] = 1e4
    torch.save(state, work / "checkpoints/bad.pt")
    run([bin_path("isim"), *[("checkpoints/bad.pt" if a == "checkpoints/segmenter.pt" else a) for a in cmd]],
        work, env=env)
    tags = _served_is_predicted(client, work, env)
    assert tags["model"].startswith("ISIM round") and tags["other_model"] == "final segmenter", tags
    assert float(tags["val_miou"]) > float(tags["other_val_miou"]), tags
    keys = [o["Key"] for o in s3client.list_objects_v2(Bucket="isim", Prefix="mlartifacts/").get("Contents", [])]
    assert any(k.endswith("rounds/round_01.png") for k in keys)
    assert any(k.endswith("confusion_isim_final.png") for k in keys)
    _pipeline_run_reads_back_over_rest(mlflow_server, work, env)


def _served_is_predicted(client, work: Path, env: dict, run_id: str | None = None) -> dict:
    """@candidate's version: made by ``run_id`` (when given), and in a fresh process its masks of
    a photo are those `isim predict` writes in the project. Returns the version's tags."""
    version = client.get_model_version_by_alias("isim-segmenter", "candidate")
    assert run_id is None or version.run_id == run_id
    image = sorted((work / "data/prepared/JPEGImages").glob("*.jpg"))[0]
    code = ("import sys, numpy as np, mlflow.pyfunc; from PIL import Image;"
            "m = mlflow.pyfunc.load_model('models:/isim-segmenter@candidate');"
            "out = m.predict(np.asarray(Image.open(sys.argv[1]).convert('RGB')), params={'crf': True});"
            "np.save(sys.argv[2], out)")
    env = {**env, "TQDM_DISABLE": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    run([sys.executable, "-c", code, str(image), str(work / "served.npy")], work, env=env)
    run([bin_path("isim"), "predict", str(image), "--out", "predicted", "--crf", "--workers", "0"], work, env=env)
    from isim.io import read_label_png
    predicted = read_label_png(work / "predicted" / f"{image.stem}.png")
    np.testing.assert_array_equal(np.load(work / "served.npy"), predicted)
    chosen = json.loads((work / "reports/best_model.json").read_text())
    assert version.tags["model"] == chosen["name"] and version.tags["checkpoint"] == chosen["checkpoint"]
    return version.tags


def _rest(url: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}", method="POST" if body else "GET",
                                 data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _parent_over_rest(url: str) -> dict:
    exp = _rest(url, "experiments/get-by-name?experiment_name=tracked")["experiment"]
    found = _rest(url, "runs/search", {"experiment_ids": [exp["experiment_id"]],
                                       "filter": "tags.`isim.kind` = 'pipeline'"})["runs"]
    assert len(found) == 1
    return {"exp": exp, **found[0]}


def _pipeline_run_reads_back_over_rest(url: str, work: Path, env: dict) -> None:
    """What the MLflow UI shows, read through the server's REST API: a model-training experiment
    whose pipeline run ended with its last stage, carries the headline metrics and the params as
    columns, the prepared dataset as input and the code version as source."""
    p = _parent_over_rest(url)
    tags = {t["key"]: t["value"] for t in p["exp"].get("tags", [])}
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    info, data = p["info"], p["data"]
    assert info["status"] == "FINISHED" and int(info["end_time"]) >= int(info["start_time"])
    metrics = {m["key"]: m["value"] for m in data["metrics"]}
    assert {"baseline_crf_miou", "isim_crf_miou", "gain_crf", "isim_train_label_acc",
            "final_holdout_crf_miou"} <= set(metrics)
    params = {m["key"]: m["value"] for m in data["params"]}
    assert float(params["threshold"]) == tiny_params()["threshold"] and "crf_freq" in params
    run_tags = {t["key"]: t["value"] for t in data["tags"]}
    assert run_tags["mlflow.source.name"] == "dvc.yaml" and "mlflow.source.git.commit" in run_tags
    assert not [k for k, v in run_tags.items() if v == ""], run_tags  # a finished run carries no empty tag
    (ds,) = p["inputs"]["dataset_inputs"]
    assert ds["dataset"]["name"] == "prepared" and ds["dataset"]["digest"]
    # a failing stage ends the pipeline run FAILED and names itself; a good rerun finishes it again
    cmd = STAGE_CMDS["evaluate"][1:]
    r = run([bin_path("isim"), *[("missing" if a == "pseudo/isim" else a) for a in cmd]], work, env=env, check=False)
    assert r.returncode == 2
    p = _parent_over_rest(url)
    tags = {t["key"]: t["value"] for t in p["data"]["tags"]}
    assert p["info"]["status"] == "FAILED" and tags["failed_stage"] == "evaluate"
    run([bin_path("isim"), *cmd], work, env=env)
    p = _parent_over_rest(url)
    assert p["info"]["status"] == "FINISHED" and "failed_stage" not in {t["key"] for t in p["data"]["tags"]}


def _digest(paths: list[Path]) -> dict:
    out = {}
    for root in paths:
        for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_dvc_push_pull_through_s3(s3, tmp_path):
    endpoint, s3client = s3
    repo = dvc_project(tmp_path / "repo", tiny_params())
    dvc = bin_path("dvc")
    run([dvc, "repro", "train_isim"], repo)
    run([dvc, "remote", "add", "-d", "store", "s3://isim/dvcstore"], repo)
    run([dvc, "remote", "modify", "store", "endpointurl", endpoint], repo)
    run([dvc, "remote", "modify", "--local", "store", "access_key_id", "testing"], repo)
    run([dvc, "remote", "modify", "--local", "store", "secret_access_key", "testing"], repo)
    config = (repo / ".dvc" / "config").read_text()
    assert "testing" not in config and "testing" in (repo / ".dvc" / "config.local").read_text()
    assert run(["git", "check-ignore", ".dvc/config.local"], repo, check=False).returncode == 0  # never committed
    outs = [repo / "data/prepared", repo / "pseudo/isim", repo / "checkpoints/isim"]
    before = _digest(outs)
    assert any("round_01" in k for k in before) and any(k.endswith(".pt") for k in before)
    run([dvc, "push"], repo)
    assert s3client.list_objects_v2(Bucket="isim", Prefix="dvcstore/")["KeyCount"] > 0
    shutil.rmtree(repo / ".dvc" / "cache")
    for o in outs:
        shutil.rmtree(o)
    run([dvc, "pull", "--with-deps", "train_isim"], repo)
    assert _digest(outs) == before
