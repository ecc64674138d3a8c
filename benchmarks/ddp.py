"""One process vs two gloo ranks on the CPU at the same global batch (train.batch_size): wall
time of `isim train-isim` and the difference in its final pseudo-mask mIoU. The two ranks see
the same global batches as one process, with BatchNorm over them (train.sync_bn); they differ
in the order floats are summed and in the decoder's dropout draws. The control run shows what
float order alone does: the same single process at 1 thread instead of 2 (another summation
order inside the kernels, nothing else).

    .venv/bin/python benchmarks/ddp.py [--images 300] [--epochs 8] [--seeds 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ISIM = str(Path(sys.executable).parent / "isim")


def train(work: Path, data: Path, tag: str, nproc: int, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    subprocess.run([ISIM, "train-isim", "--nproc", str(nproc), "--data", str(data), "--checkpoints", f"ck{tag}",
                    "--pseudo", f"ps{tag}", "--metrics", f"m{tag}.json", "--plots", f"p{tag}.csv"],
                   cwd=work, env=env, check=True, capture_output=True)
    return {"wall_s": time.perf_counter() - t0, **json.loads((work / f"m{tag}.json").read_text())}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seeds", type=int, default=1)
    a = p.parse_args()
    from machine import print_reference  # benchmarks/machine.py: what the times below scale by
    print_reference()
    diffs, noise = [], []
    for seed in range(a.seeds):
        work = Path(tempfile.mkdtemp())
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["seed"] = seed
        params["data"]["synthetic"].update(n_train=a.images, n_val=max(20, a.images // 8), seed=seed)
        params["train"]["epochs"] = a.epochs
        params["rounds"]["warmup_epochs"] = min(params["rounds"]["warmup_epochs"], a.epochs // 2)
        params["crf_freq"] = max(1, a.epochs // 4)
        params["tracking"]["enabled"] = False
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        subprocess.run([ISIM, "prepare", "--out", "data"], cwd=work, check=True, capture_output=True)
        # the same 2 cores either way: 2 threads in one process, or 1 thread in each of 2 ranks
        one = train(work, work / "data", "1", 1, 2)
        two = train(work, work / "data", "2", 2, 1)
        ctl = train(work, work / "data", "c", 1, 1)
        diffs.append(two["final_crf_miou"] - one["final_crf_miou"])
        noise.append(ctl["final_crf_miou"] - one["final_crf_miou"])
        print(f"seed {seed}: 1 process {one['wall_s']:.0f} s, final CRF mIoU {one['final_crf_miou']:.2f} | "
              f"2 gloo ranks {two['wall_s']:.0f} s, {two['final_crf_miou']:.2f} "
              f"({one['wall_s'] / two['wall_s']:.2f}x the speed of 1 process) | "
              f"control, 1 process at 1 thread: {ctl['final_crf_miou']:.2f}", flush=True)
    print(f"{a.images} images, {a.epochs} epochs, global batch {params['train']['batch_size']}, "
          f"{len(diffs)} seed(s), final CRF mIoU:")
    print(f"  2 ranks - 1 process:                 {_mean_std(diffs)}, largest |difference| "
          f"{max(abs(d) for d in diffs):.2f} (target: within 0.5)")
    print(f"  control, 1 thread - 2 threads (float noise alone): {_mean_std(noise)}, largest |difference| "
          f"{max(abs(d) for d in noise):.2f}")


def _mean_std(xs: list[float]) -> str:
    mean = sum(xs) / len(xs)
    std = (sum((x - mean) ** 2 for x in xs) / max(1, len(xs) - 1)) ** 0.5
    return f"{mean:+.2f} +- {std:.2f}"


if __name__ == "__main__":
    main()
