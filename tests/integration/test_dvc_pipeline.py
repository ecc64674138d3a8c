"""Real DVC commands in a temporary git repository: repro, no-op repro, exp run -S, queued sweeps."""
import json
import time

import pytest
import yaml

from conftest import PIPELINE, bin_path, dvc_project, run, tiny_params
from isim.visualize import GRID_HEADER


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    return dvc_project(tmp_path_factory.mktemp("dvcrepo"), tiny_params(tracking={"enabled": True}))


def _ran(output: str) -> set[str]:
    return {ln.split("'")[1] for ln in output.splitlines() if ln.startswith("Running stage '")}


def test_repro_then_noop_then_targeted_exp(dvc_repo):
    dvc = bin_path("dvc")
    r = run([dvc, "repro"], dvc_repo)
    assert _ran(r.stdout) == PIPELINE
    assert (dvc_repo / "data/prepared/JPEGImages").is_dir()
    assert (dvc_repo / "pseudo/isim/round_01/crf").is_dir() and (dvc_repo / "checkpoints/isim/round_01.pt").is_file()
    report = json.loads((dvc_repo / "metrics/eval.json").read_text())
    assert {"baseline_miou", "isim_miou", "gain", "isim_rw_miou", "isim_rw_crf_miou"} <= set(report["summary"])
    assert {"val_miou", "val_crf_miou"} <= set(json.loads((dvc_repo / "metrics/segmenter.json").read_text()))
    _chain_diagnostics_are_written_and_tracked(dvc_repo)
    # Fig. 5: one row per grid image, columns image | truth | CAM | every round | ISIM+RW
    from PIL import Image
    fig5 = Image.open(dvc_repo / "reports/fig5.jpg")
    rounds = len(list((dvc_repo / "pseudo/isim").glob("round_*")))
    assert fig5.format == "JPEG" and fig5.height == GRID_HEADER + 2 * (120 + 4)
    assert fig5.width >= (3 + rounds + 1) * 120
    # second repro: nothing to do, status clean
    t0 = time.perf_counter()
    r = run([dvc, "repro"], dvc_repo)
    assert _ran(r.stdout) == set(), r.stdout
    assert time.perf_counter() - t0 < 30
    assert run([dvc, "status"], dvc_repo).stdout.strip() == "Data and pipelines are up to date."
    # outputs are DVC's, not git's
    assert "data/prepared" not in run(["git", "status", "--porcelain"], dvc_repo).stdout
    run(["git", "add", "-A"], dvc_repo)
    run(["git", "commit", "-qm", "baseline run"], dvc_repo)
    # changing the threshold reruns exactly what depends on it
    r = run([dvc, "exp", "run", "-S", "threshold=0.25"], dvc_repo)
    assert _ran(r.stdout) == PIPELINE - {"prepare", "train_baseline"}, r.stdout
    # DVC shows the run's headline alone (per-round and per-epoch figures stay in their files)
    shown = json.loads(run([dvc, "metrics", "show", "--json"], dvc_repo).stdout)
    headline = next(iter(shown.values()))["data"]["metrics/headline.json"]["data"]
    assert set(headline) == {"cam", "isim", "walk", "final", "minutes"}
    assert headline["minutes"] > 0
    # a random-walk knob reruns the walk and what reads its masks, nothing before it
    r = run([dvc, "exp", "run", "-S", "random_walk.beta=8"], dvc_repo)
    assert _ran(r.stdout) == {"check", "random_walk", "train_segmenter", "evaluate_segmenter", "evaluate",
                              "headline"}, r.stdout


def _chain_diagnostics_are_written_and_tracked(repo):
    """The chain measured stage by stage against the ground truth, in its outputs and in MLflow:
    the affinity labels' precision, AffinityNet's pair accuracy per epoch, every walk rule on the
    holdout and the one chosen."""
    from mlflow.tracking import MlflowClient
    labels = json.loads((repo / "pseudo/affinity/summary.json").read_text())
    assert 0 <= labels["bg_precision"] <= 100 and 0 < labels["fg_share"] + labels["bg_share"] <= 1
    aff = json.loads((repo / "metrics/train_affinity.json").read_text())
    assert 0 <= aff["pair_acc_neg"] <= 100
    rows = (repo / "plots/train_affinity.csv").read_text().splitlines()
    assert "pair_acc_bg" in rows[0] and len(rows) == 1 + aff["epochs"]
    rw = json.loads((repo / "pseudo/rw/summary.json").read_text())
    rules = rw["rules"]
    assert rw["rule"] == rules[0]["rule"] and len(rules) == 9  # params.yaml: 4 alphas + 5 constants
    assert [r["miou"] for r in rules] == sorted((r["miou"] for r in rules), reverse=True)
    chain = json.loads((repo / "reports/evaluation.json").read_text())["chain"]
    assert chain["walk_rule"] == rw["rule"] and chain["walk_rules"] == rules
    assert chain["holdout"]["isim_rw_crf"] == rw["holdout"]["crf"]["miou"]
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("isim")
    walk = client.search_runs([exp.experiment_id], filter_string="tags.dvc_stage = 'random_walk'")[0]
    assert walk.data.params["walk_rule"] == rw["rule"]
    history = client.get_metric_history(walk.info.run_id, "rule_psa_miou")
    assert sorted(m.step for m in history) == [800, 1600, 3200, 6400]
    train = client.search_runs([exp.experiment_id], filter_string="tags.dvc_stage = 'train_affinity'")[0]
    assert len(client.get_metric_history(train.info.run_id, "affinity_pair_acc_neg")) == aff["epochs"]
    labelled = client.search_runs([exp.experiment_id], filter_string="tags.dvc_stage = 'affinity_labels'")[0]
    assert labelled.data.metrics["bg_precision"] == labels["bg_precision"]


def test_queued_sweep_logs_to_one_tracking_store(dvc_repo):
    dvc = bin_path("dvc")
    # a random-walk knob: each queued run repeats only the walk and what follows it (the threshold
    # sweep above already showed what a threshold reruns)
    # the sweep starts from the committed params, alone in the table (the experiments above go)
    run([dvc, "exp", "remove", "--all-commits"], dvc_repo)
    run(["git", "checkout", "params.yaml", "dvc.lock"], dvc_repo)
    run([dvc, "checkout", "--force"], dvc_repo)
    run([dvc, "exp", "run", "--queue", "-S", "random_walk.beta=6,12"], dvc_repo)
    run([dvc, "queue", "start", "-j", "1"], dvc_repo)
    deadline = time.time() + 400
    while time.time() < deadline:
        status = run([dvc, "queue", "status"], dvc_repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(8)  # each poll starts dvc (a second or two of CPU the queued runs need)
    logs = run([dvc, "queue", "logs", status.split()[-6]], dvc_repo, check=False).stdout
    assert "Failed" not in status, status + logs
    assert status.count("Success") >= 2, status
    exps = json.loads(run([dvc, "exp", "show", "--json"], dvc_repo).stdout)
    text = json.dumps(exps)
    assert '"beta": 6' in text and '"beta": 12' in text and '"walk"' in text
    # the sweep table a person reads: the headline metrics, then the swept knob, first
    rows = run([dvc, "exp", "show", "--csv", "--only-changed"], dvc_repo).stdout.splitlines()
    header = rows[0].split(",")
    first = header[:header.index("random_walk.beta") + 1]
    # what a walk knob changes: the walk's masks (the tiny final model may score the same each time)
    assert "walk" in first and len(first) <= 13, header  # DVC's 7 (Experiment, rev, typ, ...), then ours
    # README's line, in a 120-column terminal: every headline metric and the swept knob, whole
    table = run([dvc, "exp", "show", "--only-changed", "--drop", ".*/"], dvc_repo, env={"COLUMNS": "120"}).stdout
    assert "…" not in table and "!" not in table, table
    # and their curves side by side: every experiment committed its plots' files
    names = run([dvc, "exp", "ls", "--names-only"], dvc_repo).stdout.split()
    r = run([dvc, "plots", "diff", *names, "-o", "diffed"], dvc_repo)
    assert len(names) == 2 and "failed to load" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert all(n in (dvc_repo / "diffed" / "index.html").read_text() for n in names)
    cols = table.splitlines()[1].split()
    assert cols[:4] == ["Experiment", "Created", "State", "Executor"] and cols[-1] == "random_walk.beta", table
    assert "walk" in cols and set(cols[4:-1]) <= {"cam", "isim", "walk", "final", "minutes"}, table
    # queued runs execute in .dvc/tmp/exps/...: they must log to the repository's own store
    from mlflow.tracking import MlflowClient
    db = dvc_repo / "mlflow.db"
    assert db.is_file() and not list((dvc_repo / ".dvc" / "tmp").rglob("mlflow.db"))
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("isim")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`isim.kind` = 'pipeline'")
    names = {p.info.run_name for p in parents}
    assert len(parents) >= 3 and sum(not n.startswith("pipeline-") for n in names) >= 2, names


def test_a_typo_or_bad_value_stops_at_check_and_costs_no_outputs(dvc_repo):
    dvc = bin_path("dvc")
    run([dvc, "repro"], dvc_repo)  # outputs of a good run (nothing to do after the tests above)
    params = dvc_repo / "params.yaml"
    good = params.read_text()
    ckpt, pseudo = dvc_repo / "checkpoints/baseline.pt", dvc_repo / "pseudo/baseline/crf"
    before = ckpt.read_bytes()
    try:
        for edit, message in ((lambda p: p["train"].update(epoch=p["train"].pop("epochs")), "train.epoch: unknown key"),
                              (lambda p: p.update(threshold=1.5), "threshold: Input should be less than 1")):
            p = yaml.safe_load(good)
            edit(p)
            params.write_text(yaml.safe_dump(p, sort_keys=False))
            r = run([dvc, "repro"], dvc_repo, check=False)
            assert r.returncode != 0 and message in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
            assert _ran(r.stdout) == {"check"}
            assert ckpt.read_bytes() == before and any(pseudo.iterdir())
        # `-S train.epoch=3` is refused by DVC itself (no such key); appending one reaches the check stage
        r = run([dvc, "exp", "run", "-S", "+train.epoch=3"], dvc_repo, check=False)
        assert r.returncode != 0 and "train.epoch: unknown key" in r.stdout + r.stderr, r.stdout + r.stderr
    finally:
        params.write_text(good)
    assert ckpt.read_bytes() == before
