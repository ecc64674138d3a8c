"""Opening a study: storage, sampler, pruner, and the check that a study named in params.yaml
is the one these params describe (re-running the same command continues it; other trial
settings under the same name would mix incomparable trials, and are refused)."""
from __future__ import annotations

import json
import logging
import warnings
from typing import Any

import optuna

from isim.config import Config, flatten
from isim.tuning import space
from isim.tuning.storage import TuneError, budget_lock, open_storage, redact, url_of

log = logging.getLogger(__name__)
SETTINGS_ATTR = "isim:settings"
# tune keys that may change between runs of one study (budget and where it runs)
_FREE = {"n_trials", "timeout_s", "workers", "retries", "heartbeat_s", "storage", "study"}


def settings(cfg: Config) -> dict[str, Any]:
    """What makes two trials comparable: everything but where and how long the study runs."""
    raw = cfg.to_dict()
    for k in ("runtime", "tracking"):
        raw.pop(k)
    raw["tune"] = {k: v for k, v in raw["tune"].items() if k not in _FREE}
    return flatten(raw)


def sampler(cfg: Config, worker: int) -> optuna.samplers.BaseSampler:
    seed = cfg.tune.seed + worker  # workers must not propose the same points
    if cfg.tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.tune.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=cfg.tune.seed, scramble=True)  # one shared sequence
    # constant_liar: running trials count as bad guesses, so parallel workers spread out
    return optuna.samplers.TPESampler(seed=seed, constant_liar=cfg.tune.workers > 1)


def pruner(cfg: Config) -> optuna.pruners.BasePruner:
    p = cfg.tune.pruner
    if p == "none":
        return optuna.pruners.NopPruner()
    if p == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=cfg.rounds.warmup_epochs + 1, max_resource="auto")
    if p == "wilcoxon":
        with warnings.catch_warnings():  # "experimental" in Optuna 5: a note, not a problem
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=0.1)
    # pruning starts once a few trials have finished (fewer for small budgets)
    return optuna.pruners.MedianPruner(n_startup_trials=max(2, min(5, cfg.tune.n_trials // 4)))


def open_study(cfg: Config, worker: int = 0) -> tuple[optuna.Study, Any, str]:
    """(study, storage, url): created on first use, continued after; checked before any trial."""
    space.check(cfg)
    url = url_of(cfg.tune)
    storage = open_storage(url, cfg.tune)
    name = cfg.tune.study
    with budget_lock(url, storage, name):
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                    sampler=sampler(cfg, worker), pruner=pruner(cfg), load_if_exists=True)
        mine = settings(cfg)
        theirs = study.user_attrs.get(SETTINGS_ATTR)
        if theirs is None:
            study.set_user_attr(SETTINGS_ATTR, mine)
            study.set_user_attr("isim:storage", redact(url))
        else:
            diff = sorted(k for k in set(mine) | set(theirs) if json.dumps(mine.get(k)) != json.dumps(theirs.get(k)))
            if diff:
                shown = ", ".join(f"{k} ({theirs.get(k)!r} -> {mine.get(k)!r})" for k in diff[:5])
                raise TuneError(f"study {name!r} in {redact(url)} was run with other trial settings: {shown}"
                                f"{' ...' if len(diff) > 5 else ''}; name a new study (tune.study) to tune these")
    return study, storage, url


__all__ = ["open_study", "settings", "sampler", "pruner"]
