"""The chain after ISIM, stage by stage, against the ground truth of the holdout images (half of
val, never trained on, never the train images the results tables report), on a finished project:
the final ISIM round's masks (the reference the walk must beat), the affinity labels (share
labelled, precision of confident objects and of confident background, on train), AffinityNet
(accuracy of its affinities on true same-label / different-label pairs of the holdout images,
per epoch), and every candidate rule of the walk (mIoU, object precision / recall before CRF),
then the chosen rule after CRF. Each ``--set`` changes the chain's params for this measurement
only (the project is not touched: everything is written under ``--work``); tracking is off.

    .venv/bin/python benchmarks/chain.py --project P [--label NAME] [--set KEY=VALUE ...] \
        [--reuse-labels DIR] [--json FILE]

``--json`` appends one record per run, so variants measured one by one make one table
(``--summarize FILE``).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from isim import settings


def measure(project: Path, label: str, sets: dict, work: Path, reuse_labels: Path | None) -> dict:

    from isim.config import from_dict, overridden
    from isim.data.prepared import Prepared
    from isim.models import load_model
    from isim.project import Project
    from isim.pseudo import confident, masks
    from isim.pseudo.walk import RandomWalk, score_rules
    from isim.run_layout import final_checkpoint, holdout_scores, rounds_of
    from isim.runtime import setup
    from isim.training.affinity_pairs import PairProbe, train_affinity

    raw = yaml.safe_load((project / "params.yaml").read_text())
    cfg = from_dict(overridden(raw, {**sets, "tracking.enabled": False}))
    paths = Project(project)  # the project's own dvc.yaml says where its outputs are
    data = Prepared.open(paths.arg("prepare", "--out"))
    device = setup(cfg.runtime)
    holdout = data.holdout_ids(cfg.holdout.split, cfg.holdout.fraction)
    model = load_model(final_checkpoint(paths.arg("train_isim", "--checkpoints")), device)
    last = rounds_of(paths.arg("train_isim", "--pseudo"))[-1]
    ref = holdout_scores(last)
    out: dict = {"label": label, "sets": sets, "holdout_images": len(holdout),
                 "isim_holdout": {"raw": ref.raw_miou, "crf": ref.crf_miou} if ref else None}
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    labels = reuse_labels or work / "affinity"
    if reuse_labels is None:
        ac = cfg.affinity
        s = confident.generate(model, data, data.ids("train"), labels, settings.cams(cfg), cfg.crf,
                                     ac.fg_threshold, ac.bg_threshold, device, cfg.runtime.crf_workers)
        out["labels"] = {k: s.get(k) for k in ("labelled_share", "fg_share", "bg_share", "fg_precision",
                                               "bg_precision")}
    out["labels_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    probe = PairProbe(data, holdout, cfg.transform, cfg.affinity.radius, cfg.affinity.cell_purity)
    result = train_affinity(*settings.affinity(cfg), data, labels, work / "affinity.pt", probe=probe)
    out["affinity_epochs"] = [{k: v for k, v in r.row().items() if k.startswith(("pair_", "epoch", "loss"))}
                              for r in result.history]
    out["affinity_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    walker = RandomWalk(result.model.eval(), cfg.transform, cfg.affinity.radius, cfg.random_walk, device)
    rules = score_rules(model, data, holdout, walker, settings.cams(cfg), cfg.runtime.crf_workers, device)
    out["rules"] = [r.__dict__ for r in rules]
    best = next(r for r in walker.rules if r.name == rules[0].rule)
    s = masks.score(model, data, holdout, settings.masks(cfg, cfg.threshold), device, "walk holdout",
                    walker.with_rule(best))
    out["walk_holdout"] = {"rule": best.name, "raw": s.raw_miou, "crf": s.crf_miou}
    out["walk_s"] = round(time.perf_counter() - t0, 1)
    return out


def summarize(records: list[dict]) -> str:
    lines = ["| variant | labelled % (obj / bg) | obj / bg precision | pair acc bg / obj / diff (last epoch) "
             "| best rule | walk holdout | +CRF | ISIM holdout (+CRF) |",
             "| --- | --- | --- | --- | --- | ---: | ---: | --- |"]
    for r in records:
        lab = r.get("labels") or {}
        last = r["affinity_epochs"][-1]
        lab_s = (f"{100 * lab['labelled_share']:.0f} ({100 * lab['fg_share']:.0f} / {100 * lab['bg_share']:.0f})"
                 if lab else "reused")
        nan = float("nan")
        prec = f"{lab.get('fg_precision', nan):.1f} / {lab.get('bg_precision', nan):.1f}" if lab else ""
        pairs = " / ".join(f"{last.get(f'pair_acc_{k}', float('nan')):.1f}" for k in ("bg", "fg", "neg"))
        w, ref = r["walk_holdout"], r["isim_holdout"] or {}
        lines.append(f"| {r['label']} | {lab_s} | {prec} | {pairs} | {w['rule']} | {w['raw']:.2f} | {w['crf']:.2f} "
                     f"| {ref.get('raw', float('nan')):.2f} ({ref.get('crf', float('nan')):.2f}) |")
    lines.append("")
    lines.append("Every rule on the holdout (mIoU / object precision / recall, no CRF):")
    for r in records:
        lines.append(f"- {r['label']}: " + "; ".join(f"{x['rule']} {x['miou']:.1f} / {x['precision']:.0f} / "
                                                     f"{x['recall']:.0f}" for x in r["rules"]))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", type=Path)
    ap.add_argument("--label", default="params")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--work", type=Path, help="scratch folder (default: PROJECT/.chain/LABEL)")
    ap.add_argument("--reuse-labels", type=Path, help="affinity labels made earlier (skips making them)")
    ap.add_argument("--json", type=Path, help="append this run's record to FILE (a JSON list)")
    ap.add_argument("--summarize", type=Path, help="only print the table of FILE")
    a = ap.parse_args()
    from machine import print_reference  # benchmarks/machine.py: what the times below scale by
    machine = print_reference()
    if a.summarize:
        print(summarize(json.loads(a.summarize.read_text())))
        return
    if a.project is None:
        ap.error("--project is required")
    import logging

    from isim.config import parse_sets
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0 = time.perf_counter()
    rec = measure(a.project, a.label, parse_sets(a.set), a.work or a.project / ".chain" / a.label, a.reuse_labels)
    rec["seconds"], rec["machine"] = round(time.perf_counter() - t0, 1), machine
    print(summarize([rec]))
    if a.json:
        records = json.loads(a.json.read_text()) if a.json.exists() else []
        a.json.write_text(json.dumps([*records, rec], indent=1) + "\n")


if __name__ == "__main__":
    main()
