"""The run layout: one module names rounds, their checkpoints, masks and summaries."""
import json
import re

import pytest

from conftest import REPO
from isim import run_layout as layout
from isim.io import DataError
from isim.mask_scores import HoldoutScore, MaskSetSummary


def test_rounds_are_named_found_and_numbered_in_one_place(tmp_path):
    ckpts, pseudo = tmp_path / "checkpoints", tmp_path / "pseudo"
    assert layout.last_checkpoint(ckpts) is None
    with pytest.raises(DataError, match="run train_isim first"):
        layout.final_checkpoint(ckpts)
    with pytest.raises(DataError, match="no round_XX directories"):
        layout.rounds_of(pseudo)
    assert layout.rounds_of(pseudo, required=False) == []
    ckpts.mkdir()
    for r in (2, 100, 10, 1):
        layout.round_checkpoint(ckpts, r).touch()
        layout.crf_dir(layout.round_dir(pseudo, r)).mkdir(parents=True)
    (pseudo / ".round_11.partial").mkdir()  # a killed round is not a round
    assert layout.final_checkpoint(ckpts).name == "round_100.pt"
    assert [layout.round_number(d) for d in layout.rounds_of(pseudo)] == [1, 2, 10, 100]
    assert layout.round_number(layout.round_checkpoint(ckpts, 7)) == 7
    with pytest.raises(DataError, match="summary.json: missing"):
        layout.holdout_scores(layout.round_dir(pseudo, 1))
    summary = MaskSetSummary(12, 1.0, 12.0, 0, 1, 0.25, True, {"label_acc": 90.0},
                             holdout=HoldoutScore(40.0, 50.0, 4, 0, 0.5), round=1, after_epoch=3)
    layout.summary_path(layout.round_dir(pseudo, 1)).write_text(json.dumps(summary.to_json()))
    assert layout.read_summary(layout.round_dir(pseudo, 1)) == summary  # the JSON is its serialisation
    assert layout.holdout_scores(layout.round_dir(pseudo, 1)).miou("crf") == 50.0
    layout.summary_path(layout.round_dir(pseudo, 2)).write_text(json.dumps({"holdout": {"crf": {"miou": 50.0}}}))
    with pytest.raises(DataError, match="round_02/summary.json: not a mask-set summary"):
        layout.read_summary(layout.round_dir(pseudo, 2))


def test_no_other_module_spells_a_round_folder_or_checkpoint_name():
    spelled = re.compile(r"round_\{r:02d\}|round_\*|\"round_\d\d")
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "src/isim").rglob("*.py")
                 if p.name != "run_layout.py" and spelled.search(p.read_text())]
    assert offenders == []


def test_project_paths_come_from_dvc_yaml_and_a_missing_one_is_named(tmp_path):
    from isim.errors import IsimError
    from isim.project import Project
    here = Project(REPO)
    assert here.arg("evaluate_segmenter", "--best") == REPO / "reports/best_model.json"
    assert here.arg("prepare", "--out") == REPO / "data/prepared"
    (tmp_path / "dvc.yaml").write_text("stages:\n  prepare:\n    cmd: isim prepare --out elsewhere/data\n")
    assert Project(tmp_path).arg("prepare", "--out") == tmp_path / "elsewhere/data"  # a project's own layout
    with pytest.raises(IsimError, match="passes no --best"):
        Project(tmp_path).arg("prepare", "--best")
    with pytest.raises(IsimError, match="no stage 'evaluate'"):
        Project(tmp_path).arg("evaluate", "--report")
    with pytest.raises(IsimError, match="dvc.yaml: not found"):
        Project(tmp_path / "nowhere").command("prepare")
