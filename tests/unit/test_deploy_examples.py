"""The shipped tuning deployments (deploy/tune/): the Kubernetes Job validates against the
Kubernetes schema, the shell and Slurm scripts parse, and all of them run `isim tune`."""
import subprocess

import kubernetes_validate
import yaml

from conftest import REPO

DEPLOY = REPO / "deploy" / "tune"


def test_kubernetes_job_is_valid_and_runs_one_gpu_worker_per_pod():
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s-job.yaml").read_text()) if d]
    assert [d["kind"] for d in docs] == ["Job"]
    for d in docs:
        kubernetes_validate.validate(d, desired_version="1.37.0", strict=True)  # raises when invalid
    spec = docs[0]["spec"]
    assert spec["parallelism"] >= 2
    (container,) = spec["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "isim tune" in " ".join(container["args"]) and "--workers 1" in " ".join(container["args"])
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["PGPASSWORD"]["valueFrom"]  # credentials come from a Secret
    assert "@" not in str(env["ISIM_TUNE_STORAGE"])


def test_an_invalid_manifest_is_rejected():
    doc = yaml.safe_load((DEPLOY / "k8s-job.yaml").read_text())
    doc["spec"]["parallelism"] = "four"
    try:
        kubernetes_validate.validate(doc, desired_version="1.37.0", strict=True)
    except kubernetes_validate.ValidationError:
        return
    raise AssertionError("a Job with parallelism 'four' passed validation")


def test_shell_examples_parse_and_run_isim_tune():
    for name in ("multi-gpu.sh", "slurm.sbatch"):
        path = DEPLOY / name
        subprocess.run(["bash", "-n", str(path)], check=True)
        assert "isim tune --data data/prepared" in path.read_text()
    sbatch = (DEPLOY / "slurm.sbatch").read_text()
    assert "#SBATCH --array=" in sbatch and "#SBATCH --gres=gpu:1" in sbatch
    assert "podman run" in sbatch and "ISIM_IMAGE:-localhost/isim:latest" in sbatch  # the image build_image.sh makes
    assert "ghcr.io/example/isim" in (DEPLOY / "k8s-job.yaml").read_text()
