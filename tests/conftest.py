"""Shared fixtures: tiny configurations, the sample data shipped under tests/fixtures."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from isim.config import merged

# Each xdist worker, and every process a test starts, gets its share of the cores as torch / BLAS
# threads (set before anything imports torch). Left at torch's default, two busy workers run four
# OpenMP threads on two cores, and threads waiting for a core spin: a stage then takes several
# times as long. A run without xdist keeps the default.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
INTEGRATION = Path(__file__).resolve().parent / "integration"
VOC_SAMPLE = FIXTURES / "voc_sample" / "VOCdevkit" / "VOC2012"
COCO_SAMPLE = FIXTURES / "coco_sample"
# the COCO sample's classes onto VOC's
VOC_MAP = {"airplane": "aeroplane", "bicycle": "bicycle", "bird": "bird", "boat": "boat", "bottle": "bottle",
           "bus": "bus", "car": "car", "cat": "cat", "chair": "chair", "cow": "cow",
           "dining table": "diningtable", "dog": "dog", "horse": "horse", "motorcycle": "motorbike",
           "person": "person", "potted plant": "pottedplant", "sheep": "sheep", "couch": "sofa",
           "train": "train", "tv": "tvmonitor"}
VOC = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
       "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
HORSE_SAMPLE = FIXTURES / "horse_sample"
MSRC_SAMPLE = FIXTURES / "msrc_sample"

# a pipeline small enough for seconds on 2 cores, same code paths as the real one
TINY = {
    "crf_freq": 1,
    "data": {"synthetic": {"n_train": 12, "n_val": 4, "size": 64, "body_size": [30, 44]}},
    "transform": {"resize_long": [56, 72], "crop": 56},
    "cam": {"scales": [1.0, 0.5]},
    "encoder": {"backbone": "resnet18", "backbone_kwargs": {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]}},
    "model": {"decoder_channels": 16},
    "train": {"epochs": 3, "batch_size": 4},
    "rounds": {"warmup_epochs": 1},
    "crf": {"bilateral_sxy": 10.0, "bilateral_srgb": 20.0, "bilateral_compat": 5.0},
    "affinity": {"radius": 3, "feature_channels": 32, "epochs": 2, "batch_size": 4},
    "segmenter": {"decoder_channels": 16, "epochs": 2, "batch_size": 4, "scales": [1.0, 0.5]},
    "runtime": {"crf_workers": 0},
    "eval": {"thresholds": [0.2, 0.3], "grid_images": 2},
    "tracking": {"enabled": False},
}


def pytest_collection_modifyitems(items):
    """The folder is the tier: every test under ``tests/integration`` (real servers, `dvc repro`,
    torchrun, whole studies) is marked ``slow``; ``tests/unit`` is the edit-test tier
    (``pytest -m "not slow"``). The two workers take whole files in collection order (pyproject:
    ``--dist loadfile --no-loadscope-reorder``; xdist's own order hands out the files with the most
    tests first, so the longest file came among the last): the slow files go first, so the many
    quick files even out the end. Within a file the order stays."""
    for item in items:
        if INTEGRATION in item.path.parents:
            item.add_marker(pytest.mark.slow)
        elif item.get_closest_marker("slow"):
            raise pytest.UsageError(f"{item.nodeid}: a slow test belongs under tests/integration")
    items.sort(key=lambda item: INTEGRATION not in item.path.parents)  # stable


def stage_cmds(dvc_yaml: Path = REPO / "dvc.yaml") -> dict[str, list[str]]:
    """Each stage's command line from dvc.yaml (the one place paths are written)."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: shlex.split(s["cmd"]) for name, s in stages.items()}


PIPELINE = set(stage_cmds())  # every stage of dvc.yaml


def repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def tiny_params(**over) -> dict:
    return merged(repo_params(), TINY, over)


@pytest.fixture
def tiny_cfg():
    from isim.config import from_dict
    return from_dict(tiny_params())


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A prepared tiny synthetic dataset (read-only for tests)."""
    from isim.config import from_dict
    from isim.data.prepared import Prepared
    from isim.data.synthetic import generate
    root = tmp_path_factory.mktemp("tiny") / "prepared"
    generate(from_dict(tiny_params()).data.synthetic, root)
    return Prepared.open(root)


def benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (benchmarks/ is not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bin_path(name: str) -> str:
    """A console script of this environment (dvc, isim, mlflow, moto_server)."""
    p = Path(sys.executable).parent / name
    return str(p) if p.exists() else (shutil.which(name) or name)


def run(cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True, timeout: int = 600):
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.update(env or {})
    r = subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def dvc_project(repo: Path, params: dict) -> Path:
    """A git + DVC repository with this project's pipeline files, sources and ``params``
    (the raw/ folder that `prepare` depends on included), committed."""
    repo.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, repo / name)
    for folder in ("src", "pipelines", "raw"):
        shutil.copytree(REPO / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.org"],
                ["git", "config", "user.name", "t"], [bin_path("dvc"), "init", "-q"],
                [bin_path("dvc"), "config", "core.analytics", "false"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "init"]):
        run(cmd, repo)
    return repo


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, log: Path, what: str, tries: int = 120) -> None:
    """Until ``url`` answers (a server ``proc`` started); else kill it and show the end of its ``log``."""
    import time
    import urllib.request
    for _ in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{what} did not start:\n" + log.read_text()[-3000:])


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def browser_dom(url: str, tmp: Path, budget_ms: int = 15000) -> str:
    """The page as a fresh browser (a new profile) shows it after ``budget_ms`` of its scripts'
    time: headless Chromium's DOM, with no network beyond this machine."""
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
                       capture_output=True, text=True, timeout=120)
    return r.stdout


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (setup.sh installs "
                                                              "Debian's chromium where it runs as root)")


def real_photos_params(folder: Path) -> dict:
    """params.yaml after `isim params pipelines/real-photos.yaml` in ``folder``, as a user gets it."""
    shutil.copy(REPO / "params.yaml", folder / "params.yaml")
    run([bin_path("isim"), "--params", "params.yaml", "params", str(REPO / "pipelines/real-photos.yaml")], folder)
    return yaml.safe_load((folder / "params.yaml").read_text())
