"""Dense CRF refinement of a label map (Kraehenbuehl & Koltun), parameters injected."""
from __future__ import annotations

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_labels

from isim.config import CrfCfg


class DenseCRF:
    """Labels unary (``gt_prob`` confidence) + Gaussian + bilateral pairwise terms, as in the
    ISIM and IRN code: ``refine(rgb, labels)`` returns the refined label map."""

    def __init__(self, cfg: CrfCfg):
        self.cfg = cfg

    def refine(self, rgb: np.ndarray, labels: np.ndarray, n_labels: int) -> np.ndarray:
        """rgb: HxWx3 uint8; labels: HxW ints in [0, n_labels); returns HxW int64."""
        if n_labels < 2:
            return labels.astype(np.int64)
        c = self.cfg
        h, w = labels.shape
        d = dcrf.DenseCRF2D(w, h, n_labels)
        d.setUnaryEnergy(unary_from_labels(labels, n_labels, gt_prob=c.gt_prob, zero_unsure=False))
        d.addPairwiseGaussian(sxy=c.gaussian_sxy, compat=c.gaussian_compat)
        d.addPairwiseBilateral(sxy=c.bilateral_sxy, srgb=c.bilateral_srgb,
                               rgbim=np.ascontiguousarray(rgb), compat=c.bilateral_compat)
        q = d.inference(c.iters)
        return np.argmax(np.asarray(q).reshape(n_labels, h, w), axis=0)
