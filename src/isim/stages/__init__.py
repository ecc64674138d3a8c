"""One module per dvc.yaml stage. Each ``run(cfg, ...)`` reads the stage's inputs, calls the
method code, writes all of the stage's outputs and records them in MLflow. Paths come from
the caller (dvc.yaml's ``cmd``): they are written in one place."""
from __future__ import annotations

import shutil
from pathlib import Path


def fresh(*dirs: Path) -> None:
    """Outputs of an earlier run must not mix with this one's (DVC removes them too)."""
    for d in dirs:
        if d.exists():
            shutil.rmtree(d)


def model_example(crop: int):
    """An input batch for exporting a model (batch 2 keeps the batch dimension dynamic)."""
    import numpy as np
    return np.zeros((2, 3, crop, crop), np.float32)
