"""Stage ``prepare``: the dataset of ``data.source`` in VOC2012 layout."""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import cast

from isim.config import Config
from isim.data import own, synthetic, voc
from isim.data.prepared import Prepared
from isim.stages import remove_old_outputs
from isim.tracking import stage_run

log = logging.getLogger(__name__)


def run(cfg: Config, out: Path) -> None:
    """Builds into a temporary sibling folder and renames it into place only when complete, so
    an interrupted or failed run never leaves a dataset that looks whole."""
    remove_old_outputs(out)
    tmp = out.with_name(f".{out.name}.partial")
    remove_old_outputs(tmp)
    t0 = time.perf_counter()
    try:
        if cfg.data.source == "synthetic":
            stats = synthetic.generate(cfg.data.synthetic, tmp)
        elif cfg.data.source == "voc":
            stats = voc.prepare(cfg.data, tmp)
        else:
            stats = own.prepare(cfg.data, tmp)
        Prepared.open(tmp)  # complete: labels and split lists are there
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(out)
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    for w in cast(list, stats.pop("warnings", [])):  # own data's loud warnings
        log.warning("%s", w)
    log.info("prepared %s dataset in %s: %s", cfg.data.source, out, stats)
    data = Prepared.open(out)
    skipped = json.loads((out / "image_labels.json").read_text()).get("skipped", {})
    if skipped:
        log.warning("%d items were skipped (data.on_bad: skip); reasons in %s/image_labels.json, e.g. %s",
                    len(skipped), out, next(iter(skipped.values())))
    with stage_run(cfg, "prepare") as tr:
        tr.log_metrics({"images": stats["images"], "prepare_seconds": stats["seconds"],
                        "skipped": len(skipped), "classes": data.n_classes - 1})
