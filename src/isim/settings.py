"""Where params.yaml's whole config becomes the settings each method takes: the stages, a tuning
trial and the benchmarks build them here, and the method code (training/, pseudo/, models/,
evaluation) never sees the whole config, so its signatures say what it reads."""
from __future__ import annotations

from isim.config import AffinityCfg, Config, EncoderCfg, SegmenterCfg
from isim.evaluation import Sweep
from isim.pseudo.cam import CamSettings
from isim.pseudo.masks import MaskSettings
from isim.runtime import setup
from isim.training.baseline import CamNet
from isim.training.engine import Job, Settings
from isim.training.isim import RoundSettings, Schedule


def cams(cfg: Config) -> CamSettings:
    return CamSettings(cfg.transform, list(cfg.cam.scales), cfg.runtime.cam_batch_size)


def masks(cfg: Config, threshold: float | None = None) -> MaskSettings:
    """``threshold`` replaces params.yaml's ``threshold`` (the random walk's rule)."""
    return MaskSettings(cams(cfg), cfg.threshold if threshold is None else threshold, cfg.crf,
                        cfg.runtime.crf_workers)


def sweep(cfg: Config) -> Sweep:
    return Sweep(cams(cfg), tuple(cfg.eval.thresholds), cfg.runtime.crf_workers, cfg.cam.keep)


def job(cfg: Config, epochs: int, batch_size: int) -> Job:
    """A training run of ``epochs`` over batches of ``batch_size`` (the model's own section):
    applies the runtime section (threads, the torchrun process group) and picks the device."""
    tc, rt = cfg.train, cfg.runtime
    settings = Settings(cfg.seed, epochs, batch_size, tc.momentum, tc.weight_decay, tc.poly_power, tc.amp,
                        tc.sync_bn, cfg.encoder.freeze_bn, rt.loader_workers, rt.channels_last, rt.compile)
    return Job(settings, setup(rt), cfg.transform, cfg.to_dict())


def cam_net(cfg: Config, isim: bool) -> CamNet:
    """ISIM's net, or the CAM baseline's: no decoder, so it neither reads nor depends on lr_decoder."""
    return CamNet(cfg.encoder, cfg.model if isim else None, cfg.lr_encoder, cfg.lr_decoder if isim else 0.0,
                  cfg.lr_classifier)


def rounds(cfg: Config) -> RoundSettings:
    rc = cfg.rounds
    return RoundSettings(masks(cfg), Schedule(rc.warmup_epochs, cfg.crf_freq, rc.regen, rc.converge_tol,
                                              rc.converge_patience), rc.max_bad_pseudo, cfg.cam.keep)


# what each training function takes before its data, as its stage passes it: train_x(*settings.x(cfg), data, ...)
def baseline(cfg: Config) -> tuple[Job, CamNet]:
    return job(cfg, cfg.train.epochs, cfg.train.batch_size), cam_net(cfg, isim=False)


def isim(cfg: Config) -> tuple[Job, CamNet, RoundSettings]:
    return job(cfg, cfg.train.epochs, cfg.train.batch_size), cam_net(cfg, isim=True), rounds(cfg)


def affinity(cfg: Config) -> tuple[Job, AffinityCfg, EncoderCfg]:
    return job(cfg, cfg.affinity.epochs, cfg.affinity.batch_size), cfg.affinity, cfg.encoder


def segmenter(cfg: Config) -> tuple[Job, SegmenterCfg, EncoderCfg]:
    return job(cfg, cfg.segmenter.epochs, cfg.segmenter.batch_size), cfg.segmenter, cfg.encoder
