"""Paper tables: the paper's numbers file, the table assembler on recorded runs, and real runs
over two seeds through `isim paper` and benchmarks/table2.py."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import benchmark, run, tiny_params
from isim.errors import IsimError
from isim.paper import tables as tb

RECORDED = Path(__file__).parents[1] / "fixtures" / "paper"


def test_paper_numbers_parse_and_bad_rows_are_named(tmp_path):
    numbers = tb.paper_numbers()
    assert numbers["table2"]["rows"]["DeepLabCAM"][0] == 54.89  # ResNet-50, as printed
    assert numbers["table7"]["rows"]["DeepLabCAM+RW"][0] == 74.25
    for name in ("table2", "table3", "table4", "table5", "table6", "table7", "fig4"):
        assert numbers[name]["ref"]
    bad = tmp_path / "numbers.yaml"
    bad.write_text(yaml.safe_dump({"table9": {"ref": "x", "columns": ["a", "b"], "rows": {"CAM": [1.0]}}}))
    with pytest.raises(IsimError, match="table9.CAM: needs one number per column"):
        tb.paper_numbers(bad)


def _recorded() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RECORDED.glob("seed_*.json"))]


def test_assembler_on_recorded_runs():
    """Recorded results of real embedded runs: cells are the mean ± sample std of the runs'
    own figures, the gain is per seed, missing rounds read '-'."""
    results = _recorded()
    assert len(results) >= 2
    cam = [r["baseline"]["crf_miou"] for r in results]
    isim = [r["rounds"][-1]["crf_miou"] for r in results]
    m, s, n = tb.cell(results, "cam_crf")
    assert n == len(results) and m == pytest.approx(np.mean(cam)) and s == pytest.approx(np.std(cam, ddof=1))
    g = tb.gain(results)
    assert g[0] == pytest.approx(np.mean(np.subtract(isim, cam)))
    table = tb.tables(embedded=True, rounds=len(results[0]["rounds"]) + 1)["fig4"]
    default = table.variants()[0]
    text = tb.markdown(table, {default.key: results}, tb.paper_numbers()["fig4"])
    row = next(line for line in text.splitlines() if line.startswith("| fixed frequency"))
    cells = [c.strip() for c in row.strip("|").split("|")[1:]]
    assert cells[-2] == "-" and "±" in cells[0] and "±" in cells[-1]  # one round more than the runs have
    assert "| until the losses converge | -" in text  # no converge runs given
    assert "Fig. 4" in text and "plot only" in text


def test_seeds_report_has_the_random_walk_rows_when_every_seed_walked():
    table2 = benchmark("table2")
    results = _recorded()
    walks = [(70.0, 69.0), (72.0, 70.5), (71.0, 72.0)][:len(results)]
    for r, (raw, crf) in zip(results, walks):
        r["random_walk"] = {"raw_miou": raw, "crf_miou": crf, "raw_precision": 71.0, "raw_recall": 95.0,
                            "crf_precision": 69.0, "crf_recall": 99.0}
    text = table2.seeds_report(results)
    raw = [w[0] for w in walks]
    assert f"| ISIM + RW | {np.mean(raw):.2f} ± {np.std(raw, ddof=1):.2f} | 71.00 ± 0.00 | 95.00 ± 0.00 |" in text
    isim = [r["rounds"][-1]["raw_miou"] for r in results]
    assert f"ISIM + RW - ISIM: {raw[0] - isim[0]:+.2f}" in text
    assert text.splitlines()[-1].startswith("ISIM - CAM gain:")  # still the last line
    del results[0]["random_walk"]  # a seed without the walk: no half-filled rows
    assert "ISIM + RW" not in table2.seeds_report(results)


def test_every_table_has_a_cell_per_column():
    for embedded in (True, False):
        for name, t in tb.tables(embedded, rounds=5).items():
            assert all(len(cells) == len(t.columns) for cells in t.cells.values()), name
    voc = tb.tables(False, 5)["table2"]
    assert voc.columns == tb.paper_numbers()["table2"]["columns"]  # the paper's backbones, in its order


def test_a_variant_that_restates_the_params_shares_the_default_runs():
    """Table 6 on the embedded data lists the params' own crop: that column reads the default
    runs instead of training the same thing again in a folder of its own."""
    base = {"transform": {"crop": 112, "resize_long": [96, 160]}, "encoder": {"backbone_kwargs": {}}}
    table = tb.without_noops(tb.tables(embedded=True, rounds=5)["table6"], base)
    by_name = {v.name: v for v in table.variants()}
    own = by_name["crop 112"]
    assert own.key == "default" and own.overrides == ()
    others = [v for n, v in by_name.items() if n != "crop 112"]
    assert len(others) == 3 and all(v.key != "default" and v.overrides for v in others)
    # an override the params do not hold is kept
    t2 = tb.without_noops(tb.tables(embedded=True, rounds=5)["table2"], base)
    assert sorted(v.key == "default" for v in t2.variants()) == [False, True]


def test_unknown_table_is_named(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params()))
    r = run([sys.executable, "-m", "isim.cli", "--params", str(params), "paper", "table99",
             "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "o")], tmp_path, check=False)
    assert r.returncode == 2 and "unknown table 'table99'" in r.stderr and "table7" in r.stderr
