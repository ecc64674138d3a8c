"""A project's paths, read from its dvc.yaml: the one place they are written. Code that needs a
stage's output outside that stage (``isim predict``, tracking's dataset record, ``isim paper``,
the benchmarks) asks here, by stage and by the command-line flag that stage passes it."""
from __future__ import annotations

import shlex
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from isim.errors import IsimError


class Project:
    def __init__(self, root: str | Path = "."):
        self.root = Path(root)
        self.dvc_yaml = self.root / "dvc.yaml"

    @cached_property
    def stages(self) -> dict[str, dict[str, Any]]:
        """dvc.yaml's stages: the one definition of the pipeline that `dvc repro` follows."""
        try:
            return yaml.safe_load(self.dvc_yaml.read_text())["stages"]
        except FileNotFoundError:
            raise IsimError(f"{self.dvc_yaml}: not found; run in the project's folder (the one holding "
                            "dvc.yaml)") from None
        except (yaml.YAMLError, TypeError, KeyError) as e:
            raise IsimError(f"{self.dvc_yaml}: not a DVC pipeline with stages ({e})") from None

    def command(self, stage: str) -> list[str]:
        if stage not in self.stages:
            raise IsimError(f"{self.dvc_yaml}: no stage {stage!r}")
        return shlex.split(self.stages[stage]["cmd"])

    def arg(self, stage: str, flag: str) -> Path:
        """The path ``stage``'s command passes as ``flag``, under the project's root, e.g.
        ``arg("evaluate_segmenter", "--best")`` -> ``reports/best_model.json``."""
        cmd = self.command(stage)
        if flag not in cmd[:-1]:
            raise IsimError(f"{self.dvc_yaml}: stage {stage}'s command passes no {flag}")
        return self.root / cmd[cmd.index(flag) + 1]


__all__ = ["Project"]
