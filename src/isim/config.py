"""Typed configuration, loaded once from params.yaml (pydantic v2; defaults live here only).

Sections map onto pipeline stages: a stage lists the whole sections it reads in dvc.yaml.
The knobs people sweep (``threshold``, ``crf_freq``, the learning rates, ``seed``) are
top-level keys so ``dvc exp run -S threshold=0.25`` works. ``runtime`` and ``tracking`` say
where and how a stage runs, never what it computes, so no stage lists them.
Unknown keys and bad values stop with a message that names the dotted key and the value.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from isim.errors import IsimError

Pos = Annotated[float, Field(gt=0)]
Prob = Annotated[float, Field(gt=0, lt=1)]
Range = Annotated[list[int], Field(min_length=2, max_length=2)]  # [min, max]
Rgb = Annotated[list[float], Field(min_length=3, max_length=3)]


class ConfigError(IsimError, ValueError):
    """params.yaml is wrong; the message names the key."""


class KeyedError(ValueError):
    """A cross-field check failed; ``key`` is relative to the section that raised it."""

    def __init__(self, key: str, msg: str):
        super().__init__(msg)
        self.key = key


def _need(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise KeyedError(key, msg)


def _ordered(r: list[int], key: str, low: int = 0) -> None:
    _need(low <= r[0] <= r[1], key, f"must be [min, max] with {low} <= min <= max, got {r}")


class Section(BaseModel):
    # strict: "yes" is not a bool and 2.5 is not an int; ints are accepted for floats
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class SyntheticCfg(Section):
    """The embedded benchmark (README: "The embedded dataset")."""

    n_train: int = Field(800, ge=1)
    n_val: int = Field(200, ge=1)
    size: int = Field(128, ge=16)
    classes: list[str] = Field(
        default_factory=lambda: ["cross", "ring", "triangle", "stripes", "checker", "dots"],
        min_length=2, max_length=6)  # six mark designs exist
    objects: Range = Field(default_factory=lambda: [1, 3])       # objects per image
    body_size: Range = Field(default_factory=lambda: [56, 88])   # body diameter, px
    mark_scale: float = Field(0.45, ge=0.1, le=0.7)  # mark side as a fraction of the body diameter
    mark_contrast: float = 80.0   # RGB shift of the mark from its body, along the class's direction
    distractors: Range = Field(default_factory=lambda: [0, 1])   # unmarked bodies per image
    # weaker class evidence over the whole body (hue and texture scale around the class's own);
    # false = every body from one distribution shared by all classes (no evidence outside the mark)
    body_evidence: bool = True
    body_spread: float = Field(0.5, gt=0)  # std of a body's hue and texture period, in class spacings
    void_width: int = Field(2, ge=0)  # width of the 255 band around object boundaries, px
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> SyntheticCfg:
        _need(len(set(self.classes)) == len(self.classes), "classes", "names must be distinct")
        _ordered(self.objects, "objects", 1)
        _ordered(self.body_size, "body_size", 8)
        _need(self.body_size[1] < self.size, "body_size", f"max must be below size ({self.size})")
        _ordered(self.distractors, "distractors")
        return self


class VocCfg(Section):
    voc_root: str = ""            # .../VOCdevkit/VOC2012
    sbd_root: str = ""            # .../benchmark_RELEASE/dataset ("" = VOC masks only)
    train_split: Literal["train", "train_aug"] = "train_aug"
    val_split: str = "val"


MAP_SPECIAL = ("background", "ignore")  # class_map targets besides data.own.classes


class SourceCfg(Section):
    """One folder of the user's images and its labels (README "Your own data")."""

    format: Literal["yolo", "csv", "masks", "index"] = "yolo"
    images: str = ""              # folder of images
    # yolo: folder of .txt polygons; csv: CSV file id,classes; masks: figure/ground mask folder;
    # index: folder of class-index PNGs (palette or grey)
    labels: str = ""
    # yolo: data.yaml with the source class names; index: a names file (one name a line, line k =
    # value k) or a data.yaml whose `names` maps values to names
    names: str = ""
    # yolo / index: source name -> a target class, `background` or `ignore` (several may share one);
    # source classes left out follow data.own.unmapped
    class_map: dict[str, str] = Field(default_factory=dict)
    void: int = Field(255, ge=0, le=255)  # index: the mask value of unlabelled pixels (-> ignore)
    mask_class: str = ""          # masks: the target class of the figure (pixels above mask_threshold)
    mask_threshold: int = Field(128, ge=0, le=254)  # masks: grey levels above it are the figure


class OwnCfg(SourceCfg):
    """The first source's keys, the classes and split shared by all, and more sources."""

    classes: list[str] = Field(default_factory=list)          # target classes (no background)
    unmapped: Literal["background", "ignore"] = "background"
    val_fraction: float = Field(0.2, ge=0, lt=1)  # fixed split: a hash of each image id
    max_side: int = Field(0, ge=0)  # shrink larger images (and their masks) to this long side; 0 = keep
    more_sources: list[SourceCfg] = Field(default_factory=list)  # imported into the same dataset

    def sources(self) -> list[tuple[str, SourceCfg]]:
        """(dotted key, source) of every source, the first one included."""
        return [("data.own", self)] + [(f"data.own.more_sources.{i}", s) for i, s in enumerate(self.more_sources)]


class DataCfg(Section):
    source: Literal["synthetic", "voc", "own"] = "synthetic"
    on_bad: Literal["error", "skip"] = "error"  # a bad file stops prepare, or is skipped and reported
    allow_negatives_only: bool = False  # own data: prepare even when no image has a target class
    synthetic: SyntheticCfg = Field(default_factory=SyntheticCfg)
    voc: VocCfg = Field(default_factory=VocCfg)
    own: OwnCfg = Field(default_factory=OwnCfg)

    @model_validator(mode="after")
    def _check(self) -> DataCfg:
        o = self.own
        if self.source == "own":
            _need(bool(o.classes), "own.classes", "must list the target classes")
            for key, src in o.sources():
                k = key.removeprefix("data.")
                _need(bool(src.images), f"{k}.images", "must name a folder of images")
                _need(bool(src.labels), f"{k}.labels", "must name the labels folder (yolo), CSV file (csv) "
                      "or mask folder (masks)")
                named = src.format in ("yolo", "index")
                _need(not named or bool(src.names), f"{k}.names", "must name the file with the source class "
                      f"names (format: {src.format})")
                _need(not named or bool(src.class_map), f"{k}.class_map", "must map source class names to "
                      f"data.own.classes (format: {src.format}), e.g. "
                      "{person: person, puppy: dog, grass: background}")
                for name, dst in src.class_map.items():
                    _need(dst in o.classes or dst in MAP_SPECIAL, f"{k}.class_map.{name}",
                          f"{dst!r} is not in data.own.classes (nor {' / '.join(MAP_SPECIAL)})")
                _need(not src.class_map or any(d in o.classes for d in src.class_map.values()), f"{k}.class_map",
                      "sends every source class to background or ignore: no target class would be learnt")
                _need(src.format != "masks" or src.mask_class in o.classes, f"{k}.mask_class",
                      f"must name one of data.own.classes (format: masks), got {src.mask_class!r}")
            kinds = {s.format == "csv" for _, s in o.sources()}
            _need(len(kinds) == 1, "own.more_sources", "csv sources (no masks) cannot be mixed with yolo/masks "
                  "sources: the dataset either has masks or not")
        if self.source == "voc":
            _need(bool(self.voc.voc_root), "voc.voc_root", "must name .../VOCdevkit/VOC2012")
        return self


class TransformCfg(Section):
    """Training augmentation and input normalisation."""

    resize_long: Range = Field(default_factory=lambda: [320, 640])  # long side, px
    crop: int = Field(320, ge=1)
    mean: Rgb = Field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: Annotated[list[Pos], Field(min_length=3, max_length=3)] = Field(
        default_factory=lambda: [0.229, 0.224, 0.225])

    @model_validator(mode="after")
    def _check(self) -> TransformCfg:
        _ordered(self.resize_long, "resize_long", 1)
        return self


class CamCfg(Section):
    """Class activation maps for pseudo labels: multi-scale + flip inference (paper 4.1)."""

    scales: list[Pos] = Field(default_factory=lambda: [1.0, 0.5, 1.5, 2.0], min_length=1)
    # the CAM baseline's masks and ISIM's last round keep the CAMs they are made from (float16,
    # 2 bytes per pixel per class of the image), which the chain reads instead of running the
    # model again; false: each stage computes them (a GPU run on VOC: gigabytes saved)
    keep: bool = True


class EncoderCfg(Section):
    """The timm backbone shared by every variant (baseline and ISIM)."""

    backbone: str = "resnet50"    # any timm ResNet / ResNeSt / EfficientNet(-Lite) name
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)  # passed to timm.create_model
    pretrained: bool = False      # hub weights (needs network access)
    # offline weights: "package" (the backbone's pip package: efficientnet_lite0) or a file path
    weights: str = ""
    output_stride: Literal[8, 16] = 16
    freeze_bn: bool = False       # keep the pretrained BatchNorm statistics while training (IRN does)

    @model_validator(mode="after")
    def _check(self) -> EncoderCfg:
        _need(not (self.pretrained and self.weights), "weights",
              "model weights come from encoder.pretrained or encoder.weights, not both")
        return self


class ModelCfg(Section):
    """ISIM's segmentation branch (the baseline has none)."""

    arch: Literal["deeplabcam", "unetcam"] = "deeplabcam"
    decoder_channels: int = Field(256, ge=1)
    unet_upsample: Literal["learnable", "bilinear"] = "learnable"


class TrainCfg(Section):
    """Optimisation shared by the baseline and ISIM: SGD with momentum and poly LR decay."""

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(16, ge=1)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    poly_power: float = Field(0.9, ge=0)
    amp: bool = True              # mixed precision on CUDA: bf16 where the GPU has it, else fp16 + GradScaler
    sync_bn: bool = True          # BatchNorm statistics over the global batch when several ranks train


class RoundsCfg(Section):
    """ISIM's Algorithm 1: warm-up, then pseudo-label rounds."""

    warmup_epochs: int = Field(5, ge=0)
    regen: Literal["fixed", "converge"] = "fixed"  # every crf_freq epochs, or when losses flatten
    converge_tol: float = Field(0.01, ge=0)   # relative loss change that counts as converged
    converge_patience: int = Field(2, ge=1)   # epochs below converge_tol before regenerating
    max_bad_pseudo: float = Field(1.0, gt=0, le=1)  # stop when this fraction of masks is all background


class CrfCfg(Section):
    enabled: bool = True
    # CAM pseudo masks: labels (the thresholded CAM at gt_prob, ISIM/IRN) | scores (softmax of the
    # CAM scores at temperature, PSA); predictions of trained segmenters always use labels
    unary: Literal["labels", "scores"] = "labels"
    temperature: float = Field(0.2, gt=0)
    gt_prob: float = Field(0.7, ge=0.5, lt=1)
    iters: int = Field(10, ge=1)
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 50.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 10.0


class AffinityCfg(Section):
    """AffinityNet and its labels (PSA; paper 4.1.6). Labels come from the final ISIM model's
    CAMs thresholded twice - at ``fg_threshold`` (confident objects) and ``bg_threshold``
    (confident background) - each refined with dense CRF; pixels where the two disagree are
    ignored. ``fg_threshold`` above the masks' ``threshold`` (IRN: twice it) keeps only the core
    of each mask as confident object: worth it where the CAMs over-cover (photos), a loss where
    they sit inside the objects (the embedded images; docs/chain.md). The net learns from
    pairs of cells within ``radius`` on its stride-8 feature grid; a cell takes the label of at
    least ``cell_purity`` of its block's pixels and is ignored if no label has that share
    (0: the block's most frequent label, PSA's)."""

    fg_threshold: Prob = 0.3
    bg_threshold: Prob = 0.1
    cell_purity: float = Field(0.75, ge=0, le=1)
    radius: int = Field(5, ge=2, le=16)
    feature_channels: int = Field(448, ge=8)  # PSA: 64 + 128 + 256 projected levels, fused to 448
    epochs: int = Field(3, ge=1)              # paper / IRN: 3 on VOC
    batch_size: int = Field(16, ge=1)
    lr: Pos = 0.1                             # encoder; the new layers get 10x (PSA)

    @model_validator(mode="after")
    def _check(self) -> AffinityCfg:
        _need(self.bg_threshold < self.fg_threshold, "bg_threshold",
              f"must be below fg_threshold ({self.fg_threshold}), got {self.bg_threshold}")
        return self


def _listed(v: Any) -> Any:
    """A single value where a list of candidates is expected (``-S random_walk.alpha=8``)."""
    return [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v


class RandomWalkCfg(Section):
    """Random walk of the ISIM CAMs over AffinityNet's affinities and how its maps become masks
    (pseudo/walk.py): ``psa`` walks a background channel ``(1 - max CAM) ** alpha`` with the
    classes and takes the argmax; ``irn`` divides the walked maps by their maximum and compares
    them with a constant ``bg_threshold``. Each knob is a list of candidates; with more than one
    candidate (``auto``: both modes') the stage picks the best on the holdout images."""

    beta: Pos = 10.0                          # affinities are raised to beta: sharper boundaries
    exp_times: int = Field(8, ge=0, le=12)    # the walk takes 2 ** exp_times steps
    mode: Literal["psa", "irn", "auto"] = "auto"
    alpha: list[Pos] = Field(default_factory=lambda: [4.0, 8.0, 16.0, 32.0], min_length=1)  # PSA
    bg_threshold: list[Prob] = Field(default_factory=lambda: [0.25], min_length=1)  # IRN: 0.25

    @model_validator(mode="before")
    @classmethod
    def _lists(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {k: _listed(v) if k in ("alpha", "bg_threshold") else v for k, v in data.items()}
        return data


class SegmenterCfg(Section):
    """The final segmentation model (paper 4.1.7), trained on the best pseudo-mask set (the
    paper: the random-walk masks after CRF) with the ``transform`` augmentation and evaluated on val."""

    arch: Literal["deeplabv3", "deeplabv2"] = "deeplabv3"
    # the masks it trains on: auto = the best of ISIM+CRF, ISIM+RW and ISIM+RW+CRF on the holdout
    # images (isim.pseudo.choice); or one of them by name (rw_crf is the paper's)
    masks: Literal["auto", "isim_crf", "rw", "rw_crf"] = "auto"
    # the encoder's starting weights: "encoder" = as the encoder section says (ImageNet, a file or
    # none); "isim" = the final ISIM model's encoder, which has already learnt these images' classes
    init: Literal["encoder", "isim"] = "encoder"
    decoder_channels: int = Field(256, ge=1)   # DeepLabv3's ASPP width
    epochs: int = Field(50, ge=1)              # paper: 50
    batch_size: int = Field(16, ge=1)
    lr_encoder: Pos = 0.01
    lr_decoder: Pos = 0.1
    scales: list[Pos] = Field(default_factory=lambda: [1.0, 0.5, 1.5], min_length=1)  # val inference (+ flips)
    crf: bool = False                          # also report val mIoU after dense CRF


class EvalCfg(Section):
    thresholds: list[Prob] = Field(
        default_factory=lambda: [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6])
    grid_images: int = Field(4, ge=0)


class RuntimeCfg(Section):
    """Where a stage runs; changes here never change results (no stage lists this section)."""

    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    threads: int = Field(0, ge=0)          # torch CPU threads (0 = torch's default)
    loader_workers: int = Field(0, ge=0)   # DataLoader worker processes for training
    crf_workers: int = Field(2, ge=0)      # CRF worker processes (0 = sequential in this process)
    cam_batch_size: int = Field(8, ge=1)   # equal-size images per CAM forward pass
    nproc: int = Field(1, ge=1)            # training processes on this node (torchrun, one per GPU)
    nnodes: int = Field(1, ge=1)           # nodes of a multi-node run (each runs the same command)
    rdzv_endpoint: str = ""                # host:port of the c10d rendezvous ("" = this node alone)
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: NCCL on CUDA, gloo on CPU
    dist_timeout_s: float = Field(120, gt=0)  # waiting longer for another rank is an error
    max_restarts: int = Field(0, ge=0)     # torchrun restarts after a rank dies (resumes from recovery)
    channels_last: bool = True             # NHWC tensors on CUDA (faster convolutions with AMP)
    cudnn_benchmark: bool = True           # cuDNN picks the fastest kernels for the fixed crop (CUDA)
    compile: bool = False                  # torch.compile the training step's model


class TrackingCfg(Section):
    enabled: bool = True
    uri: str = ""                 # "" = sqlite:///<repo>/mlflow.db (MLFLOW_TRACKING_URI wins)
    experiment: str = "isim"
    strict: bool = False          # True: an unreachable tracking server fails the stage
    registered_model: str = "isim-segmenter"  # Model Registry name of the model `isim predict` uses ("" = none)
    alias: str = "candidate"      # alias the newest version gets (promote with `mlflow` / the UI)


class HoldoutCfg(Section):
    """The labelled images the tuning objective is measured on: a fixed part of a split that the
    results table does not report (it reports pseudo masks on train) and no stage trains on."""

    split: str = "val"
    fraction: float = Field(0.5, gt=0, le=1)  # this share of the split, drawn once with a fixed seed


class DistCfg(Section):
    """One search dimension: float, log_float (log-uniform), int, or categorical."""

    type: Literal["float", "log_float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = None                      # float / int grids (optional)
    choices: list[bool | int | float | str] = Field(default_factory=list)  # categorical only

    @model_validator(mode="after")
    def _check(self) -> DistCfg:
        if self.type == "categorical":
            _need(bool(self.choices), "choices", "categorical needs a non-empty list of choices")
            _need(self.low is None and self.high is None, "low", "categorical takes choices, not low/high")
            return self
        _need(self.low is not None and self.high is not None, "low", f"{self.type} needs low and high")
        assert self.low is not None and self.high is not None
        _need(self.low < self.high, "high", f"range is empty or inverted: low {self.low} >= high {self.high}")
        if self.type == "log_float":
            _need(self.low > 0, "low", f"log_float needs low > 0, got {self.low}")
            _need(self.step is None, "step", "log_float takes no step")
        if self.type == "int":
            for k in ("low", "high", "step"):
                v = getattr(self, k)
                _need(v is None or float(v).is_integer(), k, f"int range needs whole numbers, got {v}")
        _need(self.step is None or self.step > 0, "step", f"must be > 0, got {self.step}")
        _need(not self.choices, "choices", f"{self.type} takes low/high, not choices")
        return self


def _default_space() -> dict[str, DistCfg]:
    return {
        "threshold": DistCfg(type="float", low=0.05, high=0.4),
        "crf_freq": DistCfg(type="int", low=1, high=6),
        "lr_encoder": DistCfg(type="log_float", low=0.01, high=0.3),
        "lr_decoder": DistCfg(type="log_float", low=0.001, high=0.1),
        "lr_classifier": DistCfg(type="log_float", low=0.1, high=3.0),
    }


# keys a trial cannot change: they decide the dataset (made once by `prepare`), where and how
# things run, or the tuning itself
UNTUNABLE = ("data.", "runtime.", "tracking.", "tune.", "holdout.")


class TuneCfg(Section):
    """Optuna study (`isim tune`); README "Tuning"."""

    study: str = Field("isim", min_length=1)
    storage: str = ""              # "" = journal file tune/optuna.journal; journal:PATH | sqlite:///PATH |
                                   # postgresql://user@host/db (password from PGPASSWORD); ISIM_TUNE_STORAGE wins
    sampler: Literal["tpe", "random", "qmc"] = "tpe"
    pruner: Literal["median", "hyperband", "wilcoxon", "none"] = "median"
    n_trials: int = Field(20, ge=1)      # budget across all workers and machines
    timeout_s: float = Field(0, ge=0)    # wall-time budget from the study's first trial (0 = none)
    workers: int = Field(1, ge=1)        # processes `isim tune` starts on this host
    seed: int = 0                        # sampler seed (worker k uses seed + k)
    retries: int = Field(2, ge=0)        # reruns of a trial whose worker died
    heartbeat_s: int = Field(20, ge=1)   # RDB storages: a trial silent for 3x this is failed and rerun
    objective: Literal["isim", "chain"] = "isim"  # holdout mIoU of ISIM's last round after CRF, or of
                                         # the mask set the final segmenter would train on (walk included)
    overrides: dict[str, Any] = Field(default_factory=dict)  # dotted key -> value, for trials only
    space: dict[str, DistCfg] = Field(default_factory=_default_space)

    @model_validator(mode="after")
    def _check(self) -> TuneCfg:
        _need(bool(self.space), "space", "needs at least one key to tune")
        for key in [*self.space, *self.overrides]:
            where = f"space.{key}" if key in self.space else f"overrides.{key}"
            _need(not key.startswith(UNTUNABLE), where, f"cannot be tuned or overridden per trial "
                  f"(sections {', '.join(s.rstrip('.') for s in UNTUNABLE)} are not trial settings)")
        _need(not _has_password(self.storage), "storage", "holds a password: put it in PGPASSWORD "
              "(or the whole URL in ISIM_TUNE_STORAGE) so it never lands in params.yaml or logs")
        return self


def _has_password(url: str) -> bool:
    if "://" not in url or url.startswith("journal:"):
        return False
    netloc = url.split("://", 1)[1].split("/", 1)[0]
    return "@" in netloc and ":" in netloc.rsplit("@", 1)[0]


class Config(Section):
    threshold: Prob = 0.3         # background score against normalised CAMs
    crf_freq: int = Field(10, ge=1)   # regenerate pseudo labels every N epochs after warm-up
    lr_encoder: Pos = 0.1
    lr_decoder: Pos = 0.01
    lr_classifier: Pos = 1.0
    seed: int = 0
    data: DataCfg = Field(default_factory=DataCfg)
    transform: TransformCfg = Field(default_factory=TransformCfg)
    cam: CamCfg = Field(default_factory=CamCfg)
    encoder: EncoderCfg = Field(default_factory=EncoderCfg)
    model: ModelCfg = Field(default_factory=ModelCfg)
    train: TrainCfg = Field(default_factory=TrainCfg)
    rounds: RoundsCfg = Field(default_factory=RoundsCfg)
    crf: CrfCfg = Field(default_factory=CrfCfg)
    affinity: AffinityCfg = Field(default_factory=AffinityCfg)
    random_walk: RandomWalkCfg = Field(default_factory=RandomWalkCfg)
    segmenter: SegmenterCfg = Field(default_factory=SegmenterCfg)
    eval: EvalCfg = Field(default_factory=EvalCfg)
    runtime: RuntimeCfg = Field(default_factory=RuntimeCfg)
    tracking: TrackingCfg = Field(default_factory=TrackingCfg)
    holdout: HoldoutCfg = Field(default_factory=HoldoutCfg)
    tune: TuneCfg = Field(default_factory=TuneCfg)

    @model_validator(mode="after")
    def _check(self) -> Config:
        _need(self.rounds.warmup_epochs <= self.train.epochs, "rounds.warmup_epochs",
              f"must be <= train.epochs ({self.train.epochs}), got {self.rounds.warmup_epochs}")
        # AffinityNet pairs cells within radius on the stride-8 grid of a training crop
        _need(self.transform.crop >= 8 * (2 * self.affinity.radius - 1), "affinity.radius",
              f"pairs need a crop of at least {8 * (2 * self.affinity.radius - 1)} px; transform.crop is "
              f"{self.transform.crop}: lower the radius or raise the crop")
        known = flatten(self.model_dump(mode="json", exclude={"tune"}))
        for key in [*self.tune.space, *self.tune.overrides]:
            # a free-form mapping (encoder.backbone_kwargs) takes any sub-key
            _need(key in known or any(key.startswith(k + ".") for k in known if isinstance(known[k], dict)),
                  f"tune.space.{key}" if key in self.tune.space else f"tune.overrides.{key}",
                  "unknown key (dotted, as in params.yaml: threshold, crf.bilateral_srgb, ...)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _message(err: Any) -> str:
    """One pydantic error as ``dotted.key: what is wrong (got value)``."""
    loc = [str(p) if isinstance(p, str) else f"[{p}]" for p in err["loc"]]
    key = ".".join(loc).replace(".[", "[")
    cause = err.get("ctx", {}).get("error")
    if isinstance(cause, KeyedError):
        return f"{key + '.' if key else ''}{cause.key}: {cause}"
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    return f"{key}: {err['msg']} (got {err['input']!r})"


def _validate(raw: dict[str, Any] | None) -> Config:
    try:
        return Config.model_validate(raw or {})
    except ValidationError as e:
        raise ConfigError("; ".join(_message(err) for err in e.errors())) from None


def from_dict(raw: dict[str, Any] | None) -> Config:
    return _validate(raw)


def saved_params(raw: dict[str, Any] | None) -> Config:
    """The params a checkpoint was trained with (saved in it), validated as params are; not the
    running stage's params, so they are none of its declared params either."""
    return _validate(raw)


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


def schema() -> str:
    """JSON schema of params.yaml, for editors (yaml-language-server) and checks."""
    s = Config.model_json_schema()
    s["title"] = "isim params.yaml"
    return json.dumps(s, indent=2, sort_keys=True) + "\n"


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers over earlier ones, mappings merged key by key, lists replaced (a preset over
    params.yaml); OmegaConf's merge."""
    return _plain(OmegaConf.merge(*layers))


def overridden(raw: dict[str, Any], dotted: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``raw`` with ``{"a.b.c": value}`` set (the form of ``dvc exp run -S``), missing
    sections made and mappings replaced, not merged; OmegaConf's update."""
    conf = OmegaConf.create(raw)
    for key, value in dotted.items():
        OmegaConf.update(conf, key, value, merge=False)
    return _plain(conf)


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``--set key=value`` strings (values parsed as YAML, as ``dvc exp run -S`` does), for
    :func:`overridden`."""
    out: dict[str, Any] = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {p!r}: expected dotted.key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _plain(conf: Any) -> dict[str, Any]:
    out = OmegaConf.to_container(conf, resolve=False)
    assert isinstance(out, dict)
    return {str(k): v for k, v in out.items()}


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: tracking params and key checks (OmegaConf has no flatten)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def apply_preset(params_path: str | Path, preset_path: str | Path) -> None:
    """Write ``preset_path``'s values into ``params_path`` (comments kept), validated first: a
    preset is a small override file (pipelines/voc.yaml), never a second copy of the params."""
    from ruamel.yaml import YAML

    from isim.io import atomic_path
    params_path, preset_path = Path(params_path), Path(preset_path)
    try:
        preset = yaml.safe_load(preset_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{preset_path}: cannot read the preset ({e})") from None
    rt = YAML()
    rt.preserve_quotes = True
    doc = rt.load(params_path.read_text())
    _assign(doc, preset, Config)
    try:
        from_dict(json.loads(json.dumps(doc)))
    except ConfigError as e:
        raise ConfigError(f"{preset_path} over {params_path}: {e}") from None
    with atomic_path(params_path) as tmp, tmp.open("w") as f:
        rt.dump(doc, f)


def with_preset(raw: dict[str, Any], preset: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with a preset's values as `isim params` writes them: sections merged, free-form
    mappings (``encoder.backbone_kwargs``, say) replaced, unlike :func:`merged`."""
    doc = copy.deepcopy(raw)
    _assign(doc, preset, Config)
    return doc


def _assign(doc: Any, over: dict[str, Any], cls: type[BaseModel]) -> None:
    """Recurse into sections; any other value (free-form mappings included) is replaced."""
    for k, v in over.items():
        field = cls.model_fields.get(k)
        sub = field.annotation if field is not None else None
        if isinstance(v, dict) and isinstance(sub, type) and issubclass(sub, BaseModel) and k in doc:
            _assign(doc[k], v, sub)
        else:
            doc[k] = v
