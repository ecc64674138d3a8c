"""The paper's Table 2 shape on the embedded data: pseudo-mask mIoU (train split) of the CAM
baseline and of every ISIM round, with and without CRF; the baseline is the CAM row.

    .venv/bin/python benchmarks/table2.py [reports/evaluation.json]    (one run, after `dvc repro`)
    .venv/bin/python benchmarks/table2.py --seeds 3 [--jobs 2]         (K data + init seeds)
    .venv/bin/python benchmarks/table2.py --seeds 3 --random-walk      (+ AffinityNet and the walk)

With ``--seeds K`` every seed k runs the pipeline's commands on params.yaml with ``seed`` and
``data.synthetic.seed`` set to k (folders under .isim/paper/default/, reused when present; the
same runs `isim paper seeds` reads). The last line is the CRF masks' gain, mean ± std over seeds.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import yaml

from isim.config import overridden, parse_sets
from isim.errors import IsimError
from isim.paper import tables as tb
from isim.paper.seeds import Run, execute_all
from isim.project import Project


def print_table(path: Path) -> None:
    r = json.loads(Path(path).read_text())
    base = r["baseline"]["pseudo"]
    rows = [("CAM (baseline)", base["raw"]["miou"], base["crf"]["miou"])]
    rows += [(f"ISIM round {x['round']}", x["raw"]["miou"], x["crf"]["miou"]) for x in r["isim"]["rounds"]]
    print(f"| {'pseudo masks':<16} | {'mIoU':>6} | {'+ CRF':>6} |")
    print(f"| {'-' * 16} | {'-' * 6}:| {'-' * 6}:|")
    for name, a, b in rows:
        print(f"| {name:<16} | {a:6.2f} | {b:6.2f} |")
    s = r["summary"]
    print(f"ISIM final vs CAM baseline: {s['gain']:+.2f} mIoU without CRF, {s['gain_crf']:+.2f} with CRF")
    print(f"classification label accuracy train/val: "
          f"CAM {s['baseline_train_label_acc']:.1f}/{s['baseline_val_label_acc']:.1f}, "
          f"ISIM {s['isim_train_label_acc']:.1f}/{s['isim_val_label_acc']:.1f}")
    best = max(r["baseline"]["threshold_sweep"], key=lambda x: x["miou"])
    best_i = max(r["isim"]["threshold_sweep"], key=lambda x: x["miou"])
    print(f"best CAM threshold (no CRF): baseline {best['threshold']} -> {best['miou']:.2f}; "
          f"ISIM {best_i['threshold']} -> {best_i['miou']:.2f}")


def seeds_report(results: list[dict]) -> str:
    """Mean ± std over seeds: the four masks, then every round with the CAMs' object precision
    and recall (why the masks improve, or not), then the gain line."""
    k = len(results)
    lines = [f"| pseudo masks (train, {k} seeds) | mIoU | object precision | object recall |",
             "| --- | ---: | ---: | ---: |"]
    figs = [tb.figures(x) for x in results]
    walked = all("random_walk" in x for x in results)
    for name, key in tb.SUMMARY_ROWS + (tb.RW_ROWS if walked else []):
        src, kind = key.split("_")[0], "crf" if key.endswith("crf") else "raw"  # cam_crf -> cam, crf
        lines.append(f"| {name} | {tb.fmt(*tb.cell(results, key))} | "
                     f"{tb.fmt(*tb.cell(results, f'{src}_{kind}_precision'))} | "
                     f"{tb.fmt(*tb.cell(results, f'{src}_{kind}_recall'))} |")
    lines += ["", "| ISIM round | mIoU | + CRF | precision | recall |", "| --- | ---: | ---: | ---: | ---: |"]
    for r in range(1, max(len(x["rounds"]) for x in results) + 1):
        lines.append(f"| {r} | " + " | ".join(tb.fmt(*tb.cell(results, f"round_{r}{s}")) for s in (
            "", "_crf", "_raw_precision", "_raw_recall")) + " |")
    m, s, n = tb.gain(results, crf=False)
    lines.append(f"\nwithout CRF: ISIM - CAM {m:+.2f} ± {s:.2f}; per seed "
                 + ", ".join(f"{f['isim'] - f['cam']:+.2f}" for f in figs))
    if walked:
        lines.append("with the random walk (AffinityNet on ISIM's masks), ISIM + RW - ISIM: "
                     + ", ".join(f"{f['rw'] - f['isim']:+.2f}" for f in figs) + " without CRF; "
                     + ", ".join(f"{f['rw_crf'] - f['isim_crf']:+.2f}" for f in figs) + " with CRF")
    m, s, n = tb.gain(results, crf=True)
    verdict = "exceeds" if m > 2 * s else "does not exceed"
    lines.append("with CRF, per seed: " + ", ".join(
        f"{f['isim_crf'] - f['cam_crf']:+.2f}" for f in figs)
        + f"; the mean gain {verdict} twice its std")
    lines.append(f"ISIM - CAM gain: {m:+.2f} ± {s:.2f} mIoU over {n} seeds")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", nargs="?", help="an evaluation report (default: this project's, from dvc.yaml)")
    ap.add_argument("--seeds", type=int, default=0, help="run seeds 0..K-1 instead of reading one report")
    ap.add_argument("--jobs", type=int, default=1, help="seeds at a time, the cores split between them")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--workdir", default=".isim/paper")
    ap.add_argument("--random-walk", action="store_true",
                    help="also AffinityNet and the random walk per seed (rows ISIM + RW, ISIM + RW + CRF)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param (repeatable)")
    a = ap.parse_args()
    if not a.seeds:
        print_table(Path(a.report) if a.report else Project().arg("evaluate", "--report"))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    base = overridden(yaml.safe_load(Path(a.params).read_text()), parse_sets(a.set))
    key = tb.Variant("default").key if not a.set else "set-" + tb.Variant("set", tuple(
        sorted(parse_sets(a.set).items()))).key
    runs = [Run(Path(a.workdir) / key / f"seed_{s}", s, random_walk=a.random_walk) for s in range(a.seeds)]
    try:
        results = execute_all(runs, base, a.jobs)
    except IsimError as e:
        raise SystemExit(f"table2.py: error: {e}") from None
    print(seeds_report(results))


if __name__ == "__main__":
    main()
