"""`isim ui`: MLflow's UI on the project's runs, sized for a laptop, opening on model training."""
import os
import re
import subprocess
import urllib.request

import psutil
import pytest
import yaml

from conftest import bin_path, browser_dom, free_port, needs_chromium, run, stage_cmds, tiny_params, wait_for_http

STAGE_CMDS = stage_cmds()


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A project whose `prepare` stage was tracked into its local store, and `isim ui` on it."""
    work = tmp_path_factory.mktemp("ui")
    (work / "params.yaml").write_text(yaml.safe_dump(tiny_params(tracking={"enabled": True}), sort_keys=False))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    r = run([bin_path("isim"), *STAGE_CMDS["prepare"][1:]], work, env=env)
    link = re.search(r"MLflow: runs table (\S+) \(this run: (\S+)\) after `isim ui`", r.stderr)
    assert link, r.stderr[-2000:]
    port = free_port()
    log = open(work / "ui.log", "w")  # noqa: SIM115 - the server writes to it until teardown
    proc = subprocess.Popen([bin_path("isim"), "ui", "--port", str(port)], cwd=work, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(url + "/health", proc, work / "ui.log", "isim ui")
    # the printed links name MLflow's default port; this server listens on another
    yield {"url": url, "proc": proc, "work": work, "links": [u.replace(":5000", f":{port}") for u in link.groups()]}
    proc.terminate()
    proc.wait(10)
    log.close()


def test_isim_ui_is_one_server_process_without_job_runners(ui):
    procs = [psutil.Process(ui["proc"].pid), *psutil.Process(ui["proc"].pid).children(recursive=True)]
    cmds = [" ".join(p.cmdline()) for p in procs]
    assert len(procs) <= 2, cmds  # `mlflow ui` itself and one uvicorn worker (plain `mlflow ui`: 11 processes)
    assert not [c for c in cmds if "huey" in c], cmds
    with urllib.request.urlopen(ui["url"] + "/", timeout=10) as page:
        assert b"mlflow.workflowType_v1" in page.read(3000)


@needs_chromium
def test_a_fresh_browser_lands_on_training_runs(ui, tmp_path):
    """Home page, experiment page and the printed links, each in a new browser profile: MLflow's
    model-training view (its side bar has the Model registry; the GenAI view's has Observability)."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{ui['work'] / 'mlflow.db'}")
    exp = client.get_experiment_by_name("isim")
    (pipeline,) = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("isim.kind") == "pipeline"]
    home = browser_dom(ui["url"] + "/", tmp_path)
    assert "Model registry" in home and "Observability" not in home, home[-3000:]
    for page in (f"{ui['url']}/#/experiments/{exp.experiment_id}", *ui["links"]):
        dom = browser_dom(page, tmp_path)
        assert "Observability" not in dom and "Model registry" in dom, page
        assert pipeline.info.run_name in dom, page  # the runs table (or the run's page) is what shows
