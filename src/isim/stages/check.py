"""Stage ``check``: params.yaml validated before any other stage runs.

DVC deletes a stage's outputs before running it, and a stage validates its params only once
it runs: a typo (``train.epoch``) or a bad value (``threshold: 1.5``) would cost the outputs of
the last good run. Every stage depends on this one, which reads the whole params file and
writes a file whose content never changes: a valid edit reruns exactly the stages that read
what changed, an invalid one stops `dvc repro` / `dvc exp run` here with the project's message,
before anything is deleted."""
from __future__ import annotations

from pathlib import Path

from isim.config import Config, ConfigError
from isim.io import write_text


def raw_inputs(cfg: Config) -> dict[str, str]:
    """The raw input paths of ``data.source`` by dotted key."""
    d = cfg.data
    if d.source == "own":
        return {f"{key}.{k}": v for key, src in d.own.sources()
                for k, v in {"images": src.images, "labels": src.labels, "names": src.names}.items() if v}
    if d.source == "voc":
        return {f"data.voc.{k}": v for k, v in {"voc_root": d.voc.voc_root, "sbd_root": d.voc.sbd_root}.items() if v}
    return {}


def run(cfg: Config, out: Path) -> None:
    from isim.tuning import space  # the search space too: its ranges must give valid configs
    space.check(cfg)
    for key, path in raw_inputs(cfg).items():
        p = Path(path)
        if p.is_absolute() or not p.parts or p.parts[0] != "raw":
            raise ConfigError(f"{key}: {path} is outside raw/, so DVC cannot see when its files change and "
                              f"`prepare` would not rerun; move it under raw/ and `dvc add` it (README \"Data\")")
    _check_weights(cfg)
    write_text(out, "params.yaml is valid\n")


def _check_weights(cfg: Config) -> None:
    """Offline encoder weights exist (the file or the package), so a missing one stops here,
    not after the data is prepared."""
    w = cfg.encoder.weights
    if not w:
        return  # random or hub weights: nothing on disk to check, and no reason to import torch here
    from isim.models.pretrained import PACKAGE, package_weights
    if w == PACKAGE:
        package_weights(cfg.encoder.backbone)
    elif not Path(w).is_file():
        raise ConfigError(f"encoder.weights: {w} is not a file")
