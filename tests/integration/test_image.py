"""The worker image, built here with podman (deploy/build_image.sh: Dockerfile on a debootstrapped
Debian base) and run as a cluster user runs it: `isim --help`, a `dvc repro` of the tiny
pipeline with `dvc status` clean after it, and a two-trial `isim tune`, all inside the image on a
project mounted at /work."""
import os
import shlex
import shutil

import pytest
import yaml

from conftest import REPO, dvc_project, run, tiny_params

IMAGE = os.environ.get("ISIM_IMAGE", "localhost/isim:test")


@pytest.fixture(scope="module")
def image():
    missing = [t for t in ("podman", "runc", "debootstrap") if not shutil.which(t)]
    assert not missing, f"{missing} not found: setup.sh installs them (Debian: podman runc debootstrap)"
    r = run([str(REPO / "deploy/build_image.sh")], REPO, env={"ISIM_IMAGE": IMAGE}, timeout=1800)
    assert f"{IMAGE} built" in r.stdout, r.stdout + r.stderr
    prefix = shlex.split(run([str(REPO / "deploy/build_image.sh"), "--print-run"], REPO).stdout)
    return prefix


def _in_image(prefix: list[str], project, command: str, timeout: int = 900):
    threads = ["-e", "OMP_NUM_THREADS"] if "OMP_NUM_THREADS" in os.environ else []  # this worker's share (conftest)
    return run([*prefix, *threads, "-v", f"{project}:/work", "-w", "/work", IMAGE, "bash", "-c", command], project,
               timeout=timeout)


def test_isim_help_in_the_image(image):
    r = run([*image, IMAGE], REPO)  # the image's default command
    assert "isim <command>" in r.stdout and "train-isim" in r.stdout, r.stdout
    r = run([*image, IMAGE, "python", "-c", "import torch, pydensecrf.densecrf, isim; print(torch.__version__)"], REPO)
    assert r.stdout.strip().startswith("2.14.1"), r.stdout


def test_tiny_repro_then_status_clean_then_a_two_trial_study_in_the_image(image, tmp_path):
    params = tiny_params(tune={"n_trials": 2, "pruner": "none", "sampler": "random"})
    project = dvc_project(tmp_path / "project", params)
    r = _in_image(image, project, "dvc repro && dvc status")
    assert "Running stage 'train_isim'" in r.stdout and "Running stage 'evaluate'" in r.stdout, r.stdout[-3000:]
    assert r.stdout.strip().endswith("Data and pipelines are up to date."), r.stdout[-3000:]
    assert (project / "metrics/eval.json").is_file() and (project / "checkpoints/segmenter.pt").is_file()

    r = _in_image(image, project, "isim tune --data data/prepared --out tune/results")
    best = yaml.safe_load((project / "tune/results/best.yaml").read_text())
    assert best["counts"]["complete"] == 2 and best["best"]["value"] > 0, (best, r.stderr[-3000:])
    assert len((project / "tune/results/trials.csv").read_text().splitlines()) == 1 + 2
