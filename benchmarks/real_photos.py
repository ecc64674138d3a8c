"""Real photographs with many classes: MSRC-v2 (class-index masks) + the Weizmann horses, the
whole chain per seed, beside a fully supervised ceiling and an ImageNet-only anchor.

    .venv/bin/python benchmarks/real_photos.py --msrc PATH/msrc_sample --horse PATH/horse_sample \
        [--seeds 3 | --only-seeds 1,2] [--label preset] [--set KEY=VALUE ...] [--work /tmp/isim-real-photos] \
        [--json FILE] [--keep]
    .venv/bin/python benchmarks/real_photos.py --summarize reports/real_photos.json

What a user does, in one scratch project per seed (``--work``/<label>-seed<K>, kept: `isim predict`
there uses that run's best model): the photo folders go under raw/ (`dvc add`), `isim params
pipelines/real-photos.yaml`, ``seed`` and the ``--set`` overrides (e.g. a tuned trial's values;
``--label`` names the row), then `dvc repro` from a clean state, timed. Then, in the same project:
- the fully supervised ceiling: the same final segmenter (encoder, input size, epochs) trained on
  the ground-truth masks of the same train photos, scored on the same val photos;
- the anchor: the ImageNet classifier's own CAM on the same train photos (no training on them),
  for the classes with an ImageNet counterpart (horse: 'sorrel').
Every seed is reported. Writes reports/real_photos.{md,json}, docs/real_photos_rounds.jpg (paper
Fig. 5 on these photos) and docs/real_photos_predict.jpg (`isim predict` on val photos), seed 0 of
the first label; prints the targets' figures with their baselines last.
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

import yaml

from isim.config import parse_sets
from isim.paper.tables import mean_std
from isim.project import Project

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET_MINUTES = 30
SETS = [("CAM", "baseline_miou"), ("CAM+CRF", "baseline_crf_miou"), ("ISIM", "isim_miou"),
        ("ISIM+CRF", "isim_crf_miou"), ("ISIM+RW", "isim_rw_miou"), ("ISIM+RW+CRF", "isim_rw_crf_miou")]


def sh(cmd: list[str], cwd: Path) -> str:
    # the project's own copy of the sources runs, so editing this checkout cannot change a run
    env = {**os.environ, "PYTHONPATH": str(cwd / "src"), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout + r.stderr


def make_project(work: Path, msrc: Path, horse: Path, seed: int, overrides: dict[str, object]) -> None:
    """A git + DVC project with this repository's pipeline, the photos as raw data and the preset."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore", "params.yaml"):
        shutil.copy(REPO / name, work / name)
    for folder in ("src", "pipelines", "raw"):
        shutil.copytree(REPO / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for sub in ("images", "masks"):
        shutil.copytree(msrc / sub, work / "raw/msrc" / sub)
        shutil.copytree(horse / sub, work / "raw/horse" / sub)
    shutil.copy(msrc / "classes.txt", work / "raw/msrc/classes.txt")
    for p in (work / "raw").rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    preset = yaml.safe_load((REPO / "pipelines/real-photos.yaml").read_text())
    preset["seed"] = seed
    for key, value in overrides.items():
        node = preset
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    (work / "run-preset.yaml").write_text(yaml.safe_dump(preset, sort_keys=False))
    dvc = str(BIN / "dvc")
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "bench@example.org"],
                ["git", "config", "user.name", "bench"], [dvc, "init", "-q"],
                [dvc, "config", "core.analytics", "false"], [dvc, "add", "-q", "raw/msrc", "raw/horse"],
                [str(BIN / "isim"), "params", "run-preset.yaml"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "real photos"]):
        sh(cmd, work)


def ceiling(work: Path) -> dict:
    """The final segmenter trained on the ground truth of the same train photos (not registered)."""
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["tracking"]["registered_model"] = ""
    (work / "ceiling").mkdir(exist_ok=True)
    (work / "ceiling/params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    isim = [str(BIN / "isim"), "--params", "ceiling/params.yaml"]
    paths = Project(work)
    data = str(paths.arg("prepare", "--out"))
    t0 = time.perf_counter()
    sh([*isim, "train-segmenter", "--data", data, "--masks", f"{data}/SegmentationClass",
        "--isim-checkpoints", str(paths.arg("train_isim", "--checkpoints")), "--checkpoint", "ceiling/segmenter.pt",
        "--metrics", "ceiling/train.json", "--plots", "ceiling/train.csv"],
       work)
    sh([*isim, "evaluate-segmenter", "--data", data, "--checkpoint", "ceiling/segmenter.pt",
        "--metrics", "ceiling/metrics.json", "--report", "ceiling/report.json"], work)
    report = json.loads((work / "ceiling/report.json").read_text())
    return {"miou": report["raw"]["miou"], "iou": report["raw"]["iou"], "seconds": round(time.perf_counter() - t0, 1)}


def collect(work: Path) -> dict:
    paths = Project(work)
    report = json.loads(paths.arg("evaluate", "--report").read_text())
    base, rounds, walk = report["baseline"]["pseudo"], report["isim"]["rounds"], report["random_walk"]
    seg = json.loads(paths.arg("evaluate_segmenter", "--report").read_text())
    best = json.loads(paths.arg("evaluate_segmenter", "--best").read_text())

    def row(name: str, masks: dict) -> dict:
        return {"name": name, "miou": masks["raw"]["miou"], "crf_miou": masks["crf"]["miou"],
                "precision": masks["raw"]["precision"], "recall": masks["raw"]["recall"],
                "crf_precision": masks["crf"]["precision"], "crf_recall": masks["crf"]["recall"]}

    return {
        "summary": report["summary"],
        "iou": {"cam_crf": base["crf"]["iou"], "isim_crf": rounds[-1]["crf"]["iou"], "rw": walk["raw"]["iou"],
                "rw_crf": walk["crf"]["iou"]},
        "rounds": [row("CAM", base)] + [row(f"ISIM round {r['round']}", r) for r in rounds] + [row("ISIM + RW", walk)],
        "trained_on": seg["trained_on"]["name"], "trained_on_holdout_miou": seg["trained_on"]["holdout_miou"],
        "segmenter_val_miou": seg["raw"]["miou"], "segmenter_iou": seg["raw"]["iou"],
        "isim_round": seg["isim_round"]["round"], "isim_round_val_miou": seg["isim_round"]["miou"],
        "best_model": best["name"], "warning": seg.get("warning"),
    }


def figures(work: Path) -> None:
    """Fig. 5 of this run and `isim predict` on val photos, for the README."""
    from PIL import Image

    from isim.data.prepared import Prepared
    from isim.io import read_image
    from isim.visualize import example_ids
    paths = Project(work)
    data = Prepared.open(paths.arg("prepare", "--out"))
    shutil.copy(paths.arg("evaluate", "--figure"), REPO / "docs/real_photos_rounds.jpg")
    picks = example_ids(data, "val", 6)
    folder = work / "predict-in"
    folder.mkdir(exist_ok=True)
    for i in picks:
        shutil.copy(data.image_path(i), folder / f"{i}.jpg")
    print(sh([str(BIN / "isim"), "predict", "predict-in", "--out", "predict-out"], work).splitlines()[0])
    tiles = [read_image(work / "predict-out" / f"{i}_overlay.jpg") for i in picks]
    h = 160
    tiles = [Image.fromarray(t).resize((round(t.shape[1] * h / t.shape[0]), h)) for t in tiles]
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), h), "white")
    x = 0
    for t in tiles:
        sheet.paste(t, (x, 0))
        x += t.width + 4
    sheet.save(REPO / "docs/real_photos_predict.jpg", quality=88)


def minutes(run: dict) -> str:
    """A run's wall time; "n/m" for a project run in parts (--from-project without --seconds)."""
    return "n/m" if run["seconds"] is None else f"{run['seconds'] / 60:.1f}"


def fmt(xs: list[float]) -> str:
    m, s = mean_std(xs)
    return f"{m:.2f} ± {s:.2f}"


def by_label(runs: list[dict]) -> dict[str, list[dict]]:
    labels: dict[str, list[dict]] = {}
    for r in runs:
        labels.setdefault(r["label"], []).append(r)
    return labels


def tables(runs: list[dict]) -> str:
    lines = ["Pseudo masks on the train photos (mIoU %), the final segmenter and the ceiling on the val photos:", "",
             "| run | seed | " + " | ".join(n for n, _ in SETS) + " | trained on | segmenter val | best ISIM "
             "round val | ceiling val | weak / full | ImageNet-only horse | minutes |",
             "| --- | ---: | " + " | ".join("---:" for _ in SETS) + " | --- |" + " ---: |" * 6]
    for label, rs in by_label(runs).items():
        for r in rs:
            s = r["summary"]
            lines.append(f"| {label} | {r['seed']} | " + " | ".join(f"{s[k]:.2f}" for _, k in SETS)
                         + f" | {r['trained_on']} | {r['segmenter_val_miou']:.2f} | {r['isim_round_val_miou']:.2f} "
                         f"(round {r['isim_round']}) | {r['ceiling']['miou']:.2f} | "
                         f"{100 * r['segmenter_val_miou'] / r['ceiling']['miou']:.1f} % | "
                         f"{r['anchor']['iou'].get('horse', float('nan')):.2f} | {minutes(r)} |")
        if len(rs) > 1:
            lines.append(f"| {label} | mean ± std | " + " | ".join(fmt([r["summary"][k] for r in rs]) for _, k in SETS)
                         + f" | | {fmt([r['segmenter_val_miou'] for r in rs])} | "
                         f"{fmt([r['isim_round_val_miou'] for r in rs])} | {fmt([r['ceiling']['miou'] for r in rs])} | "
                         f"{fmt([100 * r['segmenter_val_miou'] / r['ceiling']['miou'] for r in rs])} % | "
                         f"{fmt([r['anchor']['iou'].get('horse', float('nan')) for r in rs])} | |")
    for label, rs in by_label(runs).items():
        classes = [c for c, x in rs[0]["iou"]["isim_crf"].items() if x is not None]
        cols = [("CAM+CRF", lambda r, c: r["iou"]["cam_crf"].get(c)),
                ("ISIM+CRF", lambda r, c: r["iou"]["isim_crf"].get(c)),
                ("ISIM+RW+CRF", lambda r, c: r["iou"]["rw_crf"].get(c)),
                ("ImageNet-only CAM", lambda r, c: r["anchor"]["iou"].get(c)),
                ("segmenter (val)", lambda r, c: r["segmenter_iou"].get(c)),
                ("ceiling (val)", lambda r, c: r["ceiling"]["iou"].get(c))]
        lines += ["", f"Per-class IoU, {label} (mean over {len(rs)} seeds; pseudo masks and the anchor on train, "
                  "models on val):", "", "| class | " + " | ".join(n for n, _ in cols) + " |",
                  "| --- | " + " | ".join("---:" for _ in cols) + " |"]
        for c in classes:
            cells = []
            for _, get in cols:
                xs = [v for r in rs if (v := get(r, c)) is not None]
                cells.append(f"{statistics.fmean(xs):.1f}" if xs else "")
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines += ["", f"Object precision / recall (%) of the train masks, {label}, mean over {len(rs)} seeds:", "",
                  "| masks | mIoU | precision | recall | +CRF mIoU | +CRF precision | +CRF recall |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for i, row in enumerate(rs[0]["rounds"]):
            vals = [[r["rounds"][i][k] for r in rs if i < len(r["rounds"])]
                    for k in ("miou", "precision", "recall", "crf_miou", "crf_precision", "crf_recall")]
            lines.append(f"| {row['name']} | " + " | ".join(f"{statistics.fmean(v):.1f}" for v in vals) + " |")
    return "\n".join(lines)


def target_lines(runs: list[dict]) -> list[str]:
    """The issue's targets, each with its figure, its baseline from the same runs and a verdict."""
    lines = []
    for label, rs in by_label(runs).items():
        n = f"{len(rs)} seed{'s' if len(rs) > 1 else ''}"
        ratio = [100 * r["segmenter_val_miou"] / r["ceiling"]["miou"] for r in rs]
        m, s = mean_std(ratio)
        lines.append(f"[{label}] final segmenter val / fully supervised ceiling: {m:.1f} ± {s:.1f} % over {n} "
                     f"(segmenter {fmt([r['segmenter_val_miou'] for r in rs])}, ceiling "
                     f"{fmt([r['ceiling']['miou'] for r in rs])}) (target >= 75 %: {'met' if m >= 75 else 'NOT met'})")
        m, s = mean_std([r["summary"]["isim_crf_miou"] - r["summary"]["baseline_crf_miou"] for r in rs])
        ok = m >= 3 and m > 2 * s and len(rs) >= 3
        lines.append(f"[{label}] ISIM+CRF - CAM+CRF (train): {m:+.2f} ± {s:.2f} mIoU over {n} "
                     f"(target >= +3 and > 2 std over 3 seeds: {'met' if ok else 'NOT met'})")
        horse = [max(r["iou"][k]["horse"] for k in ("isim_crf", "rw", "rw_crf")) for r in rs]
        anchor = [r["anchor"]["iou"]["horse"] for r in rs]
        d = statistics.fmean(horse) - statistics.fmean(anchor)
        lines.append(f"[{label}] horse IoU of the pseudo masks (best of ISIM+CRF, ISIM+RW, ISIM+RW+CRF) "
                     f"{fmt(horse)} vs ImageNet-only CAM {fmt(anchor)}: {d:+.2f} (target >= +15: "
                     f"{'met' if d >= 15 else 'NOT met'})")
        timed = [r["seconds"] / 60 for r in rs if r["seconds"] is not None]
        if timed:
            lines.append(f"[{label}] whole chain from a clean state: {', '.join(minutes(r) for r in rs)} min "
                         f"(target <= {TARGET_MINUTES} min: {'met' if max(timed) <= TARGET_MINUTES else 'NOT met'})")
    return lines


def summarize(runs: list[dict]) -> None:
    """Tables into reports/real_photos.md, then the targets' figures with their baselines."""
    md = tables(runs) + "\n\nTargets:\n\n" + "\n".join(f"- {t}" for t in target_lines(runs))
    (REPO / "reports/real_photos.md").write_text(
        "# Real photographs: MSRC-v2 + Weizmann horses (benchmarks/real_photos.py)\n\n" + md + "\n")
    print(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--msrc", type=Path, help="folder with images/, masks/ and classes.txt")
    ap.add_argument("--horse", type=Path, help="folder with images/ and masks/")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only-seeds", type=lambda x: [int(i) for i in x.split(",")],
                    help="run only these seeds, e.g. 2 or 1,2 (to share the runs out between processes)")
    ap.add_argument("--label", default="preset", help="the row's name (e.g. tuned)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a params override on top of the preset (dotted key), e.g. a tuned trial's value")
    ap.add_argument("--work", type=Path, default=Path("/tmp/isim-real-photos"))
    ap.add_argument("--json", type=Path, default=REPO / "reports/real_photos.json", help="every run's figures")
    ap.add_argument("--keep", action="store_true",
                    help="keep the runs already in --json and run only the (label, seed) pairs it lacks")
    ap.add_argument("--summarize", type=Path, nargs="+", help="only print the tables of earlier runs' JSON files")
    ap.add_argument("--from-project", type=Path, help="a project made as --work does and run with `dvc repro` "
                    "already: add its anchor, ceiling and figures")
    ap.add_argument("--seconds", type=float, help="with --from-project: its `dvc repro` wall time, if measured")
    a = ap.parse_args()
    from machine import print_reference  # benchmarks/machine.py: what the times below scale by
    machine = print_reference()
    if a.summarize:
        summarize([run for f in a.summarize for run in json.loads(f.read_text())])
        return
    if not (a.msrc and a.horse) and not a.from_project:
        ap.error("--msrc and --horse are required (or --summarize, or --from-project)")
    overrides = parse_sets(a.set)
    runs: list[dict] = json.loads(a.json.read_text()) if a.keep and a.json.exists() else []
    done = {(r["label"], r["seed"]) for r in runs}
    for seed in a.only_seeds or range(a.seeds):
        if (a.label, seed) in done:
            print(f"{a.label} seed {seed}: kept from {a.json}", flush=True)
            continue
        if a.from_project:
            work, seconds = a.from_project.resolve(), a.seconds
            if yaml.safe_load((work / "params.yaml").read_text())["seed"] != seed:
                ap.error("--from-project needs --only-seeds with the project's seed")
        else:
            work = a.work / f"{a.label}-seed{seed}"
            make_project(work, a.msrc.resolve(), a.horse.resolve(), seed, overrides)
            t0 = time.perf_counter()
            sh([str(BIN / "dvc"), "repro"], work)
            seconds = round(time.perf_counter() - t0, 1)
        t1 = time.perf_counter()
        sh([str(BIN / "isim"), "imagenet-cam", "--data", str(Project(work).arg("prepare", "--out")),
            "--out", "reports/imagenet_cam.json"], work)
        anchor = json.loads((work / "reports/imagenet_cam.json").read_text()) | {
            "seconds": round(time.perf_counter() - t1, 1)}
        run = {"label": a.label, "seed": seed, "overrides": overrides, "seconds": seconds, "machine": machine,
               "project": str(work),
               **collect(work), "ceiling": ceiling(work), "anchor": anchor}
        runs.append(run)
        s = run["summary"]
        print(f"{a.label} seed {seed}: CAM+CRF {s['baseline_crf_miou']:.2f}, ISIM+CRF {s['isim_crf_miou']:.2f}, "
              f"segmenter {run['segmenter_val_miou']:.2f} / ceiling {run['ceiling']['miou']:.2f}, "
              f"{minutes(run)} min; project kept in {work}", flush=True)
        if seed == 0 and not any(r["seed"] == 0 for r in runs[:-1]):
            figures(work)
        a.json.write_text(json.dumps(runs, indent=1) + "\n")
    summarize(runs)


if __name__ == "__main__":
    main()
