"""Unsupervised co-localisation (paper, appendix A.2).

An attention transformer (scale and translation) learns, without labels, to crop the one
thing 100 images of a digit class have in common. The loss is the paper's triplet hinge:
the encodings of the crops of two different images must be closer (squared distance) than
the encodings of an image's crop and of a random patch of the same image, by a margin
(the patch: as large as the crop or of a fixed side, anywhere or apart from the crop).
The encoder is a CNN trained beforehand on MNIST classification (a finished run of the
``distorted-digits`` task, ``cnn`` model: on RTS digits, so that it knows digits at any
scale and place, or on 28x28 digits), frozen; the loss compares its class probabilities
(or its two pooled convolution maps). The crop starts at 0.9 of the canvas and a bound on
its side shrinks over training, so the crops close in on the digits
(docs/experiments/colocalization.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchstn.modules import LocalizationNet, SpatialTransformer
from torchstn.warping import warp

from ..checkpoint import atomic_write_text, load_checkpoint
from ..data.colocalization import CANVAS, DIGIT, box_iou, colocalization_images
from ..data.idx import download
from ..data.mnist import shard_rows
from ..models import cnn
from ..options import SEED_MAX, option
from ..plots.figures import colocalization_figure, curves_figure
from .base import TASKS, Task

__all__ = ["CoLocalization", "CoLocalizationConfig", "CoLocalizer", "crop_boxes", "encoder_side",
           "random_patches"]

#: Draws per image of which :func:`random_patches` keeps the one least overlapping the crop.
PATCH_DRAWS = 16


#: Images whose crops are recorded after every epoch (``tracks.json``, the figure).
TRACKED = 6


@dataclass
class CoLocalizationConfig:
    """The ``[task]`` table of a co-localisation run."""

    name: str = option("colocalization", "the task (`torchstn tasks` lists them)")
    digit: int = option(0, "the digit class of the images", minimum=0, maximum=9)
    clutter: bool = option(False, "TC: 16 random 6x6 crops of other digits on every canvas "
                                  "(else T: the digit alone)")
    images: int = option(100, "images of the class (MNIST test digits)", minimum=2)
    encoder: str = option("results/table1/rts/cnn/seed0",
                          "run folder of the pretrained encoder: a distorted-digits run of "
                          "the cnn model, on rts (42x42: digits at any scale and place, "
                          "the crops are 42x42) or on 28x28 digits (none, r, p, e)")
    encoding: str = option("prob", "what of the encoder the loss compares: its class "
                                   "probabilities, or its two pooled convolution maps "
                                   "(each scaled to unit length)",
                              choices=lambda: ("prob", "maps"))
    margin: float = option(1.0, "triplet hinge margin", minimum=0)
    repeats: int = option(10, "times every image is seen per epoch", minimum=1)
    init_scale: float = option(0.9, "the crop's side at the start, as a fraction of the "
                                    "canvas (between 0 and 1)", above=0)
    final_scale: float = option(0.42, "the largest crop side allowed at the end of the "
                                      "shrink, as a fraction of the canvas", above=0)
    shrink_epochs: float = option(0.0, "epochs over which the largest allowed crop side "
                                       "shrinks linearly from init_scale to final_scale, "
                                       "the crop following it (0: no bound, the side is "
                                       "learnt freely from init_scale)", minimum=0)
    fixed_scale: bool = option(False, "keep the crop's side at init_scale (or on the "
                                      "shrink's bound): learn the position only")
    patches: str = option("anywhere", "where the random patches (the loss's negatives) "
                                      "lie: anywhere on the canvas, or apart from the "
                                      "image's crop (the least overlapping of "
                                      f"{PATCH_DRAWS} draws)",
                          choices=lambda: ("anywhere", "apart"))
    patch_scale: float = option(0.0, "the random patches' side, as a fraction of the "
                                     "canvas (0: as large as the image's crop)", minimum=0)
    data_seed: int = option(0, "seed of the canvases (positions, clutter)", minimum=0,
                            maximum=SEED_MAX)

    def resolve(self) -> None:
        for key in ("init_scale", "final_scale"):
            value = getattr(self, key)
            if not 0 < value < 1:
                raise ValueError(f"config key 'task.{key}' must be between 0 and 1 (the "
                                 f"crop's side over the canvas'), got {value!r}")
        if not 0 <= self.patch_scale < 1:
            raise ValueError("config key 'task.patch_scale' must be 0 (as large as the crop) "
                             "or between 0 and 1 (the patch's side over the canvas'), got "
                             f"{self.patch_scale!r}")


def crop_boxes(params: torch.Tensor, size: int = CANVAS) -> torch.Tensor:
    """Pixel boxes ``(N, 4)`` ``(x0, y0, x1, y1)`` that attention parameters ``(N, 3)``
    ``(log s, tx, ty)`` crop from a ``size x size`` image (``align_corners=False``)."""
    s = torch.exp(params[:, 0].double().clamp(-10, 10))
    t = params[:, 1:].double()
    lo, hi = (t - s[:, None] + 1) * size / 2, (t + s[:, None] + 1) * size / 2
    return torch.cat([lo, hi], 1)


def random_patches(params: torch.Tensor, *, crop_params: torch.Tensor | None = None,
                   apart: bool = True) -> torch.Tensor:
    """Attention parameters ``(N, 3)`` of random patches of the scales of ``params``
    ``(N, 3)`` (their positions unused), inside the canvas: uniform, or (``apart``) the
    draw of :data:`PATCH_DRAWS` that overlaps its image's crop least (the crop's attention
    parameters ``crop_params`` ``(N, 3)``; default ``params``).

    Why apart: a patch that holds the digit looks like a crop that holds it, so patches
    drawn anywhere reward crops that avoid the digit (the empty background is alike in
    every image); large crops make such patches common, and the crops then collapse onto
    an empty corner. Patches apart from the crop hold the digit only when the crop misses
    it, which is what the loss should punish.
    """
    n = len(params)
    crops = params if crop_params is None else crop_params
    s = params[:, :1].exp()
    draws = PATCH_DRAWS if apart else 1
    t = (torch.rand(n, draws, 2, device=params.device) * 2 - 1) * (1 - s[:, :, None])
    if apart:
        # Overlap of each draw with the crop: the product over both axes of the shared
        # extent, at most the smaller side (half-sides s and c, in canvas units).
        s3, c3 = s[:, :, None], crops[:, :1].exp()[:, :, None]
        shared = (s3 + c3 - (t - crops[:, None, 1:]).abs()).clamp(min=0)
        shared = torch.minimum(shared, 2 * torch.minimum(s3, c3))
        best = shared.prod(2).argmin(1)
        t = t[torch.arange(n, device=params.device), best]
    else:
        t = t[:, 0]
    return torch.cat([params[:, :1], t], 1)


#: The encoder's input side (the crops' side) by the distortion it was trained on.
ENCODER_SIDES = {"none": DIGIT, "r": DIGIT, "p": DIGIT, "e": DIGIT, "rts": 42}


def encoder_side(run: Path) -> int:
    """The input side of the pretrained encoder in run folder ``run`` (checked)."""
    config = run / "config.json"
    if not (run / "checkpoint.safetensors").is_file() or not config.is_file():
        raise FileNotFoundError(f"encoder {run}: not a finished run folder (train one with "
                                f"`torchstn train --distortion rts --model cnn --out {run}`)")
    saved = json.loads(config.read_text())
    task = saved.get("task", {})
    if task.get("name") != "distorted-digits" or task.get("model") != "cnn" or (
            task.get("distortion") not in ENCODER_SIDES):
        raise ValueError(f"encoder {run} must be a distorted-digits run of the cnn model, "
                         f"distortion rts, none, r, p or e, got {task}")
    return ENCODER_SIDES[task["distortion"]]


#: Under a shrinking bound, the crop's side starts at this share of the bound.
BOUND_START = 0.95


class CoLocalizer(nn.Module):
    """An attention transformer cropping ``side x side`` from 84x84, and the frozen encoder.

    The crop stays inside the canvas: the localisation net's three outputs ``(a, b, c)``
    become the scale ``s = sigmoid(a)`` and the centre ``tanh(b, c) * (1 - s)``. (A crop
    off the canvas, or larger than it, is alike in every image and would satisfy the
    loss.) With ``bounded``, the scale is ``bound * sigmoid(a)`` instead, ``bound`` a
    buffer the task shrinks over training (``a`` starts at :data:`BOUND_START`), so
    the crops close in on what they hold. ``forward(x)`` returns the crops,
    :meth:`attention` their ``attention`` parameters, :meth:`encode` the encodings of
    ``side x side`` images: the encoder's class probabilities (``encoding="prob"``) or its
    two pooled convolution maps, each scaled to unit length (``"maps"``).
    """

    def __init__(self, init_scale: float = 0.5, fixed_scale: bool = False, *,
                 side: int = DIGIT, encoding: str = "maps", bounded: bool = False):
        super().__init__()
        self.fixed_scale, self.bounded = bool(fixed_scale), bool(bounded)
        if not 0 < init_scale < 1:
            raise ValueError(f"init_scale must be between 0 and 1 (the crop's side over the "
                             f"canvas'), got {init_scale!r}")
        if encoding not in ("prob", "maps"):
            raise ValueError(f"encoding must be 'prob' or 'maps', got {encoding!r}")
        self.side, self.encoding = int(side), encoding
        self.stn = SpatialTransformer(LocalizationNet(1), "attention",
                                      out_size=(self.side, self.side))
        start = BOUND_START if self.bounded else init_scale
        with torch.no_grad():
            self.stn.head.bias[0] = math.log(start / (1 - start))
        self.register_buffer("bound", torch.tensor(float(init_scale)))
        self.encoder = cnn(self.side)
        self.encoder.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen: always in eval mode
        return self

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.stn.parameters_of(x).float()
        # log s from logsigmoid: log(sigmoid(a)) is -inf, and its gradient NaN, once a
        # saturated localisation net drives sigmoid(a) to 0 in float32 (a < -88 or so).
        log_s = F.logsigmoid(raw[:, :1].detach() if self.fixed_scale else raw[:, :1])
        if self.bounded:
            log_s = log_s + torch.log(self.bound)
        s = log_s.exp()
        return torch.cat([log_s, torch.tanh(raw[:, 1:]) * (1 - s)], 1)

    def forward(self, x: torch.Tensor, return_params: bool = False):
        params = self.attention(x)
        crops = warp(x, params, "attention", out_size=(self.side, self.side))
        return (crops, params) if return_params else crops

    def encode(self, crops: torch.Tensor) -> torch.Tensor:
        if self.encoding == "prob":
            return F.softmax(self.encoder(crops).float(), dim=1)
        parts = []
        h = crops
        for layer in self.encoder:
            h = layer(h)
            if isinstance(layer, nn.MaxPool2d):
                parts.append(F.normalize(h.flatten(1).float(), dim=1))
        return torch.cat(parts, 1) / math.sqrt(len(parts))


@TASKS.register("colocalization")
class CoLocalization(Task):
    """Unsupervised co-localisation of one digit class on 84x84 canvases (A.2)."""

    name = "colocalization"
    Config = CoLocalizationConfig

    def __init__(self, cfg: CoLocalizationConfig, *, data_dir=None, device="cpu",
                 seed: int = 0):
        super().__init__(cfg, data_dir=data_dir, device=device, seed=seed)
        images, boxes = colocalization_images(cfg.digit, clutter=cfg.clutter, n=cfg.images,
                                              data_dir=data_dir, seed=cfg.data_seed)
        self.images, self.boxes = images.to(self.device), boxes

    @classmethod
    def download(cls, cfg: CoLocalizationConfig, data_dir=None) -> None:
        download("mnist", data_dir)

    def build_model(self) -> nn.Module:
        return CoLocalizer(self.cfg.init_scale, self.cfg.fixed_scale,
                           side=encoder_side(Path(self.cfg.encoder)),
                           encoding=self.cfg.encoding, bounded=self.cfg.shrink_epochs > 0)

    def init_model(self, model: nn.Module) -> None:
        run = Path(self.cfg.encoder)
        donor = cnn(encoder_side(run))
        load_checkpoint(run / "checkpoint.safetensors", donor)
        model.encoder.load_state_dict(donor.state_dict())

    def crop_bound(self, progress: float) -> float:
        """The largest crop side allowed (fraction of the canvas) after ``progress``
        epochs: from ``init_scale`` down to ``final_scale`` over ``shrink_epochs``."""
        cfg = self.cfg
        done = min(1.0, progress / cfg.shrink_epochs) if cfg.shrink_epochs > 0 else 0.0
        return cfg.init_scale + (cfg.final_scale - cfg.init_scale) * done

    def num_train_examples(self) -> int:
        return self.cfg.images * self.cfg.repeats

    def train_batches(self, epoch: int, batch_size: int, *, rank: int = 0,
                      world: int = 1) -> Iterator[Any]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.cat([torch.randperm(self.cfg.images, generator=gen)
                           for _ in range(self.cfg.repeats)])
        steps = -(-len(order) // batch_size)
        for step, start in enumerate(range(0, len(order), batch_size)):
            idx = order[start : start + batch_size]
            if world > 1:
                idx = idx[shard_rows(len(idx), rank, world)]
            yield idx, epoch + step / steps

    def _x(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx.to(self.images.device)].float() / 255

    def train_step(self, model: nn.Module, batch: Any):
        idx, progress = batch
        x = self._x(idx)
        n = len(x)
        inner = model.module if hasattr(model, "module") else model
        inner.bound.fill_(self.crop_bound(progress))
        crops, params = model(x, return_params=True)  # through DDP's forward, if wrapped
        e = inner.encode(crops)
        # Random patches of the same images, inside the canvas: as large as each image's
        # crop (so that neither a tiny crop of the background nor a crop of the whole
        # canvas, both alike in every image, can beat them), or of the side patch_scale;
        # anywhere, or apart from the crop (random_patches says why).
        params_p = params.detach().float()
        if self.cfg.patch_scale > 0:
            params_p = torch.cat([torch.full_like(params_p[:, :1],
                                                  math.log(self.cfg.patch_scale)),
                                  params_p[:, 1:]], 1)
        patch = random_patches(params_p, crop_params=params.detach().float(),
                               apart=self.cfg.patches == "apart")
        e_rand = inner.encode(warp(x, patch, "attention", out_size=(inner.side, inner.side)))
        # The paper's sum over every pair of different images n, m of the batch.
        close = torch.cdist(e, e).pow(2)  # (n, m)
        far = (e - e_rand).pow(2).sum(1)
        pairs = ~torch.eye(n, dtype=torch.bool, device=x.device)
        loss = (F.relu(close - far[:, None] + self.cfg.margin)[pairs].mean() if n > 1
                else crops.sum() * 0.0)
        sums = {"loss": loss.detach().double() * n, "count": n}
        return loss, sums

    def train_metrics(self, sums) -> dict[str, float]:
        return {"train_loss": sums["loss"] / sums["count"]}

    @torch.no_grad()
    def predicted_boxes(self, model: nn.Module, idx: torch.Tensor | None = None):
        idx = torch.arange(self.cfg.images) if idx is None else idx
        inner = model.module if hasattr(model, "module") else model
        return crop_boxes(inner.attention(self._x(idx)).float().cpu())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, *, rank: int = 0, world: int = 1):
        model.eval()
        rows = torch.arange(self.cfg.images)[shard_rows(self.cfg.images, rank, world)]
        iou = box_iou(self.predicted_boxes(model, rows), self.boxes[rows])
        return {"hits": int((iou > 0.5).sum()), "iou": float(iou.sum()), "count": len(rows)}

    def eval_metrics(self, sums) -> dict[str, float]:
        hit = 100.0 * sums["hits"] / sums["count"]
        return {"test_error": 100.0 - hit, "test_hit_rate": hit,
                "test_mean_iou": sums["iou"] / sums["count"]}

    def after_epoch(self, out: Path, model: nn.Module, history: list[dict]) -> None:
        """Append the crops of the first images to ``out/tracks.json`` (for the figure)."""
        path = Path(out) / "tracks.json"
        tracks = json.loads(path.read_text()) if path.is_file() else []
        tracks = tracks[: len(history) - 1]  # a resumed run rewrites what it redoes
        boxes = self.predicted_boxes(model, torch.arange(min(TRACKED, self.cfg.images)))
        tracks.append([[round(v, 3) for v in b] for b in boxes.tolist()])
        atomic_write_text(path, json.dumps(tracks) + "\n")
        model.train()

    def summary(self) -> dict[str, Any]:
        return {"digit": self.cfg.digit, "variant": "tc" if self.cfg.clutter else "t"}

    def describe(self) -> str:
        return (f"co-localisation of digit {self.cfg.digit} "
                f"({'TC' if self.cfg.clutter else 'T'})")

    def example_inputs(self, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        return (self._x(torch.arange(min(batch_size, self.cfg.images))),)

    def figures(self, out: Path, model: nn.Module, history: list[dict]) -> list[Path]:
        tracks_path = Path(out) / "tracks.json"
        tracks = json.loads(tracks_path.read_text()) if tracks_path.is_file() else []
        n = min(10, self.cfg.images)
        idx = torch.arange(n)
        paths = [colocalization_figure(self._x(idx), self.predicted_boxes(model, idx),
                                       self.boxes[:n], tracks, Path(out) / "boxes.png",
                                       title=self.describe())]
        if history:
            paths.append(curves_figure(history, Path(out) / "curves.png",
                                       title=self.describe()))
        return paths
