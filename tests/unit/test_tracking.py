"""Tracking and storage with real parts: an `mlflow server` process whose artifacts go to a local
S3-compatible endpoint (moto in server mode), and DVC push/pull through that endpoint."""
import json
import urllib.request
from pathlib import Path

import boto3
import pytest
import yaml

from conftest import bin_path, free_port, run, stage_cmds, tiny_params

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
STAGE_CMDS = stage_cmds()


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


def _workdir(tmp_path: Path, **over) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(**over), sort_keys=False))
    return tmp_path


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


def test_unreachable_tracking_costs_no_results(tmp_path):
    work = _workdir(tmp_path, tracking={"enabled": True})
    env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    r = run([bin_path("isim"), *STAGE_CMDS["prepare"][1:]], work, env=env)
    assert r.stderr.count("unreachable") == 1
    assert (work / "data/prepared/image_labels.json").is_file()
    strict = _workdir(tmp_path / "strict", tracking={"enabled": True, "strict": True})
    r = run([bin_path("isim"), *STAGE_CMDS["prepare"][1:]], strict, env=env, check=False)
    assert r.returncode == 2 and "unreachable (tracking.strict is true)" in r.stderr
