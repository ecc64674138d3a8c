import json

import pytest
import yaml

from conftest import REPO, repo_params
from isim.config import (
    Config,
    ConfigError,
    apply_preset,
    flatten,
    from_dict,
    load,
    merged,
    overridden,
    parse_sets,
    schema,
    with_preset,
)


def test_repo_params_load_complete_and_sweep_knobs_are_top_level():
    cfg = load(REPO / "params.yaml")
    raw = repo_params()
    for key in ("threshold", "crf_freq", "lr_encoder", "lr_decoder", "lr_classifier", "seed"):
        assert key in raw, key
    assert cfg.threshold == raw["threshold"]
    assert cfg.data.source == "synthetic"
    # every setting is written in params.yaml, so DVC sees every value a stage uses
    free_form = ("encoder.backbone_kwargs", "data.own.class_map", "tune.space", "tune.overrides")

    def settings(d):
        return {k for k in flatten(d) if not k.startswith(free_form)}
    assert settings(cfg.to_dict()) == settings(raw)


def test_every_shipped_preset_applies_and_validates(tmp_path):
    presets = sorted((REPO / "pipelines").glob("*.yaml"))
    assert presets, "no presets shipped"
    for preset in presets:
        params = tmp_path / f"{preset.stem}.yaml"
        params.write_text((REPO / "params.yaml").read_text())
        apply_preset(params, preset)
        cfg = load(params)
        over = yaml.safe_load(preset.read_text())
        for key, value in flatten(over).items():
            got = flatten(cfg.to_dict()).get(key, {} if value == {} else None)
            if isinstance(value, list) and value and isinstance(value[0], dict):  # more_sources: defaults filled
                assert len(got) == len(value) and all(v.items() <= g.items() for v, g in zip(value, got)), key
                continue
            assert got == value, (preset.name, key)
        assert "# ISIM parameters" in params.read_text()  # comments kept
        # the benchmarks' in-memory form gives what `isim params` writes
        assert from_dict(with_preset(repo_params(), over)) == cfg, preset.name
    voc = load(tmp_path / "voc.yaml")
    assert voc.data.source == "voc" and voc.encoder.backbone_kwargs == {} and voc.encoder.backbone == "resnet50"


def test_a_preset_with_a_bad_key_leaves_params_untouched(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    before = params.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml over .*params.yaml: train\.epoch: unknown key"):
        apply_preset(params, bad)
    assert params.read_text() == before


def test_committed_schema_is_current():
    assert (REPO / "params.schema.json").read_text() == schema(), "run: isim schema --out params.schema.json"
    s = json.loads(schema())
    assert s["additionalProperties"] is False and "threshold" in s["properties"]


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"train\.epoch: unknown key"):
        from_dict({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"^thresh: unknown key"):
        from_dict({"thresh": 0.3})


@pytest.mark.parametrize("raw, key, says", [
    ({"threshold": 1.5}, "threshold", "less than 1 (got 1.5)"),
    ({"threshold": "high"}, "threshold", "valid number (got 'high')"),
    ({"crf_freq": 0}, "crf_freq", "greater than or equal to 1"),
    ({"train": {"epochs": 2.5}}, "train.epochs", "valid integer (got 2.5)"),
    ({"rounds": {"warmup_epochs": 9}, "train": {"epochs": 3}}, "rounds.warmup_epochs", "<= train.epochs (3)"),
    ({"model": {"arch": "fcn"}}, "model.arch", "'deeplabcam' or 'unetcam'"),
    ({"crf": {"enabled": "yes"}}, "crf.enabled", "valid boolean (got 'yes')"),
    ({"cam": {"scales": []}}, "cam.scales", "at least 1 item"),
    ({"transform": {"std": [1, 0, 1]}}, "transform.std[1]", "greater than 0"),
    ({"runtime": {"device": "gpu"}}, "runtime.device", "got 'gpu'"),
    ({"data": {"synthetic": {"classes": ["a", "a"]}}}, "data.synthetic.classes", "distinct"),
    ({"encoder": {"pretrained": True, "weights": "w.pt"}}, "encoder.weights", "not both"),
    ({"data": {"source": "own", "own": {"images": "i", "labels": "l", "names": "n", "classes": ["cat"],
                                        "class_map": {"dog": "hound"}}}}, "data.own.class_map.dog", "hound"),
])
def test_bad_value_is_named(raw, key, says):
    with pytest.raises(ConfigError) as e:
        from_dict(raw)
    assert str(e.value).startswith(key + ":") and says in str(e.value), str(e.value)


def test_defaults_live_in_one_place():
    assert Config().data.synthetic.n_train == 800 and Config().threshold == 0.3


def test_load_names_the_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"lr_encoder": -1}))
    with pytest.raises(ConfigError, match=r"params\.yaml: lr_encoder: Input should be greater than 0 \(got -1\)"):
        load(p)
    with pytest.raises(ConfigError, match="file not found"):
        load(tmp_path / "missing.yaml")


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_merged_layers_and_dotted_overrides():
    base = {"a": {"b": 1, "c": [1, 2], "k": {"x": 1}}, "e": 3}
    assert merged(base, {"a": {"c": [9]}}, {"a": {"k": {"y": 2}}}) == {
        "a": {"b": 1, "c": [9], "k": {"x": 1, "y": 2}}, "e": 3}  # mappings merged, lists replaced
    # dvc's -S form: a mapping value replaces the old one, missing sections are made, base untouched
    assert overridden(base, {"a.k": {"y": 2}, "f.g": None, "e": 0.25}) == {
        "a": {"b": 1, "c": [1, 2], "k": {"y": 2}}, "e": 0.25, "f": {"g": None}}
    assert base == {"a": {"b": 1, "c": [1, 2], "k": {"x": 1}}, "e": 3}


def test_cli_reports_a_bad_key_and_exits_2(tmp_path, capsys):
    from isim.cli import main
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"train": {"epochs": 0}}))
    assert main(["--params", str(p), "prepare", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "isim prepare: error:" in err and "train.epochs: Input should be greater than or equal to 1" in err
    assert not (tmp_path / "out").exists()


def test_the_voc_preset_carries_the_photo_settings():
    photo = flatten(yaml.safe_load((REPO / "pipelines/photo.yaml").read_text()))
    voc = flatten(yaml.safe_load((REPO / "pipelines/voc.yaml").read_text()))
    sizes = {k: v for k, v in photo.items() if k.startswith(("transform.", "cam.", "crf."))}
    assert sizes and {k: voc.get(k) for k in sizes} == sizes
    # own photos start from the offline ImageNet encoder; VOC keeps the paper's ResNet-50
    assert photo["encoder.weights"] == "package" and photo["lr_encoder"] < 0.1
    assert voc["encoder.backbone"] == "resnet50" and voc["encoder.pretrained"] is True
    embedded = flatten(yaml.safe_load((REPO / "params.yaml").read_text()))
    assert embedded["transform.crop"] < photo["transform.crop"]  # the committed params are not photo-sized


def test_set_pairs_parse_as_yaml_and_a_bad_one_is_named():
    assert parse_sets(["train.epochs=3", "cam.scales=[1.0, 0.5]", "tune.study=a=b"]) == {
        "train.epochs": 3, "cam.scales": [1.0, 0.5], "tune.study": "a=b"}
    with pytest.raises(ConfigError, match="'train.epochs'"):
        parse_sets(["train.epochs"])
