"""Stage ``headline``: the run in one line, the last thing `dvc repro` prints, and the only
metrics file DVC shows (``dvc exp show``, ``dvc metrics show``): the pseudo-mask mIoU on train
after CRF of the CAM baseline, of ISIM and of the random walk, the final model's val mIoU, and
the minutes the stages record. Five short columns, so that `dvc exp show --only-changed` in a
120-column terminal shows them beside a swept knob (DVC adds Experiment, Created, State and
Executor); the figures without CRF, the gains, per-round and per-epoch figures stay in the
stages' own metrics files (metrics/eval.json, ...), reports/, MLflow and ``dvc plots``."""
from __future__ import annotations

import logging
from pathlib import Path

from isim.config import Config
from isim.io import read_json, write_json
from isim.tracking import stage_run

log = logging.getLogger(__name__)

# headline key -> (file kind, key in that file): evaluate's summary, evaluate_segmenter's metrics
COLUMNS = {"cam": ("eval", "baseline_crf_miou"), "isim": ("eval", "isim_crf_miou"),
           "walk": ("eval", "isim_rw_crf_miou"), "final": ("segmenter", "val_miou")}


def headline(eval_metrics: dict, segmenter_metrics: dict, seconds: list[float]) -> dict[str, float]:
    sources = {"eval": eval_metrics.get("summary", {}), "segmenter": segmenter_metrics}
    out = {k: sources[kind][key] for k, (kind, key) in COLUMNS.items() if sources[kind].get(key) is not None}
    out["minutes"] = round(sum(seconds) / 60, 1)
    return out


def table(h: dict[str, float]) -> str:
    """Two aligned lines: the names, then the figures."""
    cells = [(k, f"{v:.2f}" if k != "minutes" else f"{v:.1f}") for k, v in h.items()]
    width = [max(len(k), len(v)) for k, v in cells]
    return "\n".join("  ".join(c[i].rjust(w) for c, w in zip(cells, width)) for i in (0, 1))


def run(cfg: Config, eval_metrics: Path, segmenter_metrics: Path, times: list[Path], out: Path) -> None:
    """``times``: the JSON files whose top-level ``seconds`` add up to the run's minutes (the
    stages' metrics and the mask sets' summaries)."""
    seconds = [float(read_json(p).get("seconds", 0.0)) for p in times]
    h = headline(read_json(eval_metrics), read_json(segmenter_metrics), seconds)
    write_json(out, h)
    with stage_run(cfg, "headline") as tr:
        tr.log_metrics({f"headline_{k}": v for k, v in h.items()}, headline=True)
        # a plain print: the run's result stays on screen whatever the logging level
        print("\nthis run: pseudo-mask mIoU on train after CRF (CAM baseline, ISIM, random walk), the final "
              "model's mIoU on val, minutes of the stages:\n"
              + table(h) + "\n", flush=True)
