"""The paper's Table 2 shape on the embedded data: pseudo-mask mIoU (train split) of the CAM
baseline and of every ISIM round, with and without CRF; the baseline is the CAM row.

    .venv/bin/python benchmarks/table2.py [reports/evaluation.json]   (after `dvc repro`)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


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


if __name__ == "__main__":
    print_table(Path(sys.argv[1] if len(sys.argv) > 1 else "reports/evaluation.json"))
