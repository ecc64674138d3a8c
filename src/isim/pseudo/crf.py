"""Dense CRF refinement of a label map (Kraehenbuehl & Koltun), parameters injected."""
from __future__ import annotations

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_labels

from isim.config import CrfCfg


class DenseCRF:
    """Unary + Gaussian + bilateral pairwise terms: ``refine(rgb, labels)`` returns the refined
    label map. The unary is either the label map at ``gt_prob`` confidence (``unary: labels``,
    as the ISIM and IRN code do) or, given the per-class ``scores`` the labels were the argmax of,
    their softmax at ``temperature`` (``unary: scores``, PSA's CRF on CAM probabilities): a pixel
    whose object score falls just short of the background's is then unsure, and the bilateral
    term can hand it to the object whose colour it shares, so a CAM seed can grow over its body."""

    def __init__(self, cfg: CrfCfg):
        self.cfg = cfg

    def unary(self, labels: np.ndarray, n_labels: int, scores: np.ndarray | None) -> np.ndarray:
        c = self.cfg
        if c.unary == "labels" or scores is None:
            return unary_from_labels(labels, n_labels, gt_prob=c.gt_prob, zero_unsure=False)
        z = scores.reshape(n_labels, -1).astype(np.float32) / c.temperature
        z -= z.max(0, keepdims=True)
        logp = z - np.log(np.exp(z).sum(0, keepdims=True))
        return np.ascontiguousarray(-np.maximum(logp, np.float32(np.log(1e-5))), dtype=np.float32)

    def refine(self, rgb: np.ndarray, labels: np.ndarray, n_labels: int,
               scores: np.ndarray | None = None) -> np.ndarray:
        """rgb: HxWx3 uint8; labels: HxW ints in [0, n_labels); scores (optional): n_labels x H x W
        whose argmax is ``labels``; returns HxW int64."""
        if n_labels < 2:
            return labels.astype(np.int64)
        c = self.cfg
        h, w = labels.shape
        d = dcrf.DenseCRF2D(w, h, n_labels)
        d.setUnaryEnergy(self.unary(labels, n_labels, scores))
        d.addPairwiseGaussian(sxy=c.gaussian_sxy, compat=c.gaussian_compat)
        d.addPairwiseBilateral(sxy=c.bilateral_sxy, srgb=c.bilateral_srgb,
                               rgbim=np.ascontiguousarray(rgb), compat=c.bilateral_compat)
        q = d.inference(c.iters)
        return np.argmax(np.asarray(q).reshape(n_labels, h, w), axis=0)
