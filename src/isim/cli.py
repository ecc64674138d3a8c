"""`isim <command>`: argument parsing only. Each pipeline command runs one stage module
(``isim.stages``); dvc.yaml's ``cmd`` lines give every path."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from isim import config as config_mod
from isim.errors import IsimError


def _stage(name: str):
    import importlib
    return importlib.import_module(f"isim.stages.{name}")


def _check(a: argparse.Namespace, cfg: config_mod.Config) -> None:
    _stage("check").run(cfg, a.out)


def _prepare(a: argparse.Namespace, cfg: config_mod.Config) -> None:
    _stage("prepare").run(cfg, a.out)


def _launched_elsewhere(a: argparse.Namespace, cfg: config_mod.Config) -> bool:
    """Several processes asked for (--nproc, runtime.nproc/nnodes) and not yet under torchrun:
    run this same command under torchrun and report its outcome."""
    from isim import distributed
    nproc = cfg.runtime.nproc if a.nproc is None else a.nproc
    if (nproc == 1 and cfg.runtime.nnodes == 1) or distributed.launched():
        return False
    from isim.launch import torchrun
    rc = torchrun(a.argv, cfg.runtime, nproc)
    if rc:
        raise IsimError(f"torchrun ended with status {rc} (the failing rank's error is above)")
    return True


def _train_baseline(a: argparse.Namespace, cfg: config_mod.Config) -> None:
    if _launched_elsewhere(a, cfg):
        return
    _stage("train_baseline").run(cfg, a.data, a.checkpoint, a.metrics, a.plots, a.recovery)


def _train_isim(a: argparse.Namespace, cfg: config_mod.Config) -> None:
    if _launched_elsewhere(a, cfg):
        return
    _stage("train_isim").run(cfg, a.data, a.checkpoints, a.pseudo, a.metrics, a.plots, a.resume, a.recovery)


def _pseudo(a: argparse.Namespace, cfg: config_mod.Config) -> None:
    if _launched_elsewhere(a, cfg):
        return
    _stage("pseudo").run(cfg, a.checkpoint, a.data, a.split, a.out, a.stage_name)


def _affinity_labels(a: argparse.Namespace, cfg: config_mod.Config) -> None:
    _stage("affinity_labels").run(cfg, a.data, a.isim_checkpoints, a.isim_pseudo, a.out)


def _train_affinity(a: argparse.Namespace, cfg: config_mod.Config) -> None:
    if _launched_elsewhere(a, cfg):
        return
    _stage("train_affinity").run(cfg, a.data, a.labels, a.checkpoint, a.metrics, a.plots, a.recovery)


def _random_walk(a: argparse.Namespace, cfg: config_mod.Config) -> None:
    _stage("random_walk").run(cfg, a.data, a.isim_checkpoints, a.isim_pseudo, a.affinity_checkpoint, a.out)


def _train_segmenter(a: argparse.Namespace, cfg: config_mod.Config) -> None:
    if (a.masks is None) == (a.isim_pseudo is None or a.rw_pseudo is None):
        raise IsimError("train-segmenter: give --masks DIR, or --isim-pseudo and --rw-pseudo to choose the best set")
    if _launched_elsewhere(a, cfg):
        return
    _stage("train_segmenter").run(cfg, a.data, a.checkpoint, a.metrics, a.plots, masks=a.masks,
                                  isim_pseudo=a.isim_pseudo, rw_pseudo=a.rw_pseudo, recovery_dir=a.recovery,
                                  isim_checkpoints=a.isim_checkpoints)


def _evaluate_segmenter(a: argparse.Namespace, cfg: config_mod.Config) -> None:
    _stage("evaluate_segmenter").run(cfg, a.data, a.checkpoint, a.metrics, a.report, a.isim_checkpoints,
                                     a.isim_pseudo, a.best)


def _headline(a: argparse.Namespace, cfg: config_mod.Config) -> None:
    _stage("headline").run(cfg, a.eval, a.segmenter, a.times, a.out)


def _evaluate(a: argparse.Namespace, cfg: config_mod.Config) -> None:
    _stage("evaluate").run(cfg, a.data, a.baseline_checkpoint, a.baseline_pseudo, a.isim_checkpoints,
                           a.isim_pseudo, a.metrics, a.report, a.plots, a.rw_pseudo, a.figure)


def _tune(a: argparse.Namespace, cfg: config_mod.Config) -> None:
    from isim.tuning import command
    command.run(cfg, a.params, a.data, a.out, a.workdir, a.workers, a.worker)


def _tune_apply(a: argparse.Namespace) -> None:
    from isim.tuning.apply import apply
    rc = apply(a.best, a.name, a.queue, a.dry_run)
    if rc:
        raise SystemExit(rc)


def _project_models() -> tuple[Path, Path, Path]:
    """The final segmenter, ISIM's round checkpoints and the model choice, where dvc.yaml puts them."""
    from isim.project import Project
    p = Project()
    return (p.arg("train_segmenter", "--checkpoint"), p.arg("train_isim", "--checkpoints"),
            p.arg("evaluate_segmenter", "--best"))


def _predict(a: argparse.Namespace) -> None:
    from isim.inference import latest_checkpoint, predict
    from isim.runtime import resolve_device
    ck, why = (a.checkpoint, "--checkpoint") if a.checkpoint else latest_checkpoint(*_project_models())
    print(f"model: {ck} ({why})")
    report = predict(ck, a.paths, a.out, crf=a.crf, device=resolve_device(a.device), max_pixels=a.max_pixels,
                     batch_size=a.batch_size, workers=a.workers)
    print(f"{len(report['images'])} images segmented into {a.out} with {ck}; {len(report['skipped'])} skipped"
          + "".join(f"\n  skipped {p}: {why}" for p, why in report["skipped"].items()))


def _imagenet_cam(a: argparse.Namespace) -> None:
    from isim.data.prepared import Prepared
    from isim.imagenet_cam import anchor
    from isim.io import write_json
    from isim.runtime import resolve_device
    report = anchor(Prepared.open(a.data), a.split, a.threshold, device=resolve_device(a.device))
    write_json(a.out, report)
    print(f"ImageNet-only CAM IoU on {a.split} ({a.out}): "
          + (", ".join(f"{k} {v:.2f} ({report['images'][k]} photos)" for k, v in report["iou"].items())
             or "no class with an ImageNet counterpart"))


def _export_voc(a: argparse.Namespace) -> None:
    from isim.inference import export_voc, latest_checkpoint
    from isim.runtime import resolve_device
    ck = a.checkpoint or latest_checkpoint(*_project_models())[0]
    archive = export_voc(ck, a.voc_root, a.out, a.split, a.comp, crf=a.crf, device=resolve_device(a.device),
                         batch_size=a.batch_size, workers=a.workers)
    print(f"{archive}: predictions of {a.voc_root}/ImageSets/Segmentation/{a.split}.txt by {ck}, ready to upload "
          "to the PASCAL VOC evaluation server")


def _paper(a: argparse.Namespace) -> None:
    from isim.paper import reproduce
    if a.seeds < 1 or a.jobs < 1:
        raise config_mod.ConfigError("isim paper: --seeds and --jobs must be at least 1")
    config_mod.load(a.params)  # a bad params file stops here, before any run
    print(reproduce.run(a.params, a.table, a.seeds, a.jobs, a.workdir, a.out, config_mod.parse_sets(a.set)))


def _params(a: argparse.Namespace) -> None:
    config_mod.apply_preset(a.params, a.preset)
    print(f"{a.params}: {a.preset} applied and validated")


def _ui(a: argparse.Namespace, cfg: config_mod.Config) -> None:
    """MLflow's UI on this project's runs, sized for a laptop: one web worker and no job runner
    (``mlflow ui`` starts four workers and seven job consumers), opening on model training."""
    from isim.tracking import tracking_uri
    uri = tracking_uri(cfg)
    if uri.startswith(("http://", "https://")):
        print(f"runs are tracked on the server {uri}: open {uri}/#/experiments?workflowType=machine_learning")
        return
    cmd = [sys.executable, "-m", "mlflow", "ui", "--app-name", "isim", "--workers", "1",
           "--backend-store-uri", uri, "--host", a.host, "--port", str(a.port)]
    print(f"MLflow UI on {uri}: http://{a.host}:{a.port} (Ctrl-C stops it)", flush=True)
    os.execve(sys.executable, cmd, {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})


def _schema(a: argparse.Namespace) -> None:
    text = config_mod.schema()
    if a.out:
        from isim.io import write_text
        write_text(a.out, text)
    else:
        sys.stdout.write(text)


def _batching(s: argparse.ArgumentParser) -> None:
    s.add_argument("--batch-size", type=int, default=8, help="equal-size images per forward pass (default 8)")
    s.add_argument("--workers", type=int, default=2,
                   help="processes for CRF and PNG/JPEG encoding while the model runs (0: none; default 2)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="isim", description=__doc__)
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (default: params.yaml)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def cmd(name: str, func, help: str, **paths: str) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help)
        for flag, what in paths.items():
            s.add_argument(f"--{flag.replace('_', '-')}", type=Path, required=True, help=what)
        s.set_defaults(func=func)
        return s

    cmd("check", _check, "validate params.yaml (the first stage: nothing is deleted for a typo)",
        out="marker file written when params.yaml is valid")
    cmd("prepare", _prepare, "build the dataset in VOC layout (synthetic, VOC+SBD or own data)",
        out="prepared dataset folder")
    nproc_help = "processes on this node, under torchrun (default: runtime.nproc)"

    def trained(s: argparse.ArgumentParser) -> None:
        s.add_argument("--nproc", type=int, help=nproc_help)
        s.add_argument("--recovery", type=Path, help="recovery folder outside the outputs: a killed run continues "
                                                     "from its last finished epoch when run again")
    s = cmd("train-baseline", _train_baseline, "train the CAM baseline (classification only)",
            data="prepared dataset", checkpoint="checkpoint file to write", metrics="metrics JSON",
            plots="losses per epoch (CSV)")
    trained(s)
    s = cmd("train-isim", _train_isim, "train ISIM with its pseudo-label rounds (Algorithm 1)",
            data="prepared dataset", checkpoints="folder for round_XX.pt", pseudo="folder for round_XX/",
            metrics="metrics JSON", plots="losses per epoch (CSV)")
    s.add_argument("--resume", type=Path, help="continue from a round checkpoint (optimizer, LR schedule "
                                               "and round counter included)")
    trained(s)
    s = cmd("pseudo", _pseudo, "pseudo labels (CAM + threshold + CRF) from a checkpoint",
            checkpoint="model checkpoint", data="prepared dataset", out="output folder ({raw,crf}/, summary.json)")
    s.add_argument("--split", default="train")
    s.add_argument("--stage-name", default="pseudo", help="name of the MLflow run")
    s.add_argument("--nproc", type=int, help=nproc_help)
    final_model = "ISIM round checkpoints (cam.keep false: the last one computes the CAMs)"
    kept_cams = "ISIM rounds (cam.keep: the CAMs the last round kept are read)"
    cmd("affinity-labels", _affinity_labels, "affinity labels: confident CAM regions of the final ISIM model",
        data="prepared dataset", isim_checkpoints=final_model, isim_pseudo=kept_cams,
        out="output folder (<id>.png, summary.json)")
    s = cmd("train-affinity", _train_affinity, "train AffinityNet on the affinity labels",
            data="prepared dataset", labels="affinity labels folder", checkpoint="checkpoint file to write",
            metrics="metrics JSON", plots="losses per epoch (CSV)")
    trained(s)
    cmd("random-walk", _random_walk, "pseudo labels: ISIM CAMs walked over AffinityNet's affinities + CRF",
        data="prepared dataset", isim_checkpoints=final_model, isim_pseudo=kept_cams,
        affinity_checkpoint="AffinityNet checkpoint", out="output folder ({raw,crf}/, summary.json)")
    s = cmd("train-segmenter", _train_segmenter, "train the final DeepLab model on the best pseudo masks",
            data="prepared dataset", checkpoint="checkpoint file to write", metrics="metrics JSON",
            plots="losses per epoch (CSV)")
    s.add_argument("--isim-pseudo", type=Path, help="ISIM round pseudo labels (candidate: the last round's CRF masks)")
    s.add_argument("--rw-pseudo", type=Path, help="random-walk pseudo labels (candidates: raw/ and crf/)")
    s.add_argument("--isim-checkpoints", type=Path, help="ISIM round checkpoints (segmenter.init: isim starts "
                                                         "from the final one's encoder)")
    s.add_argument("--masks", type=Path, help="train on this folder of <id>.png masks instead (e.g. the ground "
                                              "truth, data/prepared/SegmentationClass: the fully supervised ceiling)")
    trained(s)
    s = cmd("evaluate-segmenter", _evaluate_segmenter,
            "the final model's mIoU on val (multi-scale + flip, optional CRF) beside the best ISIM round's",
            data="prepared dataset", checkpoint="segmenter checkpoint", metrics="metrics JSON",
            report="full report JSON (per-class IoU, confusion)")
    s.add_argument("--isim-checkpoints", type=Path, help="ISIM round checkpoints (the best round is compared)")
    s.add_argument("--isim-pseudo", type=Path, help="ISIM round pseudo labels (their holdout scores pick the round)")
    s.add_argument("--best", type=Path, help="write the better model here: what `isim predict` uses by default")
    s = cmd("evaluate", _evaluate, "CAM baseline vs ISIM: pseudo-mask mIoU per round, sweeps, accuracy",
        data="prepared dataset", baseline_checkpoint="baseline checkpoint", baseline_pseudo="baseline pseudo labels",
        isim_checkpoints="ISIM round checkpoints", isim_pseudo="ISIM round pseudo labels", metrics="metrics JSON",
        report="full report JSON (per-class IoU, confusion)", plots="folder for rounds.csv and thresholds.csv")
    s.add_argument("--rw-pseudo", type=Path, help="random-walk pseudo labels (adds the ISIM+RW rows)")
    s.add_argument("--figure", type=Path, help="paper Fig. 5: images, ground truth, the masks of every round (JPEG)")
    s = cmd("headline", _headline, "the run in one line: CAM, ISIM, the walk, the final model, minutes",
            eval="evaluate's metrics JSON", segmenter="evaluate-segmenter's metrics JSON",
            out="headline metrics JSON (what dvc exp show compares)")
    s.add_argument("--times", type=Path, nargs="*", default=[],
                   help="JSON files whose top-level 'seconds' add up to the run's minutes")
    s = cmd("tune", _tune, "Optuna study over tune.space (README \"Tuning\")", data="prepared dataset",
            out="folder for best.yaml, trials.csv, plots/")
    s.add_argument("--workers", type=int, help="worker processes on this host (default: tune.workers)")
    s.add_argument("--workdir", type=Path, default=Path("tune/work"),
                   help="per-trial checkpoints, kept until the trial ends (default: tune/work)")
    s.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the launcher
    s = sub.add_parser("tune-apply", help="run the study's best params as a DVC experiment (dvc exp run -S ...)")
    s.add_argument("best", type=Path, nargs="?", default=Path("tune/results/best.yaml"))
    s.add_argument("--name", help="experiment name (default: <study>-trial-<n>)")
    s.add_argument("--queue", action="store_true", help="queue it (dvc queue start runs it)")
    s.add_argument("--dry-run", action="store_true", help="print the command only")
    s.set_defaults(func=_tune_apply, no_config=True)
    s = sub.add_parser("predict", help="segment new images: palette masks + overlays (README \"Predict\")")
    s.add_argument("paths", type=Path, nargs="+", help="image files, folders, or .txt lists of images")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.add_argument("--checkpoint", type=Path,
                   help="default: the better of the final segmenter and the best ISIM round on val "
                        "(reports/best_model.json of the last dvc repro), else checkpoints/segmenter.pt")
    s.add_argument("--crf", action="store_true", help="refine the masks with dense CRF (checkpoint's crf values)")
    s.add_argument("--max-pixels", type=int, default=40_000_000,
                   help="skip (and report) larger images; 0 = no limit (default: 40 megapixels)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    _batching(s)
    s.set_defaults(func=_predict, no_config=True)
    s = sub.add_parser("imagenet-cam", help="the anchor: IoU of the ImageNet classifier's own CAM (no training on "
                                             "the photos) for classes with an ImageNet counterpart")
    s.add_argument("--data", type=Path, required=True, help="prepared dataset")
    s.add_argument("--out", type=Path, required=True, help="report JSON")
    s.add_argument("--split", default="train")
    s.add_argument("--threshold", type=float, default=0.3, help="foreground above this share of the map's maximum")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    s.set_defaults(func=_imagenet_cam, no_config=True)
    s = sub.add_parser("export-voc", help="VOC test-set predictions packed for the evaluation server")
    s.add_argument("--voc-root", type=Path, required=True, help=".../VOCdevkit/VOC2012 holding the split's images")
    s.add_argument("--out", type=Path, required=True, help="output folder (results/ and results.tar.gz)")
    s.add_argument("--split", default="test", help="ImageSets/Segmentation/<split>.txt (default: test)")
    s.add_argument("--comp", default="comp6", choices=["comp5", "comp6"],
                   help="comp6: trained on more than VOC's own data (SBD); comp5: VOC only")
    s.add_argument("--checkpoint", type=Path, help="default: checkpoints/segmenter.pt")
    s.add_argument("--crf", action="store_true", help="refine the masks with dense CRF")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    _batching(s)
    s.set_defaults(func=_export_voc, no_config=True)
    s = sub.add_parser("paper", help="run a paper table's experiments over seeds; ours beside the paper's numbers")
    s.add_argument("table", help="table2 | table3 | table4 | table5 | table6 | table7 | fig4 | seeds")
    s.add_argument("--seeds", type=int, default=1, help="seeds 0..K-1: data and initialisation (default: 1)")
    s.add_argument("--jobs", type=int, default=1, help="runs at a time, the cores split between them (default: 1)")
    s.add_argument("--workdir", type=Path, default=Path(".isim/paper"),
                   help="one folder per run, reused by every table that needs it (default: .isim/paper)")
    s.add_argument("--out", type=Path, default=Path("reports/paper"), help="where <table>.md/.png/.json go")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param for every run, as dvc exp run -S does (repeatable)")
    s.set_defaults(func=_paper, no_config=True)
    s = sub.add_parser("params", help="apply a preset (e.g. pipelines/voc.yaml) onto the params file")
    s.add_argument("preset", type=Path)
    s.set_defaults(func=_params, no_config=True)
    s = sub.add_parser("ui", help="MLflow's UI on this project's runs (one worker, model-training view)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, default=5000)
    s.set_defaults(func=_ui)
    s = sub.add_parser("schema", help="JSON schema of params.yaml (for editors)")
    s.add_argument("--out", type=Path, help="write here instead of stdout")
    s.set_defaults(func=_schema, no_config=True)
    return p


def _without_nproc(argv: list[str]) -> list[str]:
    """The command a torchrun launch runs again: without --nproc (which torchrun would take for
    its own --nproc-per-node, and which the launched processes do not need)."""
    out, skip = [], False
    for x in argv:
        if not skip and x != "--nproc" and not x.startswith("--nproc="):
            out.append(x)
        skip = x == "--nproc"
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = _without_nproc(sys.argv[1:] if argv is None else list(argv))
    quiet = os.environ.get("RANK", "0") != "0"  # under torchrun, rank 0 tells the story; the others warn
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if getattr(args, "no_config", False):
            args.func(args)
        else:
            args.func(args, config_mod.load(args.params))
    except IsimError as e:
        print(f"isim {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: leave the process group cleanly
            from isim import distributed
            distributed.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
