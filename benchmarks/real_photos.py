"""Real photographs: CAM vs ISIM pseudo masks with the ImageNet-pretrained EfficientNet-Lite0
(offline, pip package) and with the same encoder trained from scratch, over K seeds.

    .venv/bin/python benchmarks/real_photos.py --horse PATH/horse_sample --coco PATH/coco_sample \
        [--seeds 3 | --only-seeds 1,2] [--variants pretrained,scratch] [--work /tmp/isim-real-photos] \
        [--json FILE] [--keep]

What a user does, in a scratch project: the photo folders go under raw/ (`dvc add`),
`isim params pipelines/real-photos.yaml`, then one `dvc exp run -S seed=K -S encoder.weights=...`
per run; each invocation's first run starts from a clean state (its record says `clean_state`),
so its wall time is the pipeline's. Every setting is the preset's: nothing is tuned on these
photos, and every seed run is reported. Writes reports/real_photos.{md,json} and
docs/real_photos_rounds.jpg (paper Fig. 5 on real photos, seed 0, pretrained); prints the
targets' figures with their baselines last.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from isim.paper.tables import mean_std

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
VARIANTS = {"pretrained": "package", "scratch": "''"}
TARGET_MINUTES = 20


def sh(cmd: list[str], cwd: Path) -> str:
    # the project's own copy of the sources runs, so editing this checkout cannot change a run
    env = {**os.environ, "PYTHONPATH": str(cwd / "src"), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


def make_project(work: Path, horse: Path, coco: Path) -> None:
    """A git + DVC project with this repository's pipeline and the photos as raw data."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore", "params.yaml"):
        shutil.copy(REPO / name, work / name)
    for folder in ("src", "pipelines", "raw"):
        shutil.copytree(REPO / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for sub in ("images", "masks"):
        shutil.copytree(horse / sub, work / "raw/horse" / sub)
    for sub in ("images", "labels"):
        shutil.copytree(coco / sub, work / "raw/coco" / sub)
    shutil.copy(coco / "data.yaml", work / "raw/coco/data.yaml")
    for p in (work / "raw").rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    dvc = str(BIN / "dvc")
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "bench@example.org"],
                ["git", "config", "user.name", "bench"], [dvc, "init", "-q"],
                [dvc, "config", "core.analytics", "false"], [dvc, "add", "-q", "raw/horse", "raw/coco"],
                [str(BIN / "isim"), "params", "pipelines/real-photos.yaml"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "real photos"]):
        sh(cmd, work)


def collect(work: Path) -> dict:
    report = json.loads((work / "reports/evaluation.json").read_text())
    base, rounds, walk = report["baseline"]["pseudo"], report["isim"]["rounds"], report.get("random_walk")

    def row(number: int, name: str, masks: dict) -> dict:
        return {"round": number, "name": name, "miou": masks["raw"]["miou"], "crf_miou": masks["crf"]["miou"],
                "precision": masks["raw"]["precision"], "recall": masks["raw"]["recall"],
                "crf_precision": masks["crf"]["precision"], "crf_recall": masks["crf"]["recall"]}

    iou = {"cam_crf": base["crf"]["iou"], "isim_crf": rounds[-1]["crf"]["iou"]}
    if walk:  # the random walk on ISIM's last round (runs made before the walk existed have none)
        iou |= {"rw": walk["raw"]["iou"], "rw_crf": walk["crf"]["iou"]}
    return {
        "summary": report["summary"],
        "iou": iou,
        "rounds": [row(0, "CAM", base)] + [row(r["round"], f"ISIM round {r['round']}", r) for r in rounds]
        + ([row(len(rounds) + 1, "ISIM + RW", walk)] if walk else []),
    }


def grid(work: Path, out: Path) -> None:
    """Fig. 5 on real photos: 3 horses and 3 COCO photos with VOC objects from the train split
    (and the random walk's masks where the run has them)."""
    from PIL import Image  # only the runs that draw the figure need PIL and torch

    from isim.data.layout import Prepared
    from isim.evaluation import fig5_columns
    from isim.visualize import rounds_grid
    data = Prepared.open(work / "data/prepared")
    train = data.ids("train")
    ids = [i for i in train if i.startswith("horse")][:3] + [i for i in train
                                                            if not i.startswith("horse") and data.labels[i]][:3]
    rw = work / "pseudo/rw"
    cols = fig5_columns(work / "pseudo/baseline", work / "pseudo/isim", rw if rw.is_dir() else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rounds_grid(data, ids, cols)).save(out, quality=88)
    print(f"grid: {out} (columns: image | ground truth | {' | '.join(n for n, _ in cols)}, after CRF)")


def fmt(xs: list[float]) -> str:
    m, s = mean_std(xs)
    return f"{m:.2f} ± {s:.2f}"


def by_variant(runs: list[dict]) -> dict[str, list[dict]]:
    """The runs of each encoder variant that has any, in VARIANTS' order."""
    by = {v: [r for r in runs if r["variant"] == v] for v in VARIANTS}
    return {v: rs for v, rs in by.items() if rs}


def tables(runs: list[dict]) -> str:
    lines = []
    by = by_variant(runs)
    keys = [("CAM", "baseline_miou"), ("CAM+CRF", "baseline_crf_miou"), ("ISIM", "isim_miou"),
            ("ISIM+CRF", "isim_crf_miou")]
    lines += ["| encoder | seeds | " + " | ".join(k for k, _ in keys)
              + " | ISIM+CRF − CAM+CRF | horse IoU CAM+CRF → ISIM+CRF |",
              "| --- | ---: | " + " | ".join("---:" for _ in keys) + " | ---: | ---: |"]
    for v, rs in by.items():
        gains = [r["summary"]["isim_crf_miou"] - r["summary"]["baseline_crf_miou"] for r in rs]
        horse = " → ".join(fmt([r["iou"][k]["horse"] for r in rs]) for k in ("cam_crf", "isim_crf"))
        lines.append(f"| {v} | {len(rs)} | " + " | ".join(fmt([r["summary"][k] for r in rs]) for _, k in keys)
                     + f" | {fmt(gains)} | {horse} |")
    walked = {v: [r for r in rs if "isim_rw_miou" in r["summary"]] for v, rs in by.items()}
    if any(walked.values()):
        # runs made before the AffinityNet / random-walk stages existed have no walk: these rows
        # cover only the seeds that walked, and say which
        lines += ["", "After the random walk (AffinityNet on ISIM's last round), the seeds that ran it:", "",
                  "| encoder | seeds | ISIM+CRF | ISIM+RW | ISIM+RW+CRF | ISIM+RW − ISIM | horse IoU ISIM+RW |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for v, rs in walked.items():
            if rs:
                lines.append(
                    f"| {v} | {', '.join(str(r['seed']) for r in rs)} | "
                    + " | ".join(fmt([r["summary"][k] for r in rs])
                                 for k in ("isim_crf_miou", "isim_rw_miou", "isim_rw_crf_miou"))
                    + f" | {fmt([r['summary']['isim_rw_miou'] - r['summary']['isim_miou'] for r in rs])}"
                    f" | {fmt([r['iou']['rw']['horse'] for r in rs])} |")
    for v, rs in by.items():
        classes = [c for c, x in rs[0]["iou"]["isim_crf"].items() if x is not None]
        columns = [("CAM+CRF", "cam_crf"), ("ISIM+CRF", "isim_crf")]
        columns += [("ISIM+RW+CRF", "rw_crf")] if walked[v] else []
        lines += ["", f"Per-class IoU, {v} encoder, CRF masks (mean over {len(rs)} seeds"
                  + (f"; ISIM+RW+CRF over the {len(walked[v])} that walked" if walked[v] else "") + "):", "",
                  "| class | " + " | ".join(n for n, _ in columns) + " |",
                  "| --- | " + " | ".join("---:" for _ in columns) + " |"]
        for c in classes:
            cells = []
            for _, k in columns:
                xs = [r["iou"][k][c] for r in rs if k in r["iou"] and r["iou"][k].get(c) is not None]
                cells.append(f"{statistics.fmean(xs) if xs else float('nan'):.1f}")
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines += ["", f"Why the masks change, {v} encoder: object precision / recall (%) of the masks, "
                  "mean over the seeds in the row:", "",
                  "| masks | seeds | mIoU | precision | recall | +CRF mIoU | +CRF precision | +CRF recall |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for i, row in enumerate(max((r["rounds"] for r in rs), key=len)):
            have = [r for r in rs if i < len(r["rounds"]) and r["rounds"][i]["name"] == row["name"]]
            vals = [[r["rounds"][i][k] for r in have]
                    for k in ("miou", "precision", "recall", "crf_miou", "crf_precision", "crf_recall")]
            lines.append(f"| {row['name']} | {len(have)} | "
                         + " | ".join(f"{statistics.fmean(v):.1f}" for v in vals) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--horse", type=Path, help="folder with images/ and masks/")
    ap.add_argument("--coco", type=Path, help="folder with images/, labels/ and data.yaml")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only-seeds", type=lambda x: [int(i) for i in x.split(",")],
                    help="run only these seeds, e.g. 2 or 1,2 (to share the runs out between processes)")
    ap.add_argument("--variants", default="pretrained,scratch")
    ap.add_argument("--work", type=Path, default=Path("/tmp/isim-real-photos"))
    ap.add_argument("--json", type=Path, default=REPO / "reports/real_photos.json", help="every run's figures")
    ap.add_argument("--keep", action="store_true",
                    help="keep the runs already in --json and run only the (variant, seed) pairs it lacks")
    ap.add_argument("--summarize", type=Path, nargs="+", help="only print the tables of earlier runs' JSON files")
    a = ap.parse_args()
    if a.summarize:
        summarize([run for f in a.summarize for run in json.loads(f.read_text())])
        return
    if not (a.horse and a.coco):
        ap.error("--horse and --coco are required (or --summarize)")
    make_project(a.work, a.horse.resolve(), a.coco.resolve())
    out_json = a.json
    runs: list[dict] = json.loads(out_json.read_text()) if a.keep and out_json.exists() else []
    done = {(r["variant"], r["seed"]) for r in runs}
    ran = False
    for variant in a.variants.split(","):
        for seed in a.only_seeds or range(a.seeds):
            if (variant, seed) in done:
                print(f"{variant} seed {seed}: kept from {out_json}", flush=True)
                continue
            t0 = time.perf_counter()
            sh([str(BIN / "dvc"), "exp", "run", "dvc.yaml", "-S", f"seed={seed}",
                "-S", f"encoder.weights={VARIANTS[variant]}"], a.work)
            run = {"variant": variant, "seed": seed, "seconds": round(time.perf_counter() - t0, 1),
                   "clean_state": not ran, **collect(a.work)}
            ran = True
            runs.append(run)
            s = run["summary"]
            print(f"{variant} seed {seed}: CAM {s['baseline_miou']:.2f} / {s['baseline_crf_miou']:.2f} (+CRF), "
                  f"ISIM {s['isim_miou']:.2f} / {s['isim_crf_miou']:.2f}, {run['seconds'] / 60:.1f} min", flush=True)
            if variant == "pretrained" and seed == 0:  # the figure always shows seed 0
                grid(a.work, REPO / "docs/real_photos_rounds.jpg")
            out_json.write_text(json.dumps(runs, indent=1) + "\n")
    summarize(runs)


def summarize(runs: list[dict]) -> None:
    """Tables into reports/real_photos.md, then the targets' figures with their baselines."""
    md = tables(runs)
    (REPO / "reports/real_photos.md").write_text(
        "# Real photographs: CAM vs ISIM (benchmarks/real_photos.py)\n\n" + md + "\n")
    print(md + "\n\n" + "\n".join(target_lines(runs)))


def target_lines(runs: list[dict]) -> list[str]:
    """The issue's targets, each with its figure, its baseline from the same runs and a verdict."""
    lines, by = [], by_variant(runs)
    # only an invocation's first run starts from a clean project: the later ones reuse its imported data
    for v, rs in by.items():
        clean = [r for r in rs if r.get("clean_state")]
        if clean:
            seeds = ", ".join(str(r["seed"]) for r in clean)
            minutes = ", ".join(f"{r['seconds'] / 60:.1f}" for r in clean)
            met = min(r["seconds"] for r in clean) <= TARGET_MINUTES * 60
            lines.append(f"real-photo pipeline from a clean state ({v}, seeds {seeds}): {minutes} min "
                         f"(target <= {TARGET_MINUTES} min: {'met' if met else 'NOT met'})")
    if "pretrained" in by and "scratch" in by:
        d = statistics.fmean(r["summary"]["baseline_miou"] for r in by["pretrained"]) - \
            statistics.fmean(r["summary"]["baseline_miou"] for r in by["scratch"])
        lines.append(f"pretrained CAM - from-scratch CAM (baseline): {d:+.2f} mIoU (target >= +15: "
                     f"{'met' if d >= 15 else 'NOT met'})")
    for v, rs in by.items():
        m, s = mean_std([r["summary"]["isim_crf_miou"] - r["summary"]["baseline_crf_miou"] for r in rs])
        ok = m >= 3 and m > 2 * s
        lines.append(f"ISIM - CAM gain ({v}): {m:+.2f} ± {s:.2f} mIoU over {len(rs)} seeds "
                     f"(target >= +3 and > 2 std: {'met' if ok else 'NOT met'})")
        walked = [r for r in rs if "isim_rw_miou" in r["summary"]]
        if walked:
            m, s = mean_std([r["summary"]["isim_rw_miou"] - r["summary"]["isim_miou"] for r in walked])
            lines.append(f"ISIM+RW - ISIM ({v}): {m:+.2f} ± {s:.2f} mIoU over {len(walked)} seeds "
                         f"({', '.join(str(r['seed']) for r in walked)})")
    return lines


if __name__ == "__main__":
    main()
