"""Random walk (PSA / IRN): the ISIM CAMs propagated over AffinityNet's affinities.

On the stride-8 grid, every cell is joined to the cells within ``affinity.radius`` with weight
``affinity ** beta`` (and to itself with 1). The transition matrix ``T = W D^-1`` averages a
cell's neighbours; the maps walk ``2 ** exp_times`` steps (IRN squares T ``exp_times`` times,
the same product), which spreads them across an object and stops where affinities are low,
at its boundary.

Walking averages: a region the CAMs half cover comes out half covered everywhere, so what the
walked maps are compared with decides how far the masks grow. Two rules (``random_walk.mode``):

- ``psa`` (PSA's infer_aff.py): a background channel ``(1 - max_k CAM_k) ** alpha`` walks with
  the classes, and each pixel takes the highest walked score, with no rescaling: background
  spreads from where the CAMs are confidently off, exactly as the classes spread.
- ``irn`` (IRN's make_sem_seg_labels.py): the walked class maps are divided by their global
  maximum and compared with a constant background score ``bg_threshold``.

Both give (K+1) x H x W scores, background first, which pseudo/masks.py thresholds by argmax
and refines with CRF. Each rule's knob takes a list of candidates; with more than one (or
``mode: auto``) the random_walk stage scores every candidate on the holdout images and walks
the train images with the best (:func:`candidates`, :class:`CandidateScorer`).

T is sparse (about ``2 x len(pair_offsets) + 1`` entries per cell), so memory per image grows
with the image, never with the dataset.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from isim import metrics
from isim.config import RandomWalkCfg, TransformCfg
from isim.data.datasets import normalize
from isim.data.prepared import Prepared
from isim.mask_scores import RuleScore
from isim.models.affinitynet import AffinityNet, pair_offsets
from isim.models.net import ISIMNet
from isim.pseudo.cam import map_cams
from isim.pseudo.masks import Truth
from isim.settings import CamSettings


@dataclass(frozen=True)
class Rule:
    """One way to decide the walked maps: ``mode`` psa (``value`` = alpha) or irn (``value`` =
    the constant background score)."""
    mode: str
    value: float

    @property
    def name(self) -> str:
        return f"{self.mode} alpha={self.value:g}" if self.mode == "psa" else f"irn bg={self.value:g}"


def candidates(rw: RandomWalkCfg) -> list[Rule]:
    """The rules ``random_walk`` allows, in params order (PSA's first under ``auto``)."""
    psa = [Rule("psa", a) for a in rw.alpha] if rw.mode in ("psa", "auto") else []
    irn = [Rule("irn", t) for t in rw.bg_threshold] if rw.mode in ("irn", "auto") else []
    return psa + irn


def transition(feats: torch.Tensor, radius: int, beta: float) -> torch.Tensor:
    """T transposed (sparse, N x N for N = h x w cells of ``feats`` D x h x w), so that
    ``T.t() @ x`` is one step of the walk for x N x K."""
    _, h, w = feats.shape
    idx = torch.arange(h * w).view(h, w)
    rows, cols, vals = [idx.flatten()], [idx.flatten()], [torch.ones(h * w)]
    for dy, dx in pair_offsets(radius):
        if dy >= h or abs(dx) >= w:
            continue
        # cells (y, x) whose partner (y + dy, x + dx) is on the grid
        a0, a1 = max(0, -dx), w - max(0, dx)
        src, dst = feats[:, :h - dy, a0:a1], feats[:, dy:, a0 + dx:a1 + dx]
        a = torch.exp(-(src - dst).abs().mean(0)).pow(beta).flatten()
        i, j = idx[:h - dy, a0:a1].flatten(), idx[dy:, a0 + dx:a1 + dx].flatten()
        rows += [i, j]
        cols += [j, i]
        vals += [a, a]
    r, c, v = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    degree = torch.zeros(h * w).index_add_(0, c, v)  # column sums of W
    tt = torch.sparse_coo_tensor(torch.stack([c, r]), v / degree[c], (h * w, h * w), check_invariants=False)
    return tt.coalesce()


def walk(seeds: torch.Tensor, tt: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` steps of the walk of ``seeds`` K x h x w."""
    k, h, w = seeds.shape
    x = seeds.reshape(k, h * w).t().contiguous()
    for _ in range(steps):
        x = torch.sparse.mm(tt, x)
    return x.t().reshape(k, h, w)


def background_channel(maps: np.ndarray, alpha: float) -> np.ndarray:
    """PSA's background score ``(1 - max_k map_k) ** alpha`` (H x W; 1 where no class is)."""
    top = maps.max(0) if len(maps) else np.zeros(maps.shape[1:], np.float32)
    return np.power(np.clip(1.0 - top, 0.0, 1.0), alpha).astype(np.float32)


def decide(walked: torch.Tensor, bg_walked: dict[float, torch.Tensor], rule: Rule) -> np.ndarray:
    """(K+1) x H x W scores of one rule from the walked class maps (K x H x W) and the walked
    background channels by alpha (each H x W)."""
    if rule.mode == "psa":
        scores = torch.cat([bg_walked[rule.value][None], walked])
    else:
        fg = walked / walked.max().clamp(min=1e-5)
        scores = torch.cat([torch.full_like(fg[:1], rule.value), fg])
    return scores.numpy().astype(np.float32)


class RandomWalk:
    """``propagate(item, maps)`` for pseudo/masks.generate: full-size normalised CAMs (K x H x W)
    in, the chosen ``rule``'s walked scores ((K+1) x H x W, background first) out.
    :meth:`all_rules` gives every candidate's scores at once (one walk of the class maps)."""

    def __init__(self, net: AffinityNet, transform: TransformCfg, radius: int, rw: RandomWalkCfg,
                 device: torch.device, rule: Rule | None = None):
        """``radius``: AffinityNet's pair radius (affinity.radius); ``rw``: beta, exp_times and the
        candidate rules; ``rule``: the one ``__call__`` applies (default: the first candidate)."""
        self.net, self.transform, self.radius, self.rw, self.device = net.eval(), transform, radius, rw, device
        self.rules = candidates(rw)
        self.rule = rule or self.rules[0]

    def with_rule(self, rule: Rule) -> RandomWalk:
        return RandomWalk(self.net, self.transform, self.radius, self.rw, self.device, rule)

    @torch.no_grad()
    def _walk(self, item: dict, maps: np.ndarray, alphas: list[float]
              ) -> tuple[torch.Tensor, dict[float, torch.Tensor]]:
        """The class maps and PSA's background channel for each of ``alphas``, walked together and
        upsampled to the image."""
        x = normalize(np.ascontiguousarray(item["rgb"]), self.transform)[None].to(self.device)
        feats = self.net(x)[0].float().cpu()
        size = maps.shape[-2:]
        stack = np.concatenate([maps, *(background_channel(maps, a)[None] for a in alphas)])
        seeds = F.adaptive_avg_pool2d(torch.from_numpy(stack)[None], feats.shape[-2:])[0]
        walked = walk(seeds, transition(feats, self.radius, self.rw.beta), 2 ** self.rw.exp_times)
        up = F.interpolate(walked[None], size=size, mode="bilinear", align_corners=False)[0]
        k = len(maps)
        return up[:k], {a: up[k + i] for i, a in enumerate(alphas)}

    def __call__(self, item: dict, maps: np.ndarray) -> np.ndarray:
        if len(maps) == 0:  # no class in the image: background everywhere
            return np.ones((1, *maps.shape[1:]), np.float32)
        walked, bg = self._walk(item, maps, [self.rule.value] if self.rule.mode == "psa" else [])
        return decide(walked, bg, self.rule)

    def all_rules(self, item: dict, maps: np.ndarray) -> np.ndarray:
        """R x (K+1) x H x W: every candidate rule's scores, in :attr:`rules` order."""
        if len(maps) == 0:
            return np.ones((len(self.rules), 1, *maps.shape[1:]), np.float32)
        walked, bg = self._walk(item, maps, [r.value for r in self.rules if r.mode == "psa"])
        return np.stack([decide(walked, bg, r) for r in self.rules])


@dataclass(frozen=True)
class CandidateScorer:
    """A pool worker's task on :meth:`RandomWalk.all_rules`' output: each rule's masks (argmax,
    no CRF) scored against the ground truth. Returns R x n x n confusion matrices."""
    truth: Truth

    def __call__(self, id_: str, rgb: np.ndarray, scores: np.ndarray, keys: np.ndarray) -> np.ndarray:
        gt = self.truth.read(id_, rgb.shape[:2])
        if gt is None:
            raise ValueError(f"{id_}: no ground-truth mask to score the walk's rules against")
        n = self.truth.n
        return np.stack([metrics.confusion(keys[np.argmax(s, 0)].astype(np.uint8), gt, n) for s in scores])


def score_rules(model: ISIMNet | None, data: Prepared, ids: list[str], walker: RandomWalk, cam: CamSettings,
                workers: int, device: torch.device) -> list[RuleScore]:
    """Every candidate rule of ``walker`` on the masks (before CRF) of ``ids``, which must have
    ground truth: best mIoU first (ties keep params order). One walk per image serves all rules."""
    n = data.n_classes
    conf = np.zeros((len(walker.rules), n, n), np.int64)
    for c, _, _ in map_cams(model, data, ids, cam, device, CandidateScorer(Truth(data)), workers,
                            "random walk rules", walker.all_rules):
        conf += c
    scores = []
    for rule, cm in zip(walker.rules, conf):
        s = metrics.summary(cm, data.classes)
        scores.append(RuleScore(rule.name, rule.mode, rule.value, s["miou"], s["precision"], s["recall"]))
    return sorted(scores, key=lambda r: -r.miou)


def best_rule(model: ISIMNet | None, data: Prepared, holdout: list[str], walker: RandomWalk, cam: CamSettings,
              workers: int, device: torch.device) -> tuple[RandomWalk, list[RuleScore]]:
    """``walker`` set to the candidate rule that scores best on the ``holdout`` images, and every
    candidate's scores (best first)."""
    rules = score_rules(model, data, holdout, walker, cam, workers, device)
    return walker.with_rule(next(r for r in walker.rules if r.name == rules[0].rule)), rules

