"""The paper's tables as experiments: which runs each needs, and our figures beside the paper's.

A table is a grid of cells; each cell is one figure (``cam``, ``cam_crf``, ``isim``,
``isim_crf``, ``round_N``) of one *variant* (params overrides over the project's params),
averaged over seeds. Variants differ between the embedded data (sizes a 2-core CPU runs in under
an hour) and VOC or own data (the paper's settings, for GPU machines). Runs are shared between
tables: Table 3 and Table 5 read the same runs. Method code never imports this module.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from isim.config import flatten
from isim.errors import IsimError

NUMBERS = Path(__file__).with_name("numbers.yaml")
SUMMARY_ROWS = [("CAM", "cam"), ("CAM + CRF", "cam_crf"), ("ISIM", "isim"), ("ISIM + CRF", "isim_crf")]
RW_ROWS = [("ISIM + RW", "rw"), ("ISIM + RW + CRF", "rw_crf")]


def paper_numbers(path: Path = NUMBERS) -> dict[str, dict[str, Any]]:
    """The paper's tables; every row has one number per column (checked)."""
    tables = yaml.safe_load(Path(path).read_text())
    for name, t in tables.items():
        for row, values in (t.get("rows") or {}).items():
            if len(values) != len(t["columns"]) or not all(isinstance(v, int | float) for v in values):
                raise IsimError(f"{path}: {name}.{row}: needs one number per column ({len(t['columns'])})")
    return tables


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        """Folder name: the same overrides give the same runs, whichever table asks."""
        text = json.dumps(sorted(self.overrides), default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:10] if self.overrides else "default"


def V(name: str, **overrides: Any) -> Variant:  # noqa: N802 - reads as a table row below
    return Variant(name, tuple((k.replace("__", "."), v) for k, v in overrides.items()))


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    cells: dict[str, list[tuple[Variant, str]]]  # row -> one (variant, figure) per column
    note: str = ""
    random_walk: bool = False  # its runs go on to AffinityNet and the random walk

    def variants(self) -> list[Variant]:
        seen: dict[str, Variant] = {}
        for row in self.cells.values():
            for v, _ in row:
                seen.setdefault(v.key, v)
        return list(seen.values())


_MISSING = object()


def without_noops(table: Table, base: dict[str, Any]) -> Table:
    """The table with every override that restates ``base``'s own value dropped, so a variant
    equal to the params shares the default runs (Table 6's crop on the embedded data)."""
    own = flatten(base)

    def strip(v: Variant) -> Variant:
        return replace(v, overrides=tuple((k, x) for k, x in v.overrides if own.get(k, _MISSING) != x))
    return replace(table, cells={row: [(strip(v), f) for v, f in spec] for row, spec in table.cells.items()})


def _cam_vs(variants: list[Variant], crf: bool = False) -> dict[str, list[tuple[Variant, str]]]:
    s = "_crf" if crf else ""
    return {"CAM": [(v, "cam" + s) for v in variants], "DeepLabCAM": [(v, "isim" + s) for v in variants]}


def _unet(learnable: Variant, bilinear: Variant, crf: bool = False) -> dict[str, list[tuple[Variant, str]]]:
    s = "_crf" if crf else ""
    return {"train": [(learnable, "cam" + s), (learnable, "isim" + s), (bilinear, "isim" + s)]}


def tables(embedded: bool, rounds: int) -> dict[str, Table]:
    """The experiments of every table: ``embedded`` for the synthetic data on a CPU, else the
    paper's backbones and sizes (VOC or own data on GPUs). ``rounds``: ISIM rounds of a run."""
    unet_cols = ["CAM", "UNetCAM learnable", "UNetCAM non-learnable"]
    if embedded:
        backbones = [V("ResNet-18 slim, 1 block/stage"),
                     V("ResNet-18 slim, 2 blocks/stage", encoder__backbone_kwargs__layers=[2, 2, 2, 2])]
        sizes = [(f"crop {c}", V(f"crop {c}", transform__crop=c, transform__resize_long=[r0, r1]))
                 for c, r0, r1 in [(80, 72, 112), (96, 80, 136), (112, 96, 160), (128, 112, 176)]]
        small: dict[str, Any] = {"data__synthetic__n_train": 400}
    else:
        backbones = [V(n, encoder__backbone=b) for n, b in [
            ("ResNet-50", "resnet50"), ("ResNet-101", "resnet101"), ("ResNet-152", "resnet152"),
            ("ResNeSt-50", "resnest50d"), ("ResNeSt-101", "resnest101e"), ("ResNeSt-200", "resnest200e"),
            ("ResNeSt-269", "resnest269e")]]
        sizes = [(f"{c}x{c}", V(f"crop {c}", transform__crop=c)) for c in (256, 320, 448, 512)]
        small = {"data__voc__train_split": "train"}
    learn = V("UNetCAM learnable", model__arch="unetcam", model__unet_upsample="learnable")
    bilin = V("UNetCAM non-learnable", model__arch="unetcam", model__unet_upsample="bilinear")
    learn4 = V("UNetCAM learnable, fewer images", model__arch="unetcam", model__unet_upsample="learnable", **small)
    bilin4 = V("UNetCAM non-learnable, fewer images", model__arch="unetcam", model__unet_upsample="bilinear", **small)
    fixed, converge = V("fixed frequency"), V("until the losses converge", rounds__regen="converge")
    default = V("default")
    return {
        "table2": Table("Table 2: CAM vs DeepLabCAM per backbone (pseudo-mask mIoU, train)",
                        [v.name for v in backbones], _cam_vs(backbones)),
        "table3": Table("Table 3: CAM vs UNetCAM (pseudo-mask mIoU, train)", unet_cols, _unet(learn, bilin)),
        "table4": Table("Table 4: CAM vs UNetCAM on fewer training images (pseudo-mask mIoU, train)",
                        unet_cols, _unet(learn4, bilin4),
                        note="the paper's train split instead of trainaug; on the embedded data half the images"),
        "table5": Table("Table 5: CAM + dCRF vs UNetCAM + dCRF (pseudo-mask mIoU, train)", unet_cols,
                        _unet(learn, bilin, crf=True)),
        "table6": Table("Table 6: input sizes (crop; pseudo-mask mIoU, train)", [n for n, _ in sizes],
                        _cam_vs([v for _, v in sizes])),
        "fig4": Table("Fig. 4: ISIM pseudo-mask mIoU per round, fixed vs converge regeneration",
                      [f"round {r}" for r in range(1, rounds + 1)] + ["final + CRF"],
                      {v.name: [(v, f"round_{r}") for r in range(1, rounds + 1)] + [(v, "isim_crf")]
                       for v in (fixed, converge)},
                      note="a converge run may take other rounds: its missing rounds read '-'; the last "
                           "round is made by the final model"),
        "table7": Table("Table 7: CAM, DeepLabCAM and the random walk per backbone (pseudo-mask mIoU, train)",
                        [v.name for v in backbones],
                        {**_cam_vs(backbones), "DeepLabCAM+RW": [(v, "rw") for v in backbones],
                         "DeepLabCAM+RW+CRF": [(v, "rw_crf") for v in backbones]}, random_walk=True),
        "seeds": Table("CAM vs ISIM over seeds (pseudo-mask mIoU, train)", ["mIoU"],
                       {name: [(default, key)] for name, key in SUMMARY_ROWS}),
    }


def figures(result: dict[str, Any]) -> dict[str, float]:
    """One run's figures by name (see the module docstring)."""
    last = result["rounds"][-1]
    out = {"cam": result["baseline"]["raw_miou"], "cam_crf": result["baseline"]["crf_miou"],
           "isim": last["raw_miou"], "isim_crf": last["crf_miou"]}
    out.update({f"round_{r['round']}": r["raw_miou"] for r in result["rounds"]})
    out.update({f"round_{r['round']}_crf": r["crf_miou"] for r in result["rounds"]})
    for kind in ("raw", "crf"):
        out[f"cam_{kind}_precision"] = result["baseline"][f"{kind}_precision"]
        out[f"cam_{kind}_recall"] = result["baseline"][f"{kind}_recall"]
        for r in result["rounds"]:
            out[f"round_{r['round']}_{kind}_precision"] = r[f"{kind}_precision"]
            out[f"round_{r['round']}_{kind}_recall"] = r[f"{kind}_recall"]
        out[f"isim_{kind}_precision"], out[f"isim_{kind}_recall"] = last[f"{kind}_precision"], last[f"{kind}_recall"]
    if "random_walk" in result:
        for kind, suffix in (("raw", ""), ("crf", "_crf")):
            out["rw" + suffix] = result["random_walk"][f"{kind}_miou"]
            out[f"rw_{kind}_precision"] = result["random_walk"][f"{kind}_precision"]
            out[f"rw_{kind}_recall"] = result["random_walk"][f"{kind}_recall"]
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value); NaN mean when there is none."""
    if not values:
        return math.nan, math.nan
    a = np.asarray(values, float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def cell(results: list[dict[str, Any]], figure: str) -> tuple[float, float, int]:
    vals = [f[figure] for f in map(figures, results) if figure in f]
    return (*mean_std(vals), len(vals))


def fmt(m: float, s: float, n: int) -> str:
    if n == 0 or math.isnan(m):
        return "-"
    return f"{m:.2f} ± {s:.2f}" if n > 1 else f"{m:.2f}"


def gain(results: list[dict[str, Any]], crf: bool = True) -> tuple[float, float, int]:
    """ISIM - CAM per seed (the final round against the baseline of the same seed)."""
    s = "_crf" if crf else ""
    d = [f["isim" + s] - f["cam" + s] for f in map(figures, results)]
    return (*mean_std(d), len(d))


def markdown(table: Table, results: dict[str, list[dict[str, Any]]], paper: dict[str, Any] | None) -> str:
    """Our table (mean ± std over seeds), then the paper's when it has one."""
    lines = [f"### {table.title}", "", "| | " + " | ".join(table.columns) + " |",
             "| --- |" + " ---: |" * len(table.columns)]
    for row, spec in table.cells.items():
        lines.append(f"| {row} | " + " | ".join(fmt(*cell(results.get(v.key, []), fig)) for v, fig in spec) + " |")
    seeds = sorted({r["seed"] for rs in results.values() for r in rs})
    lines += ["", f"Ours: mean ± std over seeds {seeds} (one figure: one seed)."]
    if table.note:
        lines.append(f"Note: {table.note}.")
    if paper:
        lines += ["", f"Paper, {paper['ref']}" + (f" ({paper['note']})" if paper.get("note") else "")
                  + (":" if paper.get("rows") else ".")]
        if paper.get("rows"):
            lines += ["", "| | " + " | ".join(paper["columns"]) + " |", "| --- |" + " ---: |" * len(paper["columns"])]
            lines += [f"| {row} | " + " | ".join(f"{v:.2f}" for v in vals) + " |"
                      for row, vals in paper["rows"].items()]
    return "\n".join(lines) + "\n"


def plot(table: Table, results: dict[str, list[dict[str, Any]]], paper: dict[str, Any] | None, path: Path) -> None:
    """Grouped bars: ours (with std) and, beside, the paper's table."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from isim.io import atomic_path
    panels = 2 if paper and paper.get("rows") else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 3.6), squeeze=False)
    groups = [(row, [cell(results.get(v.key, []), f)[:2] for v, f in spec]) for row, spec in table.cells.items()]
    _bars(axes[0][0], table.columns, groups, "ours")
    if panels == 2 and paper:
        _bars(axes[0][1], paper["columns"], [(r, [(v, 0.0) for v in vals]) for r, vals in paper["rows"].items()],
              "paper (VOC)")
    fig.suptitle(table.title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _bars(ax: Any, columns: list[str], groups: list[tuple[str, list[tuple[float, float]]]], title: str) -> None:
    x = np.arange(len(columns))
    w = 0.8 / max(len(groups), 1)
    for i, (row, vals) in enumerate(groups):
        ax.bar(x + i * w, [m for m, _ in vals], w, yerr=[s for _, s in vals], label=row, capsize=2)
    ax.set_xticks(x + w * (len(groups) - 1) / 2, columns, fontsize=7, rotation=20)
    ax.set_ylabel("mIoU")
    ax.set_ylim(0, 125)  # the legend goes above the bars (mIoU <= 100), never over them
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", ncol=2)
