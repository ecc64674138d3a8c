"""Typed configuration, loaded once from params.yaml.

The knobs people sweep (``threshold``, ``crf_freq``, the learning rates, ``seed``) are
top-level keys so ``dvc exp run -S threshold=0.25`` works; everything else is grouped.
Unknown keys and bad values stop with a message that names the dotted key.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """params.yaml is wrong; the message names the key."""


@dataclass
class SyntheticCfg:
    n_train: int = 600
    n_val: int = 150
    size: int = 128
    classes: list[str] = field(
        default_factory=lambda: ["cross", "ring", "triangle", "stripes", "checker", "dots"])
    objects: list[int] = field(default_factory=lambda: [1, 3])   # min, max objects per image
    body_size: list[int] = field(default_factory=lambda: [56, 88])  # body diameter range, px
    mark_scale: float = 0.45  # mark side as a fraction of the body diameter
    mark_contrast: float = 80.0  # RGB shift of the mark from its body, along the class's direction
    distractors: list[int] = field(default_factory=lambda: [0, 1])  # unmarked bodies per image
    void_width: int = 2  # width of the 255 band around object boundaries, px
    seed: int = 0


@dataclass
class VocCfg:
    voc_root: str = ""            # .../VOCdevkit/VOC2012
    sbd_root: str = ""            # .../benchmark_RELEASE/dataset ("" = VOC masks only)
    train_split: Literal["train", "train_aug"] = "train_aug"
    val_split: str = "val"


@dataclass
class OwnCfg:
    format: Literal["yolo", "csv"] = "yolo"
    images: str = ""              # folder of images
    labels: str = ""              # yolo: folder of .txt polygons; csv: CSV file id,classes
    names: str = ""               # yolo: data.yaml with the source class names
    classes: list[str] = field(default_factory=list)   # target classes (without background)
    class_map: dict[str, str] = field(default_factory=dict)  # source name -> target class
    unmapped: Literal["background", "ignore"] = "background"
    val_fraction: float = 0.2


@dataclass
class DataCfg:
    source: Literal["synthetic", "voc", "own"] = "synthetic"
    on_bad: Literal["error", "skip"] = "error"   # a bad file stops prepare, or is skipped and reported
    synthetic: SyntheticCfg = field(default_factory=SyntheticCfg)
    voc: VocCfg = field(default_factory=VocCfg)
    own: OwnCfg = field(default_factory=OwnCfg)


@dataclass
class TransformCfg:
    resize_long: list[int] = field(default_factory=lambda: [320, 640])
    crop: int = 320
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    cam_scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 1.5, 2.0])


@dataclass
class ModelCfg:
    arch: Literal["deeplabcam", "unetcam"] = "deeplabcam"
    backbone: str = "resnet50"          # any timm ResNet/ResNeSt name
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to timm.create_model
    pretrained: bool = False
    weights: str = ""             # local weights file for the encoder (works offline)
    output_stride: Literal[8, 16] = 16
    decoder_channels: int = 256
    unet_upsample: Literal["learnable", "bilinear"] = "learnable"


@dataclass
class TrainCfg:
    epochs: int = 50
    warmup_epochs: int = 5
    batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    regen: Literal["fixed", "converge"] = "fixed"
    converge_tol: float = 0.01    # relative loss change that counts as converged
    converge_patience: int = 2    # epochs below converge_tol before regenerating
    num_workers: int = 0
    device: str = "auto"          # auto | cpu | cuda
    amp: bool = True              # mixed precision on CUDA
    max_bad_pseudo: float = 1.0   # stop when this fraction of masks is all background


@dataclass
class CrfCfg:
    enabled: bool = True
    gt_prob: float = 0.7
    iters: int = 10
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 50.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 10.0


@dataclass
class PseudoCfg:
    workers: int = 2              # CRF worker processes (0 = sequential in this process)
    batch_size: int = 8           # equal-size images per CAM forward pass


@dataclass
class EvalCfg:
    thresholds: list[float] = field(
        default_factory=lambda: [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6])
    grid_images: int = 4


@dataclass
class TrackingCfg:
    enabled: bool = True
    uri: str = ""                 # "" = sqlite:///<repo>/mlflow.db (MLFLOW_TRACKING_URI wins)
    experiment: str = "isim"
    strict: bool = False          # True: an unreachable tracking server fails the stage


@dataclass
class Config:
    threshold: float = 0.3
    crf_freq: int = 10
    lr_encoder: float = 0.1
    lr_decoder: float = 0.01
    lr_classifier: float = 1.0
    seed: int = 0
    data: DataCfg = field(default_factory=DataCfg)
    transform: TransformCfg = field(default_factory=TransformCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    crf: CrfCfg = field(default_factory=CrfCfg)
    pseudo: PseudoCfg = field(default_factory=PseudoCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    tracking: TrackingCfg = field(default_factory=TrackingCfg)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_value(key: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        return _check_value(key, inner, value)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_check_value(f"{key}[{i}]", item, v) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_check_value(key, kt, k): _check_value(f"{key}.{k}", vt, v) for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp} at {key}")


def _build(cls: type, raw: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for k in raw:
        if k not in known:
            where = f"{prefix}.{k}" if prefix else k
            raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(known))})")
    kwargs = {}
    for k, v in raw.items():
        kwargs[k] = _check_value(f"{prefix}.{k}" if prefix else k, hints[k], v)
    return cls(**kwargs)


def _validate(c: Config) -> None:
    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{key}: {msg}")

    need(0.0 < c.threshold < 1.0, "threshold", f"must be in (0, 1), got {c.threshold}")
    need(c.crf_freq >= 1, "crf_freq", f"must be >= 1, got {c.crf_freq}")
    for k in ("lr_encoder", "lr_decoder", "lr_classifier"):
        need(getattr(c, k) > 0, k, f"must be > 0, got {getattr(c, k)}")
    s = c.data.synthetic
    need(len(s.classes) >= 2 and len(set(s.classes)) == len(s.classes),
         "data.synthetic.classes", "needs at least 2 distinct names")
    need(len(s.classes) <= 6, "data.synthetic.classes", "at most 6 mark designs exist")
    need(len(s.objects) == 2 and 1 <= s.objects[0] <= s.objects[1],
         "data.synthetic.objects", "must be [min, max] with 1 <= min <= max")
    need(len(s.body_size) == 2 and 8 <= s.body_size[0] <= s.body_size[1] < s.size,
         "data.synthetic.body_size", "must be [min, max] within the image size")
    need(len(s.distractors) == 2 and 0 <= s.distractors[0] <= s.distractors[1],
         "data.synthetic.distractors", "must be [min, max] with 0 <= min <= max")
    need(0.1 <= s.mark_scale <= 0.7, "data.synthetic.mark_scale", "must be in [0.1, 0.7]")
    need(s.n_train >= 1 and s.n_val >= 1, "data.synthetic.n_train", "n_train and n_val must be >= 1")
    t = c.transform
    need(len(t.resize_long) == 2 and 0 < t.resize_long[0] <= t.resize_long[1],
         "transform.resize_long", "must be [min, max] with 0 < min <= max")
    need(t.crop > 0, "transform.crop", "must be > 0")
    need(len(t.mean) == 3 and len(t.std) == 3 and all(x > 0 for x in t.std),
         "transform.mean", "mean and std need 3 values, std > 0")
    need(len(t.cam_scales) >= 1 and all(x > 0 for x in t.cam_scales),
         "transform.cam_scales", "needs at least one positive scale")
    tr = c.train
    need(tr.epochs >= 1, "train.epochs", "must be >= 1")
    need(0 <= tr.warmup_epochs <= tr.epochs, "train.warmup_epochs", "must be in [0, epochs]")
    need(tr.batch_size >= 1, "train.batch_size", "must be >= 1")
    need(0 <= tr.momentum < 1, "train.momentum", "must be in [0, 1)")
    need(tr.weight_decay >= 0, "train.weight_decay", "must be >= 0")
    need(tr.device in ("auto", "cpu", "cuda") or tr.device.startswith("cuda:"),
         "train.device", "must be auto, cpu, cuda or cuda:N")
    need(0 < tr.max_bad_pseudo <= 1, "train.max_bad_pseudo", "must be in (0, 1]")
    need(0.5 <= c.crf.gt_prob < 1, "crf.gt_prob", "must be in [0.5, 1)")
    need(c.crf.iters >= 1, "crf.iters", "must be >= 1")
    need(c.pseudo.workers >= 0, "pseudo.workers", "must be >= 0")
    need(c.pseudo.batch_size >= 1, "pseudo.batch_size", "must be >= 1")
    need(all(0 < x < 1 for x in c.eval.thresholds), "eval.thresholds", "values must be in (0, 1)")
    o = c.data.own
    need(0 <= o.val_fraction < 1, "data.own.val_fraction", "must be in [0, 1)")
    if c.data.source == "own":
        need(bool(o.images), "data.own.images", "must name a folder of images")
        need(bool(o.labels), "data.own.labels", "must name the labels folder or CSV")
        need(bool(o.classes), "data.own.classes", "must list the target classes")
        for src, dst in o.class_map.items():
            need(dst in o.classes, f"data.own.class_map.{src}", f"{dst!r} is not in data.own.classes")
    if c.data.source == "voc":
        need(bool(c.data.voc.voc_root), "data.voc.voc_root", "must name .../VOCdevkit/VOC2012")


def from_dict(raw: dict[str, Any] | None) -> Config:
    cfg = _build(Config, raw or {})
    _validate(cfg)
    return cfg


def load(path: str | Path = "params.yaml") -> Config:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    try:
        return from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; used for tracking params."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out

