"""The check stage (the first of every `dvc repro`): bad weights settings stop it with the key
named, and a configuration without weights files validates without loading torch."""
import subprocess
import sys

import pytest
import yaml

from conftest import tiny_params
from isim.config import ConfigError, from_dict
from isim.stages import check


def test_a_missing_weights_file_stops_the_check_and_writes_nothing(tmp_path):
    out = tmp_path / "params-valid"
    cfg = from_dict(tiny_params(encoder={"weights": str(tmp_path / "nowhere.pth")}))
    with pytest.raises(ConfigError, match=r"encoder.weights: .*nowhere.pth is not a file"):
        check.run(cfg, out)
    assert not out.exists()


def test_the_check_of_a_config_without_weights_files_does_not_import_torch(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params()))
    code = ("import sys; from isim import config; from isim.stages import check; "
            f"check.run(config.load({str(params)!r}), __import__('pathlib').Path({str(tmp_path / 'ok')!r})); "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"  # every `dvc repro` after a params edit runs this stage first
    assert (tmp_path / "ok").read_text() == "params.yaml is valid\n"
