"""The in-run anchor: what ImageNet alone gives, with no training on the photos.

The ImageNet classifier of the offline EfficientNet-Lite0 weights (the encoder every photo preset
starts from) has classes of its own for some of ours (horse: 'sorrel'). Their CAM (the
classifier's weights over the last feature map, ReLU; scales and flips summed, each image's map
divided by its maximum, foreground above ``threshold``) is scored on the photos labelled with
the class, like the pipeline's pseudo masks: the per-class IoU of the pipeline minus this one is
what training on the photos added.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from isim.config import TransformCfg
from isim.data.datasets import normalize, resize_image
from isim.data.prepared import Prepared
from isim.io import IGNORE, read_image, read_label_png

# our class -> its ImageNet-1k classes (indices); a photo's map is the maximum over them
IMAGENET = {
    "horse": [339],                                # sorrel
    "cow": [345, 346, 347],                        # ox, water buffalo, bison
    "sheep": [348, 349],                           # ram, bighorn
    "cat": [281, 282, 283, 284, 285],              # tabby ... Egyptian cat
    "dog": list(range(151, 269)),                  # the dog breeds
    "aeroplane": [404],                            # airliner
    "bicycle": [444, 671],                         # tandem, mountain bike
    "zebra": [340],
}


def imagenet_classifier(device: torch.device | str = "cpu") -> torch.nn.Module:
    """EfficientNet-Lite0 with its ImageNet classifier, from the pinned pip package."""
    import timm

    from isim.models.pretrained import load_weights, package_weights
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    load_weights(model, package_weights("efficientnet_lite0"))
    return model.to(device).eval()


@torch.no_grad()
def class_map(model: Any, rgb: np.ndarray, imagenet: list[int], scales: list[float],
              transform: TransformCfg, device: torch.device | str = "cpu") -> np.ndarray:
    """The normalised CAM (H, W) in [0, 1] of ``imagenet`` classes on ``rgb`` (``model``: a timm
    classifier, whose ``forward_features`` and ``get_classifier`` are used)."""
    weight = model.get_classifier().weight[imagenet]  # (k, 1280)
    h, w = rgb.shape[:2]
    total = torch.zeros(h, w)
    for s in scales:
        x = normalize(np.ascontiguousarray(rgb if s == 1.0 else resize_image(rgb, s)), transform)[None].to(device)
        feats = model.forward_features(torch.cat([x, x.flip(-1)]))
        cam = F.relu(torch.einsum("kc,bchw->bkhw", weight, feats)).amax(1, keepdim=True)
        cam = cam[:1] + cam[1:].flip(-1)
        total += F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)[0, 0].cpu()
    return (total / total.max().clamp(min=1e-5)).numpy()


def anchor(data: Prepared, split: str = "train", threshold: float = 0.3,
           scales: tuple[float, ...] = (1.0, 0.5, 1.5), device: torch.device | str = "cpu") -> dict:
    """Per-class IoU (%) of the ImageNet-only CAM on the ``split`` photos labelled with each class
    that has an ImageNet counterpart; ``{"iou": {class: IoU}, "images": {class: n}, ...}``."""
    if not data.has_masks:
        return {"note": "no ground-truth masks: nothing to score", "iou": {}, "images": {}}
    model = imagenet_classifier(device)
    transform = TransformCfg()
    ids = data.ids(split)
    out: dict = {"split": split, "threshold": threshold, "scales": list(scales), "iou": {}, "images": {},
                 "imagenet_classes": {}}
    for c, name in enumerate(data.classes):
        if name not in IMAGENET:
            continue
        tp = fp = fn = n = 0
        for id_ in ids:
            if c not in data.labels[id_]:
                continue
            rgb = read_image(data.image_path(id_))
            gt = read_label_png(data.mask_path(id_), data.n_classes)
            fg = class_map(model, rgb, IMAGENET[name], list(scales), transform, device) > threshold
            known = gt != IGNORE
            tp += int((fg & (gt == c)).sum())
            fp += int((fg & known & (gt != c)).sum())
            fn += int((~fg & (gt == c)).sum())
            n += 1
        if n:
            out["iou"][name] = round(100.0 * tp / max(1, tp + fp + fn), 2)
            out["images"][name] = n
            out["imagenet_classes"][name] = IMAGENET[name]
    return out
