"""`isim tune`: real worker processes against a real journal file and a real PostgreSQL server,
a worker killed mid-trial, four workers logging to one SQLite MLflow store, pruning,
optuna-dashboard, and the best params reproduced by `dvc exp run`."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest import bin_path, dvc_project, free_port, run, tiny_params
from pg import PASSWORD, LocalPostgres


@pytest.fixture(scope="module")
def postgres():
    server = LocalPostgres()
    yield server
    server.stop()


def _work(tmp_path: Path, tiny_data, **over) -> Path:
    params = tiny_params(**over)
    if "space" in over.get("tune", {}):  # a space replaces the default one, key by key merging would add to it
        params["tune"]["space"] = over["tune"]["space"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    os.symlink(tiny_data.root, tmp_path / "prepared")
    return tmp_path


def _env(storage: str | None = None) -> dict:
    env = {"PGPASSWORD": PASSWORD, "OPTUNA_DISABLE_PROGRESS": "1"}
    if storage:
        env["ISIM_TUNE_STORAGE"] = storage
    return env


def _tune(work: Path, *extra: str, storage: str | None = None, check: bool = True):
    return run([bin_path("isim"), "tune", "--data", "prepared", "--out", "results", *extra], work,
               env=_env(storage), check=check, timeout=900)


_STORAGES: dict = {}


def _study(work: Path, storage: str | None, name: str = "isim") -> optuna.Study:
    key = storage or str(work)
    if key not in _STORAGES:
        if storage is None:
            path = str(work / "tune/optuna.journal")
            _STORAGES[key] = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
        else:
            os.environ["PGPASSWORD"] = PASSWORD
            _STORAGES[key] = optuna.storages.RDBStorage(storage)
    return optuna.load_study(study_name=name, storage=_STORAGES[key])


def _counted(study: optuna.Study) -> list:
    """Trials that use the budget: a failed trial that was rerun counts once, as its rerun."""
    trials = study.get_trials()
    rerun = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return [t for t in trials if not (t.state == TrialState.FAIL and t.number in rerun)]


SHORT = {"tune": {"n_trials": 5, "pruner": "none", "sampler": "random"}}


@pytest.mark.parametrize("backend", ["journal", "postgres"])
def test_two_workers_share_one_budget_and_a_rerun_continues(backend, tmp_path, tiny_data, postgres):
    storage = postgres.create_db("two_workers") if backend == "postgres" else None
    work = _work(tmp_path, tiny_data, **SHORT)
    r = _tune(work, "--workers", "2", storage=storage)
    study = _study(work, storage)
    trials = study.get_trials()
    assert len(trials) == 5 and all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    workers = {t.system_attrs["isim:worker"] for t in trials}
    assert len(workers) == 2, workers  # both processes ran trials
    best = yaml.safe_load((work / "results/best.yaml").read_text())
    assert best["best"]["value"] == pytest.approx(study.best_value)
    assert set(best["best"]["params"]) == {"threshold", "crf_freq", "lr_encoder", "lr_decoder", "lr_classifier"}
    assert len((work / "results/trials.csv").read_text().splitlines()) == 6
    assert {"optimization_history.png", "slice.png"} <= {p.name for p in (work / "results/plots").iterdir()}
    # the password never leaves the environment
    for text in (r.stdout, r.stderr, (work / "results/best.yaml").read_text()):
        assert PASSWORD not in text
    if backend == "postgres":
        return
    # the same command again: the same study, nothing to do; a larger budget adds exactly the difference
    _tune(work, "--workers", "2", storage=storage)
    assert len(_study(work, storage).get_trials()) == 5
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["tune"]["n_trials"] = 7
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    _tune(work, "--workers", "2", storage=storage)
    assert [t.state for t in _study(work, storage).get_trials()] == [TrialState.COMPLETE] * 7
    _dashboard_serves(work / "tune/optuna.journal", "isim")
    # other trial settings under the same study name are refused, naming the key
    params["tune"]["space"]["threshold"]["high"] = 0.3
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    r = _tune(work, storage=storage, check=False)
    assert r.returncode == 2 and "tune.space.threshold.high" in r.stderr, r.stderr


def _dashboard_serves(storage: Path, study_name: str) -> None:
    port = free_port()
    proc = subprocess.Popen([bin_path("optuna-dashboard"), str(storage), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/api/studies"
    try:
        for _ in range(60):
            try:
                with urllib.request.urlopen(base, timeout=2) as r:
                    summaries = json.loads(r.read())["study_summaries"]
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("optuna-dashboard did not answer")
        assert [s["study_name"] for s in summaries] == [study_name]
        with urllib.request.urlopen(f"{base}/{summaries[0]['study_id']}", timeout=10) as r:
            study = json.loads(r.read())
        assert len(study["trials"]) == 7 and study["best_trials"]
    finally:
        proc.terminate()
        proc.wait(10)


LONG = {"train": {"epochs": 10}, "rounds": {"warmup_epochs": 1},
        "tune": {"n_trials": 3, "pruner": "none", "sampler": "random",
                 "space": {"threshold": {"type": "float", "low": 0.1, "high": 0.3},
                           "crf_freq": {"type": "categorical", "choices": [2]}}}}


@pytest.mark.parametrize("backend", ["journal", "postgres"])
def test_a_worker_killed_mid_trial_is_rerun_from_its_last_round(backend, tmp_path, tiny_data, postgres):
    storage = postgres.create_db("killed") if backend == "postgres" else None
    work = _work(tmp_path, tiny_data, **LONG)
    env = {**os.environ, **_env(storage), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    launcher = subprocess.Popen([bin_path("isim"), "tune", "--data", "prepared", "--out", "results", "--workers", "2"],
                                cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    deadline = time.time() + 300
    while killed is None and time.time() < deadline and launcher.poll() is None:
        time.sleep(0.05)
        if storage is None and not (work / "tune/optuna.journal").exists():
            continue
        try:
            study = _study(work, storage)
        except KeyError:  # not created yet
            continue
        for t in study.get_trials(states=(TrialState.RUNNING,)):
            ckpts = work / "tune/work/isim" / f"trial_{t.number:04d}" / "checkpoints"
            if len(list(ckpts.glob("round_*.pt"))) >= 2 and "isim:worker" in t.system_attrs:
                os.kill(int(t.system_attrs["isim:worker"].split(":")[1]), signal.SIGKILL)
                killed = t.number
                break
    out, _ = launcher.communicate(timeout=600)
    assert killed is not None, "no trial reached its second round in time:\n" + out[-3000:]
    assert launcher.returncode == 0, out[-3000:]
    study = _study(work, storage)
    trials = study.get_trials()
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    dead = trials[killed]
    assert dead.state == TrialState.FAIL and "died" in dead.user_attrs["reason"]
    rerun = [t for t in trials if killed in t.system_attrs.get("retry_history", [])]
    assert len(rerun) == 1 and rerun[0].state == TrialState.COMPLETE
    assert rerun[0].params == dead.params
    assert rerun[0].user_attrs["resumed_from"].startswith("round_0")  # not started over
    counted = _counted(study)
    assert len(counted) == 3 and all(t.state == TrialState.COMPLETE for t in counted)


def test_four_workers_log_every_trial_to_one_sqlite_mlflow_store(tmp_path, tiny_data):
    db = tmp_path / "mlflow.db"
    work = _work(tmp_path, tiny_data, tracking={"enabled": True, "uri": f"sqlite:///{db}"},
                 tune={"n_trials": 8, "pruner": "none", "sampler": "random"})
    _tune(work, "--workers", "4")
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("isim")
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.data.tags.get("isim.kind") == "study"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert sorted(int(r.data.tags["trial"]) for r in children) == list(range(8))
    study = _study(work, None)
    for r in children:
        t = study.trials[int(r.data.tags["trial"])]
        assert r.info.status == "FINISHED" and r.data.tags["state"] == "complete"
        assert r.data.metrics["objective"] == pytest.approx(t.value)
        assert {k: float(v) for k, v in r.data.params.items()} == pytest.approx(t.params)
        rounds = client.get_metric_history(r.info.run_id, "holdout_crf_miou")
        assert [m.step for m in rounds] == list(range(1, len(rounds) + 1)) and len(rounds) >= 2
    best = [r for r in children if r.data.tags.get("best") == "true"]
    assert [int(r.data.tags["trial"]) for r in best] == [study.best_trial.number]
    assert parent[0].data.metrics["best_value"] == pytest.approx(study.best_value)
    arts = {a.path for a in client.list_artifacts(parent[0].info.run_id, "study")}
    assert {"study/optimization_history.png", "study/best.yaml"} <= arts


def test_the_pruner_stops_clearly_worse_trials_early(tmp_path, tiny_data):
    # half the trials get a threshold that leaves the holdout masks mostly background
    work = _work(tmp_path, tiny_data, train={"epochs": 6}, rounds={"warmup_epochs": 1}, crf_freq=1,
                 tune={"n_trials": 8, "pruner": "median", "sampler": "random",
                       "space": {"threshold": {"type": "categorical", "choices": [0.15, 0.95]},
                                 "crf_freq": {"type": "categorical", "choices": [1]}}})
    _tune(work)
    trials = _study(work, None).get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.params, t.state, t.intermediate_values) for t in trials]
    assert all(max(t.intermediate_values) < 6 for t in pruned)  # stopped before the last epoch
    assert all(t.params["threshold"] == 0.95 for t in pruned)
    assert "below the median pruner" in pruned[0].user_attrs["reason"]


def test_bad_space_or_storage_fails_before_any_trial(tmp_path, tiny_data):
    work = _work(tmp_path, tiny_data)
    cases = [
        ({"space": {"crf.no_such_key": {"type": "float", "low": 1, "high": 2}}}, None, "tune.space.crf.no_such_key"),
        ({"space": {"threshold": {"type": "float", "low": 0.3, "high": 0.3}}}, None, "tune.space.threshold.high"),
        ({"space": {"lr_encoder": {"type": "log_float", "low": -1, "high": 0.1}}}, None, "tune.space.lr_encoder.low"),
        ({"space": {"threshold": {"type": "float", "low": 0.5, "high": 1.5}}}, None, "tune.space.threshold: 1.5"),
        ({"storage": "postgresql://isim:hunter2@127.0.0.1/x"}, None, "tune.storage: holds a password"),
        ({}, "postgresql://isim:hunter2@127.0.0.1:1/nowhere", "postgresql://isim:***@127.0.0.1:1/nowhere"),
    ]
    for tune, storage, expected in cases:
        params = tiny_params(tune=tune)
        if "space" in tune:
            params["tune"]["space"] = tune["space"]
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        r = _tune(work, storage=storage, check=False)
        assert r.returncode == 2 and expected in r.stderr, (expected, r.stderr[-2000:])
        assert "hunter2" not in r.stderr + r.stdout
        assert not (work / "tune/optuna.journal").exists()  # no study was started


def test_tuned_params_reproduce_the_objective_with_dvc_exp_run(tmp_path_factory):
    params = tiny_params(runtime={"threads": 1}, tune={"n_trials": 2, "pruner": "none", "sampler": "random"})
    repo = dvc_project(tmp_path_factory.mktemp("tunerepo"), params)
    run([bin_path("dvc"), "repro", "prepare"], repo, env=_env())
    run([bin_path("isim"), "tune", "--data", "data/prepared", "--out", "tune/results"], repo, env=_env())
    best = yaml.safe_load((repo / "tune/results/best.yaml").read_text())["best"]
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tuned"], repo)
    run([bin_path("isim"), "tune-apply"], repo)
    metrics = json.loads((repo / "metrics/train_isim.json").read_text())
    assert metrics["final_holdout_crf_miou"] == pytest.approx(best["value"], abs=1e-6), (metrics, best)
    applied = yaml.safe_load((repo / "params.yaml").read_text())
    assert applied["threshold"] == pytest.approx(best["params"]["threshold"])
    assert "evaluate" in run([bin_path("dvc"), "exp", "show", "--json"], repo).stdout


def test_diverging_trials_are_failed_with_their_reason_and_the_study_finishes(tmp_path, tiny_data):
    work = _work(tmp_path, tiny_data, tune={"n_trials": 2, "pruner": "none", "overrides": {
        "lr_encoder": 1e12, "lr_classifier": 1e12}, "space": {"threshold": {"type": "float", "low": 0.1, "high": 0.2}}})
    _tune(work)
    trials = _study(work, None).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    assert all("diverged" in t.user_attrs["reason"] and "loss is" in t.user_attrs["reason"] for t in trials)
    assert yaml.safe_load((work / "results/best.yaml").read_text())["best"] is None
    r = run([bin_path("isim"), "tune-apply", "results/best.yaml"], work, check=False)
    assert r.returncode == 2 and "no complete trial" in r.stderr


def test_the_chain_objective_tunes_the_walk_on_the_mask_set_the_segmenter_would_train_on(tmp_path, tiny_data):
    work = _work(tmp_path, tiny_data, tune={
        "n_trials": 2, "pruner": "none", "sampler": "random", "objective": "chain",
        "space": {"random_walk.beta": {"type": "categorical", "choices": [4.0, 10.0]},
                  "affinity.fg_threshold": {"type": "float", "low": 0.1, "high": 0.3}}})
    _tune(work)
    trials = _study(work, None).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, [t.user_attrs for t in trials]
    for t in trials:
        chain = t.user_attrs["chain"]
        assert set(chain) == {"isim_crf", "rw", "rw_crf"}
        assert t.value == max(chain.values())  # the set the segmenter would choose
        # ISIM's share of the chain is the last round's holdout mIoU the pruner saw
        assert chain["isim_crf"] == t.intermediate_values[max(t.intermediate_values)]
    assert len({t.user_attrs["chain"]["rw"] for t in trials}) == 2  # the walk's knobs changed the walk
    best = yaml.safe_load((work / "results/best.yaml").read_text())
    assert set(best["best"]["params"]) == {"random_walk.beta", "affinity.fg_threshold"}
