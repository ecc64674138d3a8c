"""Paper tables: the paper's numbers file, the table assembler on recorded runs, and real runs
over two seeds through `isim paper` and benchmarks/table2.py."""
import json
import re
import sys

import yaml

from conftest import REPO, run, tiny_params


def test_seeds_runs_real_pipeline_and_reuses_runs(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(train={"epochs": 2})))
    work, out = tmp_path / "work", tmp_path / "out"
    cmd = [sys.executable, "-m", "isim.cli", "--params", str(params), "paper", "seeds", "--seeds", "2",
           "--workdir", str(work), "--out", str(out)]
    run(cmd, tmp_path)
    report = json.loads((out / "seeds.json").read_text())
    runs = report["runs"]["default"]
    assert [r["seed"] for r in runs] == [0, 1]
    assert runs[0]["baseline"] != runs[1]["baseline"]  # other data and init per seed
    md = (out / "seeds.md").read_text()
    assert re.search(r"\| ISIM \+ CRF \| \d+\.\d\d ± \d+\.\d\d \|", md)
    assert (out / "seeds.png").stat().st_size > 1000
    seed_params = yaml.safe_load((work / "default" / "seed_1" / "params.yaml").read_text())
    assert seed_params["seed"] == 1 and seed_params["data"]["synthetic"]["seed"] == 1
    # benchmarks/table2.py reads the same finished runs (nothing reruns) and ends with the gain line
    stamp = (work / "default" / "seed_0" / "result.json").stat().st_mtime_ns
    r = run([sys.executable, str(REPO / "benchmarks" / "table2.py"), "--seeds", "2", "--params", str(params),
             "--workdir", str(work)], tmp_path)
    assert re.search(r"ISIM - CAM gain: [+-]\d+\.\d\d ± \d+\.\d\d mIoU over 2 seeds$", r.stdout.strip())
    assert (work / "default" / "seed_0" / "result.json").stat().st_mtime_ns == stamp
    # the same folders with other params are refused, never mixed into the table
    params.write_text(yaml.safe_dump(tiny_params(train={"epochs": 2}, threshold=0.2)))
    r = run(cmd, tmp_path, check=False)
    assert r.returncode == 2 and "made with other params" in r.stderr and "seed_0" in r.stderr
    # ... and so are runs made with other method code
    params.write_text(yaml.safe_dump(tiny_params(train={"epochs": 2})))
    (work / "default" / "seed_1" / "code.sha256").write_text("0" * 64 + "\n")
    r = run(cmd, tmp_path, check=False)
    assert r.returncode == 2 and "made with other code" in r.stderr and "seed_1" in r.stderr
