"""`isim <stage>`: one subcommand per pipeline stage (what dvc.yaml runs).

Paths default to the layout dvc.yaml declares; every stage reads params.yaml once.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from isim import config as config_mod
from isim.io import DataError, write_json

log = logging.getLogger("isim")


def _fresh(*dirs: Path) -> None:
    """Outputs of an earlier run must not mix with this one's (DVC removes them too)."""
    for d in dirs:
        if d.exists():
            shutil.rmtree(d)


def _prepare(args, cfg) -> None:
    from isim.data import own, synthetic, voc
    from isim.data.layout import Prepared

    out = Path(args.out)
    _fresh(out)
    t0 = time.perf_counter()
    if cfg.data.source == "synthetic":
        stats = synthetic.generate(cfg.data.synthetic, out)
    elif cfg.data.source == "voc":
        stats = voc.prepare(cfg.data, out)
    else:
        stats = own.prepare(cfg.data, out)
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("prepared %s dataset in %s: %s", cfg.data.source, out, stats)
    data = Prepared.open(out)
    skipped = json.loads((out / "image_labels.json").read_text()).get("skipped", {})
    if skipped:
        log.warning("%d items were skipped (data.on_bad: skip); reasons in %s/image_labels.json, e.g. %s",
                    len(skipped), out, next(iter(skipped.values())))
    with _tracker(cfg, "prepare") as tr:
        tr.log_metrics({"images": stats["images"], "prepare_seconds": stats["seconds"],
                        "skipped": len(skipped), "classes": data.n_classes - 1})


def _train(args, cfg) -> None:
    from isim.data.layout import Prepared
    from isim.evaluation import write_csv
    from isim.training.fit import train

    data = Prepared.open(args.data)
    ckpt = Path(args.checkpoints or f"checkpoints/{args.variant}")
    pseudo_dir = Path(args.pseudo or f"pseudo/{args.variant}")
    if not args.resume:
        _fresh(*((ckpt, pseudo_dir) if args.variant == "isim" else (ckpt,)))
    with _tracker(cfg, f"train_{args.variant}") as tr:
        result = train(cfg, data, args.variant, ckpt, pseudo_dir if args.variant == "isim" else None,
                       on_epoch=lambda rec: tr.log_metrics(
                           {k: v for k, v in rec.items() if k != "epoch"}, step=rec["epoch"]),
                       on_round=lambda r, d, s: tr.log_round(r, d, s, data), resume=args.resume)
        hist = result["history"]
        write_csv(Path(args.plots or f"plots/train_{args.variant}.csv"),
                  [{k: h[k] for k in ("epoch", "round", "loss", "loss_cls", "loss_seg", "train_label_acc")}
                   for h in hist])
        summary = {"epochs": len(hist), "rounds": result["n_rounds"], "seconds": round(result["seconds"], 3),
                   "final_loss": hist[-1]["loss"], "final_train_label_acc": hist[-1]["train_label_acc"]}
        if result["rounds"]:
            last = result["rounds"][-1]
            summary.update({f"final_{k}_miou": last[k]["miou"] for k in ("cam", "crf") if k in last})
        write_json(Path(args.metrics or f"metrics/train_{args.variant}.json"), summary)
        tr.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        tr.log_model(result["model"], f"{args.variant}_model")
    log.info("trained %s: %s", args.variant, summary)


def _pseudo(args, cfg) -> None:
    from isim.pseudo import masks as pseudo
    from isim.data.layout import Prepared
    from isim.training.fit import load_model, resolve_device

    data = Prepared.open(args.data)
    device = resolve_device(cfg.train.device)
    arch = "cam" if args.variant == "cam" else cfg.model.arch
    ckpt = Path(args.checkpoint or f"checkpoints/{args.variant}/final.pt")
    model = load_model(ckpt, cfg, arch, data.n_classes, device)
    out = Path(args.out or f"pseudo/{args.variant}/final")
    _fresh(out)
    with _tracker(cfg, f"pseudo_{args.variant}") as tr:
        summary = pseudo.generate(model, data, data.ids(args.split), out, cfg, device)
        tr.log_round(1, out, summary, data)
    log.info("pseudo labels %s -> %s: %s", ckpt, out,
             {k: summary[k]["miou"] for k in ("cam", "crf") if k in summary} or summary["images"])


def _evaluate(args, cfg) -> None:
    from isim import evaluation as evaluate
    from isim.data.layout import Prepared
    from isim.training.fit import load_model, resolve_device

    data = Prepared.open(args.data)
    device = resolve_device(cfg.train.device)
    cam_model = load_model(Path(args.cam_checkpoints) / "final.pt", cfg, "cam", data.n_classes, device)
    isim_ckpts = sorted(Path(args.isim_checkpoints).glob("round_*.pt"))
    if not isim_ckpts:
        raise DataError(f"{args.isim_checkpoints}: no round_XX.pt checkpoints; run train_isim first")
    isim_model = load_model(isim_ckpts[-1], cfg, cfg.model.arch, data.n_classes, device)
    with _tracker(cfg, "evaluate") as tr:
        report = evaluate.evaluate(cfg, data, cam_model, Path(args.cam_pseudo), isim_model,
                                   Path(args.isim_pseudo), device)
        evaluate.write_outputs(report, Path(args.metrics), Path(args.report), Path(args.plots))
        tr.log_evaluation(report)
    if "summary" in report:
        s = report["summary"]
        log.info("pseudo-mask mIoU on train: CAM %.2f, CAM+CRF %.2f, ISIM %.2f, ISIM+CRF %.2f (gain %+.2f)",
                 s["cam_miou"], s["cam_crf_miou"], s["isim_miou"], s["isim_crf_miou"], s["gain"])


def _tracker(cfg, stage: str):
    from isim.tracking import stage_run
    return stage_run(cfg, stage)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="isim", description=__doc__)
    p.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="stage", required=True)

    s = sub.add_parser("prepare", help="build the dataset in VOC layout (synthetic, VOC+SBD or own data)")
    s.add_argument("--out", default="data/prepared")
    s.set_defaults(func=_prepare)

    s = sub.add_parser("train", help="train the CAM baseline or ISIM (with its pseudo-label rounds)")
    s.add_argument("--variant", choices=["cam", "isim"], required=True)
    s.add_argument("--data", default="data/prepared")
    s.add_argument("--checkpoints", help="default: checkpoints/<variant>")
    s.add_argument("--pseudo", help="ISIM round directory root (default: pseudo/isim)")
    s.add_argument("--metrics", help="default: metrics/train_<variant>.json")
    s.add_argument("--plots", help="default: plots/train_<variant>.csv")
    s.add_argument("--resume", help="continue ISIM from checkpoints/isim/round_XX.pt (optimizer, LR schedule "
                                    "and round counter included)")
    s.set_defaults(func=_train)

    s = sub.add_parser("pseudo", help="pseudo labels (CAM + threshold + CRF) from a checkpoint")
    s.add_argument("--variant", choices=["cam", "isim"], default="cam")
    s.add_argument("--checkpoint", help="default: checkpoints/<variant>/final.pt")
    s.add_argument("--data", default="data/prepared")
    s.add_argument("--split", default="train")
    s.add_argument("--out", help="default: pseudo/<variant>/final")
    s.set_defaults(func=_pseudo)

    s = sub.add_parser("evaluate", help="CAM baseline vs ISIM: pseudo-mask mIoU per round, sweeps, accuracy")
    s.add_argument("--data", default="data/prepared")
    s.add_argument("--cam-checkpoints", default="checkpoints/cam")
    s.add_argument("--cam-pseudo", default="pseudo/cam/final")
    s.add_argument("--isim-checkpoints", default="checkpoints/isim")
    s.add_argument("--isim-pseudo", default="pseudo/isim")
    s.add_argument("--metrics", default="metrics/eval.json")
    s.add_argument("--report", default="reports/evaluation.json", help="full report: per-class IoU, confusion")
    s.add_argument("--plots", default="plots")
    s.set_defaults(func=_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from isim.models.net import ModelError
    from isim.tracking import TrackingError
    from isim.training.fit import TrainingError
    try:
        cfg = config_mod.load(args.params)
        args.func(args, cfg)
    except (config_mod.ConfigError, DataError, ModelError, TrainingError, TrackingError) as e:
        print(f"isim {args.stage}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
