"""MLflow for an Optuna study: one parent run per study, a child run per trial (the generic
MLflow session, isim.mlflow_session, underneath; public calls only)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import optuna

from isim.config import Config
from isim.mask_scores import MaskSetSummary
from isim.mlflow_session import Session, TrackingError, reachable, retrying, source_tags
from isim.tracking import dataset_hash, experiment, log_dataset, round_metrics, tracking_uri
from isim.tuning.storage import budget_lock, redact

log = logging.getLogger(__name__)

STUDY_TAG = "isim.study"


class TrialRun:
    """A trial's child run: its params, holdout mIoU per round (step = round), final state."""

    def __init__(self, tracker: Session):
        self.t = tracker

    def round(self, r: int, summary: MaskSetSummary) -> None:
        self.t.log_metrics(round_metrics(summary, per_class=False), step=r)

    def chain(self, scores: dict[str, float]) -> None:
        """The holdout mIoU of each mask set the segmenter chooses from (``tune.objective: chain``)."""
        self.t.log_metrics({f"holdout_{k}_miou": v for k, v in scores.items()})

    def end(self, state: str, reason: str, value: float | None, seconds: float) -> None:
        self.t.log_metrics({"seconds": seconds, **({"objective": value} if value is not None else {})})
        tags = {"state": state.lower(), **({"reason": reason[:5000]} if reason else {})}
        for k, v in tags.items():
            self.t.guard("set_tag", self.t.client.set_tag, self.t.run_id, k, v)
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED")
        self.t.guard("set_terminated", self.t.client.set_terminated, self.t.run_id, status)


class StudyTracker:
    """MLflow for an Optuna study: one parent run per study, a child run per trial.

    The parent's id is kept in the study itself, so every worker on every machine logs under
    the same parent. SQLite stores are retried while locked (``retrying``) rather than dropped.
    """

    def __init__(self, cfg: Config, client: Any, exp_id: str, parent: str):
        self.cfg, self.client, self.exp_id, self.parent = cfg, client, exp_id, parent

    @classmethod
    def open(cls, cfg: Config, study_name: str, parent: str | None, storage_label: str,
             data_dir: Path | None = None) -> StudyTracker | None:
        """Attach to the study's parent run, or create it when ``parent`` is None."""
        if not cfg.tracking.enabled:
            return None
        uri = tracking_uri(cfg)
        try:
            if not reachable(uri):
                raise TrackingError(f"MLflow tracking server {uri} is unreachable")
            client, exp_id = experiment(cfg, uri)
            if parent is None:
                from mlflow.entities import Param
                data_hash = dataset_hash(data_dir)
                parent = retrying(client.create_run, exp_id, run_name=f"tune-{study_name}", tags={
                    STUDY_TAG: study_name, "isim.kind": "study", "optuna.storage": storage_label,
                    **source_tags("isim tune"), "dataset_hash": data_hash}).info.run_id
                space = {f"space.{k}": json.dumps(v.model_dump(exclude_defaults=True))
                         for k, v in cfg.tune.space.items()}
                plain = {f"tune.{k}": v for k, v in cfg.tune.model_dump(mode="json").items()
                         if k not in ("space", "storage")}
                params = {**plain, **space}
                retrying(client.log_batch, parent, params=[Param(k, json.dumps(v) if not isinstance(v, str) else v)
                                                            for k, v in params.items()])
                if data_hash and data_dir is not None:
                    log_dataset(client, [parent], data_hash, data_dir)
            return cls(cfg, client, exp_id, parent)
        except Exception as e:  # noqa: BLE001
            if cfg.tracking.strict:
                raise TrackingError(f"tracking.strict: study run at {uri}: {e}") from e
            log.warning("MLflow at %s unusable (%s: %s); the study runs without tracking", uri,
                        type(e).__name__, e)
            return None

    def trial(self, number: int, values: dict[str, Any], retry_of: list[int]) -> TrialRun:
        from mlflow.entities import Param
        tags = {"mlflow.parentRunId": self.parent, "isim.kind": "trial", "trial": str(number),
                **({"retry_of": str(retry_of[-1])} if retry_of else {})}
        run_id = retrying(self.client.create_run, self.exp_id, run_name=f"trial-{number:04d}", tags=tags).info.run_id
        t = Session(self.client, run_id, strict=self.cfg.tracking.strict)
        t.guard("log_params", self.client.log_batch, run_id,
                 params=[Param(k, str(v)) for k, v in values.items()])
        return TrialRun(t)

    def finish(self, best: dict | None, counts: dict[str, int], figures: dict[str, Any], files: list[Path]) -> None:
        """Best trial tagged (on the child and the parent), counts and best value as metrics,
        study pictures and result files as artifacts; the parent run is closed."""
        t = Session(self.client, self.parent, strict=self.cfg.tracking.strict)
        t.log_metrics({f"trials_{k}": v for k, v in counts.items()})
        if best is not None:
            t.log_metrics({"best_value": best["value"]})
            t.guard("set_tag", self.client.set_tag, self.parent, "best_trial", str(best["trial"]))
            runs = retrying(self.client.search_runs, [self.exp_id], filter_string=(
                f"tags.`mlflow.parentRunId` = '{self.parent}' and tags.trial = '{best['trial']}'"))
            for r in runs:
                t.guard("set_tag", self.client.set_tag, r.info.run_id, "best", "true")
        for name, fig in figures.items():
            t.guard("log_figure", self.client.log_figure, self.parent, fig, f"study/{name}.png")
        for f in files:
            t.guard("log_artifact", self.client.log_artifact, self.parent, str(f), "study")
        t.guard("set_terminated", self.client.set_terminated, self.parent, "FINISHED")


PARENT_ATTR = "isim:mlflow_parent"  # the study attribute that names its MLflow parent run


def open_tracker(cfg: Config, study: optuna.Study, storage: Any, url: str, data_dir: Path | None = None
                 ) -> StudyTracker | None:
    """The study's MLflow parent run: made once (under the budget lock, with ``data_dir`` as its
    input dataset), found by every worker."""
    with budget_lock(url, storage, study.study_name):
        parent = study.user_attrs.get(PARENT_ATTR)
        tracker = StudyTracker.open(cfg, study.study_name, parent, redact(url), data_dir)
        if tracker is not None and parent is None:
            study.set_user_attr(PARENT_ATTR, tracker.parent)
    return tracker
