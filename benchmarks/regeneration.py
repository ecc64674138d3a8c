"""Pseudo-label regeneration throughput: the worker pool (CAMs, CRF and PNGs in worker
processes; on a GPU the CAMs come from the main process) vs a plain sequential loop, on the
embedded dataset; and peak memory for two dataset sizes (it must not grow with the number of
images); and the throughput on 500x375 photographs (coco_sample's photos) with the
`pipelines/photo.yaml` settings, next to the embedded 128 px images with the committed params.
Each throughput is printed next to the machine's limit: cores / (CPU seconds per image of CAM
inference + of CRF, each measured alone in the same run; the CAMs' with torch's default threads
or with one, whichever costs less), since on a CPU both share the cores. With ``--device cuda``
the CAMs run on the GPU while the CRF runs on the CPU cores, so the limit is the slower of the
two resources: min(1 / GPU seconds per image of CAM inference, cores / CPU seconds per image of
CRF).

    .venv/bin/python benchmarks/regeneration.py [--images 200] [--workers 2] [--photos 40] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from isim import settings

ROOT = Path(__file__).resolve().parents[1]


def make_data(images: int) -> Path:
    from isim.config import load
    from isim.data.synthetic import generate

    syn = load(ROOT / "params.yaml").data.synthetic.model_copy(update={"n_train": images, "n_val": 1})
    root = Path(tempfile.mkdtemp()) / "data"
    generate(syn, root)
    return root


def photo_data(n: int) -> Path:
    """``n`` photos of coco_sample at 500x375 with their image-level VOC labels (CSV mode)."""
    import csv

    from PIL import Image

    from isim.config import from_dict
    from isim.data import own
    sample = ROOT / "tests" / "fixtures" / "coco_sample"
    src = Path(tempfile.mkdtemp())
    (src / "images").mkdir()
    with (sample / "image_labels.csv").open() as f:
        rows = list(csv.DictReader(f))[:n]
    classes = sorted({c for r in rows for c in r["voc_classes"].split()})
    with (src / "labels.csv").open("w") as f:
        f.write("id,classes\n")
        for r in rows:
            Image.open(sample / "images" / f"{r['image_id']}.jpg").convert("RGB").resize((500, 375)).save(
                src / "images" / f"{r['image_id']}.jpg", quality=92)
            f.write(f"{r['image_id']},{'|'.join(r['voc_classes'].split())}\n")
    cfg = from_dict({"data": {"source": "own", "own": {"format": "csv", "images": str(src / "images"),
                                                       "labels": str(src / "labels.csv"), "classes": classes,
                                                       "val_fraction": 0.0}}})
    root = src / "prepared"
    own.prepare(cfg.data, root)
    return root


def one(root: Path, workers: int, preset: str = "", device_name: str = "cpu") -> dict:
    import yaml

    from isim.config import from_dict, with_preset
    from isim.data.prepared import Prepared
    from isim.models import build_model, model_spec
    from isim.pseudo import masks as pseudo
    from isim.runtime import keep_freed_memory
    keep_freed_memory()  # as every stage does (runtime.setup)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    if preset:
        raw = with_preset(raw, yaml.safe_load((ROOT / preset).read_text()))
    cfg = from_dict(raw)
    device = torch.device(device_name)
    tmp = Path(tempfile.mkdtemp())
    data = Prepared.open(root)
    torch.manual_seed(0)
    model = build_model(model_spec(cfg.encoder, cfg.model, data.n_classes)).to(device)
    ids = data.ids("train")
    made = replace(settings.masks(cfg, cfg.threshold), workers=workers)
    pseudo.generate(model, data, ids[:16], tmp / "warm", made, device)
    s = pseudo.generate(model, data, ids, tmp / "out", made, device)
    usage = resource.getrusage
    peak_kb = usage(resource.RUSAGE_SELF).ru_maxrss + usage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = {"images": len(ids), "workers": workers, "images_per_s": s.images_per_s, "peak_mb": peak_kb / 1024}
    if workers:
        out.update(cpu_seconds(model, data, ids, cfg, device))
    return out


def cpu_seconds(model, data, ids: list[str], cfg, device: torch.device) -> dict:
    """Per image: seconds of CAM inference alone (CPU seconds of all threads, with torch's
    default threads and with one, whichever is cheaper: the pool's workers use one each; on a
    GPU, wall seconds, the GPU being the resource) and CPU seconds of threshold + CRF alone."""
    from isim.pseudo import cam as camlib
    from isim.pseudo.crf import DenseCRF

    def cams(threads: int) -> tuple[float, list]:
        torch.set_num_threads(threads)
        items = []
        clock = time.perf_counter if device.type == "cuda" else time.process_time
        t0 = clock()
        for item, maps, keys, _ in camlib.dataset_cams(model, data, ids, settings.cams(cfg), device,
                                                       "CAMs alone"):
            items.append((item["rgb"], maps, keys))
        return (clock() - t0) / len(ids), items

    default = torch.get_num_threads()
    cam_default, items = cams(default)
    cam_one = cam_default if device.type == "cuda" else cams(1)[0]
    torch.set_num_threads(default)
    crf = DenseCRF(cfg.crf)
    t0 = time.process_time()
    for rgb, maps, keys in items:
        crf.refine(rgb, camlib.to_mask(maps, keys, cfg.threshold), len(keys))
    return {"cam_s": min(cam_default, cam_one), "cam_s_threads": {default: cam_default, 1: cam_one},
            "crf_cpu_s": (time.process_time() - t0) / len(ids), "device": device.type}


def limit_line(what: str, r: dict) -> str:
    cores = os.cpu_count() or 1
    cam, crf = r["cam_s"], r["crf_cpu_s"]
    if r["device"] == "cuda":  # CAMs on the GPU beside CRFs on the cores: the slower side bounds it
        limit = min(1 / cam, cores / crf)
        how = (f"min(1 / {cam * 1000:.1f} ms GPU CAM, {cores} cores / {crf * 1000:.0f} ms CRF CPU) per image")
    else:
        limit = cores / (cam + crf)
        how = f"{cores} cores / ({cam * 1000:.0f} ms CAM + {crf * 1000:.0f} ms CRF CPU per image)"
    return (f"{what}: {r['images_per_s']:.2f} images/s; machine limit {limit:.2f} images/s = {how} "
            f"-> {100 * r['images_per_s'] / limit:.0f}% of the limit")


def measure(root: Path, workers: int, preset: str = "", device: str = "cpu") -> dict:
    """In a fresh process, so peak memory is this configuration's own."""
    out = subprocess.run([sys.executable, __file__, "--one", str(root), str(workers), preset, device],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--photos", type=int, default=40, help="500x375 photos for the photo figure (0: skip)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the CAMs run")
    p.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args()
    from machine import print_reference  # benchmarks/machine.py: what the times below scale by
    print_reference()
    if a.one:
        print(json.dumps(one(Path(a.one[0]), int(a.one[1]), a.one[2], a.one[3])))
        return
    small, large = make_data(a.images), make_data(a.images * 4)
    seq = measure(small, 0, device=a.device)
    pool = measure(small, a.workers, device=a.device)
    big = measure(large, a.workers, device=a.device)
    print(f"sequential loop      : {seq['images_per_s']:.1f} images/s  (baseline)")
    print(f"worker pool ({a.workers} procs): {pool['images_per_s']:.1f} images/s  "
          f"-> {pool['images_per_s'] / seq['images_per_s']:.2f}x the sequential loop")
    print(limit_line(f"128 px, worker pool, {a.images} images", pool))
    print(limit_line(f"128 px, worker pool, {a.images * 4} images", big))  # the pool's start amortised
    print(f"peak memory          : {pool['peak_mb']:.0f} MB at {a.images} images, "
          f"{big['peak_mb']:.0f} MB at {a.images * 4} images "
          f"(ratio {big['peak_mb'] / pool['peak_mb']:.2f})")
    if a.photos:
        photo = measure(photo_data(a.photos), a.workers, "pipelines/photo.yaml", a.device)
        print(f"500x375 photos, photo preset, worker pool: {photo['images_per_s']:.2f} images/s "
              f"({1 / photo['images_per_s']:.2f} s per image) vs {pool['images_per_s']:.1f} images/s on the "
              f"128 px embedded images -> {pool['images_per_s'] / photo['images_per_s']:.0f}x slower per image")
        print(limit_line("500x375 photos, worker pool", photo))


if __name__ == "__main__":
    main()
