"""dvc.yaml must declare everything a stage reads: run each stage of the tiny pipeline, record
the params keys and isim modules it actually used, and compare with its `params` and `deps`."""
import json
import sys
from pathlib import Path

import yaml

from conftest import REPO, run, tiny_params

# where and how a stage runs, never what it computes (README: "Parameters and experiments")
UNLISTED_PARAMS = ("runtime", "tracking")
# argument parsing, typed config (its values are the params), errors and MLflow code (with the
# dvc.yaml reader it finds the dataset's DVC hash by)
UNLISTED_MODULES = {"__init__.py", "cli.py", "config.py", "errors.py", "tracking.py", "mlflow_session.py",
                    "project.py", "visualize.py", "stages/__init__.py"}


def _covered(item: str, declared: list[str], sep: str) -> bool:
    return any(item == d or item.startswith(d + sep) for d in declared)


def _stages() -> dict[str, tuple[dict, list[str]]]:
    """Every stage of dvc.yaml, with the arguments the probe runs."""
    return {name: (stage, stage["cmd"].split()[1:])
            for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items()}


def test_stages_declare_the_params_and_modules_they_use(tmp_path):
    params = tiny_params()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    src = REPO / "src"
    problems = []
    for name, (stage, argv) in _stages().items():
        out = tmp_path / f"{name}.json"
        run([sys.executable, str(Path(__file__).parents[1] / "stage_probe.py"), str(out), "--", *argv], tmp_path)
        used = json.loads(out.read_text())
        declared = [p if isinstance(p, str) else next(iter(p)) for p in stage.get("params", [])]
        whole_file = "params.yaml" in declared  # `- params.yaml:` lists every key (the check stage)
        for key in used["params"]:
            # reaching a section on the way to a listed key of it (affinity -> affinity.radius) reads no value
            on_the_way = any(d.startswith(key + ".") for d in declared)
            if not (whole_file or on_the_way or key.startswith(UNLISTED_PARAMS) or _covered(key, declared, ".")):
                problems.append(f"{name} reads params key {key!r} but does not list it")
        deps = [d for d in stage["deps"] if d.startswith("src/")]
        for file in used["modules"]:
            rel = Path(file).resolve().relative_to(src.resolve()).as_posix()
            inner = rel.removeprefix("isim/")
            if inner in UNLISTED_MODULES or (inner.endswith("__init__.py") and Path(file).stat().st_size == 0):
                continue
            if not _covered(f"src/{rel}", deps, "/"):
                problems.append(f"{name} runs src/{rel} but does not list it in deps")
        assert used["params"], f"{name}: nothing recorded; the probe is broken"
    assert not problems, "\n".join(problems)


def test_the_probe_sees_an_undeclared_read(tmp_path):
    """The check above can fail: a stage reading a key its entry omits is reported."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    out = tmp_path / "probe.json"
    run([sys.executable, str(Path(__file__).parents[1] / "stage_probe.py"), str(out), "--",
         "prepare", "--out", "data/prepared"], tmp_path)
    used = json.loads(out.read_text())
    assert "data.synthetic.n_train" in used["params"] and "threshold" not in used["params"]
    assert not _covered("data.synthetic.n_train", ["train"], ".")
    assert any(m.endswith("isim/data/synthetic.py") for m in used["modules"])
