import pytest
import yaml

from isim.config import ConfigError, flatten, from_dict, load
from conftest import REPO, repo_params


def test_repo_params_load_and_sweep_knobs_are_top_level():
    cfg = load(REPO / "params.yaml")
    raw = repo_params()
    for key in ("threshold", "crf_freq", "lr_encoder", "lr_decoder", "lr_classifier"):
        assert key in raw, key
    assert cfg.threshold == raw["threshold"]
    assert cfg.data.source == "synthetic"


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"train\.epoch: unknown key"):
        from_dict({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"^thresh: unknown key"):
        from_dict({"thresh": 0.3})


@pytest.mark.parametrize("raw, key", [
    ({"threshold": 1.5}, "threshold"),
    ({"threshold": "high"}, "threshold"),
    ({"crf_freq": 0}, "crf_freq"),
    ({"train": {"epochs": 2.5}}, "train.epochs"),
    ({"train": {"warmup_epochs": 9, "epochs": 3}}, "train.warmup_epochs"),
    ({"model": {"arch": "fcn"}}, "model.arch"),
    ({"crf": {"enabled": "yes"}}, "crf.enabled"),
    ({"transform": {"cam_scales": []}}, "transform.cam_scales"),
    ({"data": {"synthetic": {"classes": ["a", "a"]}}}, "data.synthetic.classes"),
    ({"data": {"source": "own", "own": {"images": "i", "labels": "l", "classes": ["cat"],
                                        "class_map": {"dog": "hound"}}}}, "data.own.class_map.dog"),
])
def test_bad_value_is_named(raw, key):
    with pytest.raises(ConfigError) as e:
        from_dict(raw)
    assert str(e.value).startswith(key + ":"), str(e.value)


def test_load_names_the_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"lr_encoder": -1}))
    with pytest.raises(ConfigError, match=r"params\.yaml: lr_encoder: must be > 0"):
        load(p)
    with pytest.raises(ConfigError, match="file not found"):
        load(tmp_path / "missing.yaml")


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_cli_reports_a_bad_key_and_exits_2(tmp_path, capsys):
    from isim.cli import main
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"train": {"epochs": 0}}))
    assert main(["--params", str(p), "prepare", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "isim prepare: error:" in err and "train.epochs: must be >= 1" in err
    assert not (tmp_path / "out").exists()
