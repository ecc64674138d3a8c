"""This project's MLflow records: one parent run per pipeline run, one child run per stage,
with the stages' reports (rounds, evaluation, models); on top of isim.mlflow_session.

- Parent key: the DVC experiment name under ``dvc exp run``, otherwise git commit + a hash of
  params.yaml, so re-running one stage joins the same parent.
- Store: ``MLFLOW_TRACKING_URI`` when set, else ``tracking.uri``, else ``sqlite:///`` at an
  absolute path in the repository (queued experiments run in .dvc/tmp/exps/..., and must log
  to the same place as the workspace).
- Tracking never costs results: if the store is unreachable or a call fails, the stage warns
  once and carries on without tracking (unless ``tracking.strict``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from isim.config import Config, flatten
from isim.errors import IsimError
from isim.mlflow_session import (
    NullSession,
    Session,
    TrackingError,
    git_commit,
    reachable,
    retrying,
    source_tags,
    ui_links,
)
from isim.project import Project

if TYPE_CHECKING:  # types only: stages that log no round do not run these modules
    from isim.evaluation import EvaluationReport
    from isim.mask_scores import MaskSetSummary

log = logging.getLogger(__name__)
KEY_TAG = "isim.pipeline_key"


def _outside_dvc_tmp(path: Path) -> Path:
    """.../repo/.dvc/tmp/exps/<tmp>/... -> .../repo"""
    return Path(*path.parts[:path.parts.index(".dvc")]) if ".dvc" in path.parts else path


def repo_root(start: Path | None = None) -> Path:
    """The user's repository, also from inside a queued experiment's temp copy."""
    env = os.environ.get("DVC_ROOT")
    path = _outside_dvc_tmp(Path(env) if env else (start or Path.cwd()).resolve())
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True,
                             text=True, check=True).stdout.strip()
        return _outside_dvc_tmp(Path(top))
    except (subprocess.CalledProcessError, FileNotFoundError):
        return path


def tracking_uri(cfg: Config) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking.uri
    if uri:
        return uri
    return f"sqlite:///{repo_root() / 'mlflow.db'}"


def pipeline_key(cfg: Config) -> str:
    exp = os.environ.get("DVC_EXP_NAME")
    if exp:
        return f"exp:{exp}"
    params_hash = hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    return f"{git_commit()[:12]}-{params_hash}"


def prepared_root() -> Path | None:
    """The prepared dataset of the project in the working folder (dvc.yaml's ``prepare --out``);
    None outside a project."""
    try:
        return Project().arg("prepare", "--out")
    except IsimError:
        return None


def dataset_hash(root: Path | None) -> str:
    """DVC's recorded hash of the prepared dataset ``root`` (from dvc.lock); outside a DVC run, a
    hash of its label file and split lists (prefixed ``labels:``); "" when there is no dataset."""
    if root is None:
        return ""
    lock = Project().root / "dvc.lock"
    if lock.is_file():
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        for out in stages.get("prepare", {}).get("outs", []):
            if Path(out.get("path", "")) == root:
                return str(out.get("md5", ""))
    files = [root / "image_labels.json", *sorted((root / "ImageSets" / "Segmentation").glob("*.txt"))]
    if not files[0].is_file():
        return ""
    h = hashlib.md5()
    for f in files:
        h.update(f.name.encode() + f.read_bytes())
    return "labels:" + h.hexdigest()


def round_metrics(summary: MaskSetSummary, per_class: bool = True) -> dict[str, float]:
    """A pseudo-label round's figures: mIoU before/after CRF (per class too), holdout mIoU."""
    m: dict[str, float] = {}
    for kind, score in (("raw", summary.raw), ("crf", summary.crf)):
        if score is not None:
            m[f"pseudo_{kind}_miou"] = score.miou
            if per_class:
                m.update({f"pseudo_{kind}_iou.{c}": v for c, v in score.iou.items() if v is not None})
        if summary.holdout is not None:
            m[f"holdout_{kind}_miou"] = summary.holdout.miou(kind)
    return m


class NullTracker(NullSession):
    """Used when tracking is off or unavailable: every call is a no-op."""

    def log_round(self, r: int, round_dir: Path, summary: MaskSetSummary, data: Any) -> None: ...
    def log_evaluation(self, report: EvaluationReport) -> None: ...
    def log_model(self, model: Any, name: str, example: np.ndarray) -> None: ...
    def log_served(self, checkpoint: Path, tags: dict[str, str]) -> None: ...


class Tracker(Session, NullTracker):
    """A stage's child run of the pipeline's parent run, with this project's reports."""

    def __init__(self, client: Any, run_id: str, cfg: Config, parent: str | None = None, uri: str = "",
                 experiment_id: str = ""):
        super().__init__(client, run_id, parent, cfg.tracking.strict)
        self.cfg, self.uri, self.experiment_id = cfg, uri, experiment_id
        self.grid_ids: list[str] | None = None

    def log_round(self, r: int, round_dir: Path, summary: MaskSetSummary, data: Any) -> None:
        m = {"pseudo_bg_only": summary.crf_bg_only, "pseudo_images_per_s": summary.images_per_s,
             **round_metrics(summary)}
        self.log_metrics(m, step=r)
        self.guard("log_image", self._log_grid, r, Path(round_dir), data)

    def _log_grid(self, r: int, round_dir: Path, data: Any) -> None:
        # pictures import the run layout: only when they are logged, so a stage that logs none
        # (prepare) runs no more code than dvc.yaml declares
        from isim.visualize import example_ids, round_grid
        if self.grid_ids is None:
            self.grid_ids = example_ids(data, "train", self.cfg.eval.grid_images)
        self.client.log_image(self.run_id, round_grid(data, self.grid_ids, round_dir),
                              artifact_file=f"rounds/{round_dir.name}.png")

    def log_evaluation(self, report: EvaluationReport) -> None:
        self.log_metrics({k: v for k, v in report.summary.items() if v is not None}, headline=True)
        for name, part in (("baseline", report.baseline), ("isim", report.isim)):
            for i, row in enumerate(part.threshold_sweep):
                self.log_metrics({f"{name}_sweep_miou": row["miou"], f"{name}_sweep_threshold": row["threshold"]},
                                 step=i)
        for r in report.rounds:
            if r.raw is not None and r.crf is not None:
                self.log_metrics({"round_isim_miou": r.raw.miou, "round_isim_crf_miou": r.crf.miou}, step=r.round)
        final = report.rounds[-1].crf if report.rounds else None
        if final is not None and final.confusion is not None:
            from isim.visualize import confusion_figure
            fig = confusion_figure(np.asarray(final.confusion), report.classes)
            self.guard("log_figure", self.client.log_figure, self.run_id, fig, "confusion_isim_final.png")
        self.guard("log_dict", self.client.log_dict, self.run_id, report.to_json(), "eval.json")

    def log_model(self, model: Any, name: str, example: np.ndarray) -> None:
        """The model as a torch.export program (pt2: no pickle) returning its CAM, traced on
        ``example`` (a batch of 2 or more keeps the batch size dynamic); MLflow checks that the
        example serves."""
        def _log() -> None:
            import mlflow
            import mlflow.pytorch
            from mlflow.models import ModelSignature
            from mlflow.types import Schema, TensorSpec

            from isim.models.net import CamOutput
            # an unnamed input: serving reads the example back as an array (a named one as a dict,
            # which the PyTorch flavour refuses); batch and image size stay dynamic
            signature = ModelSignature(Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))]),
                                       Schema([TensorSpec(np.dtype(np.float32), (-1, -1, -1, -1))]))
            with mlflow.start_run(run_id=self.run_id):
                mlflow.pytorch.log_model(CamOutput(model.cpu().eval()), name=name, input_example=example,
                                         signature=signature, serialization_format="pt2", pip_requirements=[])
        self.guard("log_model", _log)

    def log_served(self, checkpoint: Path, tags: dict[str, str]) -> None:
        """The model `isim predict` uses (the final segmenter or an ISIM round) as a pyfunc model
        (isim.serving), registered as ``tracking.registered_model`` with ``tracking.alias`` on
        the new version, which carries ``tags`` (its val mIoU and the other model's)."""
        def _log() -> None:
            import mlflow

            from isim.serving import log_served
            tc = self.cfg.tracking
            with mlflow.start_run(run_id=self.run_id):
                info = log_served(checkpoint, "served_model", tc.registered_model)
            version = info.registered_model_version
            if tc.registered_model and version:
                for k, v in tags.items():
                    self.client.set_model_version_tag(tc.registered_model, version, k, v)
                if tc.alias:
                    self.client.set_registered_model_alias(tc.registered_model, tc.alias, version)
                log.info("registered %s (%s) as %s version %s%s", checkpoint, tags.get("model", ""),
                         tc.registered_model, version, f" @{tc.alias}" if tc.alias else "")
        self.guard("log_served", _log)


def experiment(cfg: Config, uri: str) -> tuple[Any, str]:
    """Client and experiment id; the experiment is made as a model-training one (MLflow 3 opens
    other experiments on its GenAI overview)."""
    import mlflow
    from mlflow.tracking import MlflowClient
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = retrying(client.get_experiment_by_name, cfg.tracking.experiment)
    if exp is not None:
        if "mlflow.experimentKind" not in exp.tags:  # made by an older version of this project
            retrying(client.set_experiment_tag, exp.experiment_id, "mlflow.experimentKind", "custom_model_development")
        return client, exp.experiment_id
    try:
        exp_id = retrying(client.create_experiment, cfg.tracking.experiment,
                          tags={"mlflow.experimentKind": "custom_model_development"})
    except Exception:  # another process created it first
        exp = retrying(client.get_experiment_by_name, cfg.tracking.experiment)
        if exp is None:
            raise
        exp_id = exp.experiment_id
    return client, exp_id


def _start(cfg: Config, stage: str) -> Tracker | NullTracker:
    if not cfg.tracking.enabled or os.environ.get("RANK", "0") != "0":  # rank 0 alone records a torchrun run
        return NullTracker()
    uri = tracking_uri(cfg)
    if not reachable(uri):
        msg = f"MLflow tracking server {uri} is unreachable"
        if cfg.tracking.strict:
            raise TrackingError(msg + " (tracking.strict is true)")
        log.warning("%s; stage %s runs without tracking", msg, stage)
        return NullTracker()
    try:
        client, exp_id = experiment(cfg, uri)
        key = pipeline_key(cfg)
        found = retrying(client.search_runs, [exp_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=1)
        data_root = prepared_root()
        data_hash = dataset_hash(data_root)
        tags = {"git_commit": git_commit(), "dataset_hash": data_hash}
        if found:
            parent = found[0].info.run_id
            retrying(client.update_run, parent, status="RUNNING")  # the pipeline runs again
        else:
            parent = retrying(client.create_run, exp_id, run_name=os.environ.get("DVC_EXP_NAME") or f"pipeline-{key}",
                              tags={KEY_TAG: key, "isim.kind": "pipeline", **source_tags("dvc.yaml"),
                                    **tags}).info.run_id
            params = {k: json.dumps(v) if isinstance(v, (list, dict)) else v
                      for k, v in flatten(cfg.to_dict()).items()}
            from mlflow.entities import Param
            retrying(client.log_batch, parent, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        child = retrying(client.create_run, exp_id, run_name=stage, tags={
            "mlflow.parentRunId": parent, "dvc_stage": stage, "isim.kind": "stage",
            **source_tags(f"dvc.yaml:{stage}"), **tags}).info.run_id
        if data_hash:
            assert data_root is not None  # a hash comes from a dataset
            log_dataset(client, [child] if found else [parent, child], data_hash, data_root)
        return Tracker(client, child, cfg, parent, uri, exp_id)
    except Exception as e:  # noqa: BLE001
        if cfg.tracking.strict:
            raise TrackingError(f"tracking.strict: could not start a run at {uri}: {e}") from e
        log.warning("MLflow at %s unusable (%s: %s); stage %s runs without tracking", uri,
                    type(e).__name__, e, stage)
        return NullTracker()


def log_dataset(client: Any, run_ids: list[str], digest: str, root: Path) -> None:
    """The prepared dataset ``root`` as the runs' input: name + DVC hash (MLflow's Dataset column)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    ds = DatasetInput(Dataset(name="prepared", digest=digest[:36], source_type="dvc", source=json.dumps(
        {"path": str(root), "dvc_hash": digest})), tags=[InputTag("mlflow.data.context", "training")])
    for run_id in run_ids:
        retrying(client.log_inputs, run_id, datasets=[ds])


@contextmanager
def stage_run(cfg: Config, stage: str) -> Iterator[Tracker | NullTracker]:
    """A stage's child run. The pipeline's parent run ends with each stage too: FINISHED after a
    stage that succeeded (the next stage sets it RUNNING again), FAILED naming the stage that
    failed, so no run is left RUNNING once `dvc repro` has stopped."""
    tracker = _start(cfg, stage)
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    finally:
        if isinstance(tracker, Tracker):
            try:
                retrying(tracker.client.set_terminated, tracker.run_id, status=status)
                if tracker.parent:
                    if status == "FAILED":
                        retrying(tracker.client.set_tag, tracker.parent, "failed_stage", stage)
                    elif "failed_stage" in retrying(tracker.client.get_run, tracker.parent).data.tags:
                        # a stage that failed before has run again: no tag at all, not an empty one
                        retrying(tracker.client.delete_tag, tracker.parent, "failed_stage")
                    retrying(tracker.client.set_terminated, tracker.parent, status=status)
                # the last stage's line is the last thing `dvc repro` prints: where to look
                log.info("MLflow: runs table %s", ui_links(tracker.uri, tracker.experiment_id,
                                                             tracker.parent or tracker.run_id))
            except Exception as e:  # noqa: BLE001
                log.warning("MLflow could not close run %s: %s", tracker.run_id, e)


__all__ = ["stage_run", "tracking_uri", "repo_root", "pipeline_key", "NullTracker", "Tracker", "retrying",
           "experiment", "reachable", "source_tags", "log_dataset", "dataset_hash", "round_metrics"]
