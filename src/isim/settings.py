"""What each method is given, and the one place it is built from params.yaml's whole config.

The method code (training/, pseudo/, models/, evaluation) takes these small types and config
sections, never the whole config, so a signature says what it reads; a stage, a tuning trial or a
benchmark builds them here. Only config, runtime and torch are imported, so a stage's code
dependencies (dvc.yaml ``deps``) stay the modules it runs."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from isim.config import AffinityCfg, Config, CrfCfg, EncoderCfg, ModelCfg, RoundsCfg, TransformCfg
from isim.runtime import setup


@dataclass(frozen=True)
class CamSettings:
    """How a split's CAMs are computed: the images' resizing and normalisation (``transform``),
    the inference ``scales`` (each with its flip) and how many equal-size images share a pass;
    ``keep``: a folder to save every computed image's CAMs in; ``source``: a folder of kept CAMs
    to read instead of running the model (made with the same scales)."""

    transform: TransformCfg
    scales: list[float] = field(default_factory=lambda: [1.0])
    batch_size: int = 8
    keep: Path | None = None
    source: Path | None = None


@dataclass(frozen=True)
class MaskSettings:
    """What a mask set is made with: the CAMs, the ``threshold`` against the constant background
    score, dense CRF, and the ``workers`` processes that run CRF and PNG encoding."""

    cam: CamSettings
    threshold: float
    crf: CrfCfg
    workers: int = 0


@dataclass(frozen=True)
class Sweep:
    """How a CAM model is scored: its CAMs' settings, the ``eval.thresholds`` its masks are swept
    over, the worker processes that score them, and whether the CAMs of its masks were kept
    (``cam.keep``: read them instead of running the model again)."""

    cam: CamSettings
    thresholds: tuple[float, ...]
    workers: int
    kept: bool


@dataclass(frozen=True)
class EngineSettings:
    """What the training engine reads: the model's own ``epochs`` and ``batch_size`` (train,
    affinity or segmenter) and the shared optimisation (``train``), BatchNorm
    (``encoder.freeze_bn``) and runtime settings."""

    seed: int
    epochs: int
    batch_size: int
    momentum: float
    weight_decay: float
    poly_power: float
    amp: bool
    sync_bn: bool
    freeze_bn: bool
    loader_workers: int
    channels_last: bool
    compile: bool


@dataclass(frozen=True)
class Job:
    """What every training run gets from its stage: the engine's settings, the device (runtime
    already applied), the images' transform and the whole params (saved in its checkpoints)."""

    settings: EngineSettings
    device: torch.device
    transform: TransformCfg
    params: dict[str, Any]


@dataclass(frozen=True)
class CamNet:
    """The CAM baseline's net (``model`` None: no decoder) or ISIM's, and the learning rates of
    its encoder, decoder and classifier."""

    encoder: EncoderCfg
    model: ModelCfg | None
    lr_encoder: float
    lr_decoder: float
    lr_classifier: float


@dataclass(frozen=True)
class RoundSettings:
    """How ISIM's rounds are made: each round's pseudo labels (``masks``), when they are due
    (``rounds``, every ``crf_freq`` epochs), and whether the final round keeps its CAMs for the chain."""

    masks: MaskSettings
    rounds: RoundsCfg
    crf_freq: int
    keep_cams: bool


@dataclass(frozen=True)
class SegmenterNet:
    """The final segmenter's net and the learning rates of its encoder and decoder."""

    arch: str
    decoder_channels: int
    lr_encoder: float
    lr_decoder: float


def cams(cfg: Config) -> CamSettings:
    return CamSettings(cfg.transform, list(cfg.cam.scales), cfg.runtime.cam_batch_size)


def masks(cfg: Config, threshold: float) -> MaskSettings:
    """``threshold``: params.yaml's ``threshold``, or the random walk's rule."""
    return MaskSettings(cams(cfg), threshold, cfg.crf, cfg.runtime.crf_workers)


def sweep(cfg: Config) -> Sweep:
    return Sweep(cams(cfg), tuple(cfg.eval.thresholds), cfg.runtime.crf_workers, cfg.cam.keep)


def job(cfg: Config, epochs: int, batch_size: int) -> Job:
    """A training run of ``epochs`` over batches of ``batch_size`` (the model's own section):
    applies the runtime section (threads, the torchrun process group) and picks the device."""
    tc, rt = cfg.train, cfg.runtime
    engine = EngineSettings(cfg.seed, epochs, batch_size, tc.momentum, tc.weight_decay, tc.poly_power, tc.amp,
                            tc.sync_bn, cfg.encoder.freeze_bn, rt.loader_workers, rt.channels_last, rt.compile)
    return Job(engine, setup(rt), cfg.transform, cfg.to_dict())


# what each training function takes before its data, as its stage passes it: train_x(*settings.x(cfg), data, ...)
def baseline(cfg: Config) -> tuple[Job, CamNet]:
    # no decoder: the baseline neither reads nor depends on lr_decoder
    net = CamNet(cfg.encoder, None, cfg.lr_encoder, 0.0, cfg.lr_classifier)
    return job(cfg, cfg.train.epochs, cfg.train.batch_size), net


def isim(cfg: Config) -> tuple[Job, CamNet, RoundSettings]:
    net = CamNet(cfg.encoder, cfg.model, cfg.lr_encoder, cfg.lr_decoder, cfg.lr_classifier)
    rounds = RoundSettings(masks(cfg, cfg.threshold), cfg.rounds, cfg.crf_freq, cfg.cam.keep)
    return job(cfg, cfg.train.epochs, cfg.train.batch_size), net, rounds


def affinity(cfg: Config) -> tuple[Job, AffinityCfg, EncoderCfg]:
    return job(cfg, cfg.affinity.epochs, cfg.affinity.batch_size), cfg.affinity, cfg.encoder


def segmenter(cfg: Config) -> tuple[Job, SegmenterNet, EncoderCfg]:
    sc = cfg.segmenter
    net = SegmenterNet(sc.arch, sc.decoder_channels, sc.lr_encoder, sc.lr_decoder)
    return job(cfg, sc.epochs, sc.batch_size), net, cfg.encoder
