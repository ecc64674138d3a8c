"""A study's outcome as files (the ``tune`` stage's DVC outputs): the best params, every
trial, and the study's pictures."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from isim.io import write_csv, write_text
from isim.tuning.worker import REASON_ATTR

log = logging.getLogger(__name__)


def counts(study: optuna.Study) -> dict[str, int]:
    out = {s.name.lower(): 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                        TrialState.RUNNING, TrialState.WAITING)}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name.lower()] += 1
    return out


def best(study: optuna.Study) -> dict[str, Any] | None:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    b = study.best_trial
    return {"trial": b.number, "value": b.value, "params": dict(b.params)}


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    keys = sorted({k for t in study.get_trials(deepcopy=False) for k in t.params})
    rows = []
    for t in study.get_trials(deepcopy=False):
        last = max(t.intermediate_values, default=None)
        rows.append({
            "trial": t.number, "state": t.state.name.lower(),
            "value": "" if t.value is None else round(t.value, 4),
            "last_step": "" if last is None else last,
            "seconds": round(t.duration.total_seconds(), 2) if t.duration else "",
            **{k: t.params.get(k, "") for k in keys},
            "retry_of": (t.system_attrs.get("retry_history") or [""])[-1],
            "reason": t.user_attrs.get(REASON_ATTR, ""),
        })
    return rows


def figures(study: optuna.Study) -> dict[str, Any]:
    """Optimisation history, parameter importances, parallel coordinates, slices (matplotlib);
    a picture that needs more finished trials than there are is left out with a note."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis
    out: dict[str, Any] = {}
    for name, fn in (("optimization_history", vis.plot_optimization_history),
                     ("param_importances", vis.plot_param_importances),
                     ("parallel_coordinate", vis.plot_parallel_coordinate),
                     ("slice", vis.plot_slice), ("intermediate_values", vis.plot_intermediate_values)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" and tight_layout notes, not problems
                fn(study)
                fig = plt.gcf()
                fig.set_size_inches(max(fig.get_size_inches()[0], 8), 5)
                fig.tight_layout()
            out[name] = fig
        except Exception as e:  # noqa: BLE001 - e.g. importances need 2+ complete trials
            log.info("study picture %s left out: %s", name, e)
            plt.close("all")
    return out


def write(study: optuna.Study, out: Path, storage_label: str,
          overrides: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, int], dict[str, Any]]:
    """best.yaml, trials.csv and plots/*.png under ``out``; returns (best, counts, pictures)."""
    b, n = best(study), counts(study)
    doc = {"study": study.study_name, "storage": storage_label, "counts": n,
           "best": b, "trial_overrides": overrides,
           "apply": "isim tune-apply " + str(out / "best.yaml")}
    write_text(out / "best.yaml", yaml.safe_dump(doc, sort_keys=False))
    rows = trial_rows(study)
    if rows:
        write_csv(out / "trials.csv", rows)
    else:
        write_text(out / "trials.csv", "trial,state,value\n")
    figs = figures(study)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for name, fig in figs.items():
        tmp = out / "plots" / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=90)
        tmp.replace(out / "plots" / f"{name}.png")
    return b, n, figs


__all__ = ["write", "best", "counts", "trial_rows", "figures"]
