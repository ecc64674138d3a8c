"""The run in one line (stages/headline.py): what DVC and the terminal show after `dvc repro`."""
import json

import pytest

from isim.io import DataError
from isim.stages.headline import headline, run, table


def test_the_headline_takes_each_figure_from_its_stage_and_adds_up_the_minutes():
    ev = {"summary": {"baseline_miou": 40.0, "baseline_crf_miou": 45.5, "isim_miou": 50.25, "isim_crf_miou": 60.0,
                      "gain_crf": 14.5, "isim_rw_crf_miou": 63.0, "gain": 10.25}}
    h = headline(ev, {"val_miou": 58.0, "val_crf_miou": 61.0}, [60.0, 30.0, 90.0])
    assert h == {"cam": 45.5, "isim": 60.0, "walk": 63.0, "final": 58.0, "minutes": 3.0}
    names, figures = table(h).splitlines()
    assert names.split() == list(h) and figures.split()[-2:] == ["58.00", "3.0"]
    assert len(names) == len(figures)  # aligned columns
    # no masks (own data without ground truth): only what was measured
    assert list(headline({"summary": {}}, {}, [])) == ["minutes"]


def test_a_missing_or_broken_input_is_named(tmp_path, tiny_cfg):
    (tmp_path / "eval.json").write_text(json.dumps({"summary": {"isim_miou": 1.0}}))
    (tmp_path / "bad.json").write_text("{half")
    with pytest.raises(DataError, match=r"seg\.json: missing"):
        run(tiny_cfg, tmp_path / "eval.json", tmp_path / "seg.json", [], tmp_path / "out.json")
    with pytest.raises(DataError, match=r"bad\.json: not JSON"):
        run(tiny_cfg, tmp_path / "eval.json", tmp_path / "eval.json", [tmp_path / "bad.json"], tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()
