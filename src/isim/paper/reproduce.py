"""``isim paper <table>``: run a paper table's experiments and write ours beside the paper's.

    isim paper table3 --seeds 1 --jobs 2        -> reports/paper/table3.{md,png,json}

Every run is the pipeline's own commands in ``<workdir>/<variant>/seed_<k>/`` (docs/results.md);
finished runs are reused, by this table and by any other that needs the same variant, so an
interrupted command continues where it stopped.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from isim.config import from_dict, overridden
from isim.errors import IsimError
from isim.io import write_json, write_text
from isim.paper import tables as tb
from isim.paper.seeds import Run, execute_all

log = logging.getLogger(__name__)


def _rounds(base: dict[str, Any]) -> int:
    cfg = from_dict(base)  # the defaults of keys the params leave out are Config's, nowhere else
    epochs, warm, freq = cfg.train.epochs, cfg.rounds.warmup_epochs, cfg.crf_freq
    return 1 + max(0, -(-(epochs - warm) // freq))  # warm-up round + one per regeneration + final


def table_runs(table: tb.Table, seeds: list[int], workdir: Path) -> dict[str, list[Run]]:
    return {v.key: [Run(workdir / v.key / f"seed_{s}", s, dict(v.overrides), table.random_walk) for s in seeds]
            for v in table.variants()}


def run(params: Path, name: str, seeds: int, jobs: int, workdir: Path, out: Path,
        extra: dict[str, Any] | None = None) -> str:
    """Run table ``name``'s experiments over seeds 0..seeds-1; write and return its markdown."""
    base = overridden(yaml.safe_load(Path(params).read_text()) or {}, extra or {})
    embedded = base.get("data", {}).get("source", "synthetic") == "synthetic"
    all_tables = tb.tables(embedded, _rounds(base))
    if name not in all_tables:
        raise IsimError(f"isim paper: unknown table {name!r}; choose one of {', '.join(all_tables)}")
    table = tb.without_noops(all_tables[name], base)
    runs = table_runs(table, list(range(seeds)), workdir)
    flat = [r for rs in runs.values() for r in rs]
    log.info("%s: %d runs (%d variants x %d seeds) in %s", name, len(flat), len(runs), seeds, workdir)
    done = iter(execute_all(flat, base, jobs))
    results = {key: [next(done) for _ in rs] for key, rs in runs.items()}
    n_rounds = max(len(r["rounds"]) for rs in results.values() for r in rs)
    # Fig. 4: as many columns as the longest run has rounds
    table = tb.without_noops(tb.tables(embedded, n_rounds)[name], base)
    paper = tb.paper_numbers().get(name)
    text = tb.markdown(table, results, paper)
    write_text(out / f"{name}.md", text)
    write_json(out / f"{name}.json", {"table": name, "params": str(params), "set": extra, "seeds": seeds,
                                      "runs": {k: rs for k, rs in results.items()}})
    tb.plot(table, results, paper, out / f"{name}.png")
    return text
