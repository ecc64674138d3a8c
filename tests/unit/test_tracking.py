"""Tracking never costs results: an unreachable tracking server is a warning, or an error under
`tracking.strict` (the real servers: tests/integration/test_tracking_servers.py)."""
from pathlib import Path

import yaml

from conftest import bin_path, free_port, run, stage_cmds, tiny_params

STAGE_CMDS = stage_cmds()


def _workdir(tmp_path: Path, **over) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(**over), sort_keys=False))
    return tmp_path


def test_unreachable_tracking_costs_no_results(tmp_path):
    work = _workdir(tmp_path, tracking={"enabled": True})
    env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    r = run([bin_path("isim"), *STAGE_CMDS["prepare"][1:]], work, env=env)
    assert r.stderr.count("unreachable") == 1
    assert (work / "data/prepared/image_labels.json").is_file()
    strict = _workdir(tmp_path / "strict", tracking={"enabled": True, "strict": True})
    r = run([bin_path("isim"), *STAGE_CMDS["prepare"][1:]], strict, env=env, check=False)
    assert r.returncode == 2 and "unreachable (tracking.strict is true)" in r.stderr
