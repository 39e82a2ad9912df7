"""Gradient matching: DC (Zhao et al. 2021), DSA (Zhao & Bilen 2021) and IDC (Kim et al. 2022) as one matcher.

For every class c the synthetic images should make a network take the same step as
real images of that class would::

    g_real = d CE(net(A(real_c)), c) / d theta          (a constant)
    g_syn  = d CE(net(A(syn_c)),  c) / d theta          (a function of the synthetic pixels)
    L_c    = sum over matched layers of distance(g_syn, g_real)

and the images follow d L_c / d S; A is the siamese augmentation, one draw applied to the
real and the synthetic batch (with ``match_batch`` one parameter set for every image of
both, DSA's ``batchmode`` / IDC's ``DiffAug(batch=True)``).

The schedule is the papers' outer/inner loop. One stage iteration is one matching step
(every class, one image update); ``net_reset_every`` = K consecutive iterations share one
network, an *outer iteration*:

    outer iteration:  fresh network -> warm-up on the earlier stages (PDD) -> clamp images
                      K x [ match every class, update the images ; train the network ]

* IDC (``distill_idc.py``): K = ``inner_loop`` (100); between matching steps the network
  trains ``net_updates`` SGD steps on real data (``n_data`` images at batch 64: 500 / 64 ->
  8 steps for (Fashion-)MNIST, 2000 / 64 -> 32 for CIFAR) with per-sample DSA without
  cutout and CutMix p 0.5; SGD lr 0.01, momentum 0.9, wd 5e-4. Images live in [0, 1] with
  ``lr_img`` = base x ipc/10 x (H·W / 32²) (``argument.py tune_lr_img``), and are clamped to
  [0, 1] at the start of every outer iteration. Multi-formation factor 2, conv weights only,
  MSE (CIFAR) or L1 ((Fashion-)MNIST); at most ``batch_syn_max`` (128) decoded synthetic
  images per class and step.
* DSA / DC (``main.py``): K = ``outer_loop`` of ``get_loops(ipc)`` (1 / 10 / 50 for IPC
  1 / 10 / 50); between matching steps the network trains ``net_updates`` = ``inner_loop``
  (1 / 50 / 10) *epochs on the synthetic set* (``net_data: synthetic``; batch 256, SGD lr
  0.01, no momentum, no wd; DSA per sample for DSA, none for DC). No update follows the
  last step of a network, which is replaced by a fresh one. ``net_data: real`` (the network
  trains on real data instead, as IDC) is a setting, not the default of dsa/dc.

Image space. pdd-ray's images live in normalised space x_n = (x_p - m_c) / s_c. An SGD
step of rate eta on pixels, x_p -= eta dL/dx_p, is x_n -= (eta / s_c²) dL/dx_n in normalised
space; with ``image_space: pixel`` the matcher multiplies channel c of its image gradient by
1 / s_c² (and by IDC's ipc/size factor when ``lr_img_tune``), so the image optimiser's
``lr_img`` *is* the official pixel-space rate (SGD with momentum is linear in the gradient,
so this is exactly the official update). One difference remains: the official IDC loop
steps the image optimiser after each class, here the classes' gradients are summed into
one step (the data-parallel split by class needs that); with momentum 0.5 and classes that
touch disjoint images the steady-state step is the same 2·lr·g.

PDD conditioning: the synthetic batch of class c holds the frozen earlier images of c as
well as the live ones; the frozen part is detached, so it shapes g_syn (and therefore the
gradient of the live images) without being updated. A network trained on the synthetic
set (DSA/DC) trains on that union.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pdd_ray.augment.cutmix import mix_batch, mixed_cross_entropy
from pdd_ray.data.splits import LabeledImages
from pdd_ray.distill.base import Contribution, SyntheticState
from pdd_ray.distill.formation import decode, decode_labels
from pdd_ray.errors import UserError
from pdd_ray.parallel.comm import has_batch_norm, shard_rows
from pdd_ray.train.loop import make_sgd, train_epoch

DISTANCES = ("dc", "mse", "l1")
LAYERS = ("conv", "all")
NET_DATA = ("real", "synthetic")
IMAGE_SPACES = ("normalised", "pixel")
WARMUPS = ("progressive", "union")
_SEED_HIGH = 2**62
_DC_EPS = 1e-6  # as in DC's distance_wb: keeps 1 - cos finite for all-zero gradient rows
LR_IMG_IPC_BASE = 10  # IDC tune_lr_img: lr_img x ipc / 10 ...
LR_IMG_SIZE_BASE = 32  # ... x (size / 32)²


# ---------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class GMConfig:
    """Hyper-parameters of gradient matching (defaults: IDC on CIFAR, ``distill_idc.py --reproduce``)."""

    distance: str = "mse"  # "dc" (sum over output units of 1 - cosine), "mse", "l1" (sums over elements)
    factor: int = 2  # multi-formation factor (1 = none; DC and DSA use 1)
    batch_real: int = 64  # real images per class per matching step
    batch_syn_max: int = 128  # at most this many decoded synthetic images per class and step (0 = all)
    layers: str = "conv"  # "conv": conv weights only (IDC); "all": every parameter (DC/DSA)
    net_reset_every: int = 100  # matching steps per network (an outer iteration; 0 = one network for ever)
    net_data: str = "real"  # what the network trains on between matching steps: "real" (IDC) or "synthetic"
    net_updates: int = 32  # real: SGD steps of net_batch images; synthetic: epochs over the synthetic set
    net_lr: float = 0.01
    net_momentum: float = 0.9
    net_weight_decay: float = 5e-4
    net_batch: int = 64
    net_cutmix: float = 0.5  # CutMix probability per network batch (IDC's mixup_net=cut, mix_p 0.5)
    lr_img: float = 0.005  # the image optimiser's lr (in pixel space with image_space: pixel)
    image_space: str = "pixel"  # where lr_img is meant: "pixel" ([0, 1], IDC) or "normalised" (DC/DSA)
    lr_img_tune: bool = True  # IDC's tune_lr_img: the rate is lr_img x ipc/10 x (H·W / 32²)
    clamp: bool = True  # clamp the images to the valid pixel range at the start of every outer iteration
    match_augment: str | None = "color_crop_cutout"  # DSA strategy while matching (None: augment.strategy)
    match_mode: str | None = "idc"  # DSA mode while matching (None: augment.mode)
    match_batch: bool = True  # one augmentation parameter set per batch, shared by real and synthetic
    net_augment: str | None = "color_crop"  # per-sample DSA strategy of the network's training (None: matching's)
    warmup: str = "progressive"  # stage i's fresh networks first train on U_1 ... U_{i-1} in turn, or on U_{i-1}
    warmup_epochs: int = 200  # epochs per warm-up phase (0: stages.eval_epochs); IDC: epochs / 5 = 200

    def validate(self) -> None:
        """Raise UserError naming the first bad value."""
        for name, choices in (("distance", DISTANCES), ("layers", LAYERS), ("net_data", NET_DATA),
                              ("image_space", IMAGE_SPACES), ("warmup", WARMUPS)):
            if getattr(self, name) not in choices:
                raise UserError(f"gradient-matching {name} must be one of {', '.join(choices)}, "
                                f"got {getattr(self, name)!r}")
        for name, minimum in (("factor", 1), ("batch_real", 1), ("batch_syn_max", 0), ("net_updates", 0),
                              ("net_batch", 1), ("net_reset_every", 0), ("warmup_epochs", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise UserError(f"gradient-matching {name} must be an integer >= {minimum}, got {value!r}")
        for name in ("net_lr", "lr_img"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
                    or value == float("inf"):
                raise UserError(f"gradient-matching {name} must be a positive number, got {value!r}")
        for name, high in (("net_momentum", 1.0), ("net_weight_decay", float("inf")), ("net_cutmix", 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= high \
                    or value == float("inf"):
                raise UserError(f"gradient-matching {name} must be a number in [0, {high:g}], got {value!r}")
        for name in ("lr_img_tune", "clamp", "match_batch"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"gradient-matching {name} must be true or false, got {getattr(self, name)!r}")
        for name in ("match_augment", "match_mode", "net_augment"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise UserError(f"gradient-matching {name} must be a string or null, got {value!r}")

    def replace(self, **changes) -> "GMConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def lr_img_factor(self, ipc: int, height: int, width: int) -> float:
        """IDC's ``tune_lr_img`` factor ``ipc/10 x (H·W / 32²)`` (1 when ``lr_img_tune`` is off)."""
        if not self.lr_img_tune:
            return 1.0
        return (ipc / LR_IMG_IPC_BASE) * (height * width) / LR_IMG_SIZE_BASE ** 2


# The DSA paper's loop counts (DC/DSA utils.get_loops): IPC -> (outer_loop, inner_loop), i.e.
# matching steps per network and epochs on the synthetic set between them.
DSA_LOOPS: dict[int, tuple[int, int]] = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15),
                                         50: (50, 10)}
DSA_ITERATIONS = 1000  # DC/DSA main.py --Iteration: networks (outer iterations) per run (+1 in range(Iteration+1))
IDC_NITER = 2000  # PDD README's --niter for IDC: outer iterations = niter * 100 / inner_loop
IDC_INNER_LOOP = 100


def idc_net_updates(n_data: int, batch: int = 64) -> int:
    """SGD steps of IDC's network update: ``train_epoch(n_data=...)`` stops once ``n_data`` images were seen."""
    return -(-n_data // batch)


_DSA_LIKE = dict(distance="dc", factor=1, batch_real=256, batch_syn_max=0, layers="all", net_data="synthetic",
                 net_updates=DSA_LOOPS[10][1], net_reset_every=DSA_LOOPS[10][0], net_momentum=0.0,
                 net_weight_decay=0.0, net_batch=256, net_cutmix=0.0, lr_img=0.1, image_space="normalised",
                 lr_img_tune=False, clamp=False, match_augment=None, match_mode=None, match_batch=True,
                 net_augment=None, warmup="union", warmup_epochs=0)

# DC / DSA: the IPC-10 loop counts of their main.py (set gm.net_reset_every / gm.net_updates from
# DSA_LOOPS for other IPCs; the tune_configs recipes do). "dsa" augments, "dc" does not.
PRESETS: dict[str, GMConfig] = {
    "idc": GMConfig(),
    "dsa": GMConfig(**_DSA_LIKE),
    "dc": GMConfig(**_DSA_LIKE),
}


@dataclass(frozen=True)
class GMWorkItem:
    """One class of one iteration, with the seed of its real batch and augmentation."""

    label: int
    seed: int


# ---------------------------------------------------------------------------- distances


def layer_distance(g_syn: torch.Tensor, g_real: torch.Tensor, kind: str) -> torch.Tensor:
    """Distance between one layer's synthetic and real gradients.

    ``mse``: sum of squared differences; ``l1``: sum of absolute differences;
    ``dc``: the layer's gradient is viewed as [out_units, rest] and the distance is
    sum over units of ``1 - cos(g_syn[u], g_real[u])``. As in DC, 1-d tensors
    (biases, norm parameters) contribute 0 under ``dc``.
    """
    if g_syn.shape != g_real.shape:
        raise ValueError(f"gradient shapes differ: {tuple(g_syn.shape)} vs {tuple(g_real.shape)}")
    if kind == "mse":
        return (g_syn - g_real).pow(2).sum()
    if kind == "l1":
        return (g_syn - g_real).abs().sum()
    if kind == "dc":
        if g_syn.dim() <= 1:
            return g_syn.new_zeros(())
        s = g_syn.reshape(g_syn.shape[0], -1)
        r = g_real.reshape(g_real.shape[0], -1)
        cos = (s * r).sum(-1) / (s.norm(dim=-1) * r.norm(dim=-1) + _DC_EPS)
        return (1.0 - cos).sum()
    raise ValueError(f"unknown gradient distance {kind!r}; choose one of {', '.join(DISTANCES)}")


def gradient_distance(g_syn: list[torch.Tensor], g_real: list[torch.Tensor], kind: str) -> torch.Tensor:
    """Sum of ``layer_distance`` over matched layers."""
    if len(g_syn) != len(g_real) or not g_syn:
        raise ValueError("need the same, non-zero number of synthetic and real gradients")
    return torch.stack([layer_distance(s, r, kind) for s, r in zip(g_syn, g_real)]).sum()


def matched_parameters(net: nn.Module, layers: str) -> list[nn.Parameter]:
    """``all``: every trainable parameter; ``conv``: weights with more than 2 dims (IDC: no bias, norm or fc)."""
    params = [p for p in net.parameters() if p.requires_grad]
    if layers == "conv":
        params = [p for p in params if p.dim() > 2]
    if not params:
        raise UserError(f"the matching network has no parameters to match with layers={layers!r}")
    return params


def _all_reduce_grads(net: nn.Module, comm) -> None:
    """Sum every parameter's gradient over the workers, in one flat message."""
    params = [p for p in net.parameters() if p.grad is not None]
    flat = comm.all_reduce_(torch.cat([p.grad.reshape(-1) for p in params]))
    for p, g in zip(params, torch.split(flat, [p.numel() for p in params])):
        p.grad.copy_(g.view_as(p.grad))


# ---------------------------------------------------------------------------- the matcher


class GradientMatcher:
    """The ``Matcher`` of DC / DSA / IDC gradient matching (see ``pdd_ray.distill.base``).

    ``make_model()`` builds a fresh matching network; ``warmup(net)`` (if given) is run on
    every fresh network (PDD: train it on the earlier stages first). ``augment`` is the siamese
    matching augmentation, ``net_augment`` the per-sample one of the network's training (None:
    none). ``grad_scale`` ([1, C, 1, 1], or None) multiplies the image gradient: the
    pixel-space conversion of ``lr_img`` (module docstring). ``bounds`` (lo, hi), each
    [1, C, 1, 1] or None, is the valid pixel range in the images' space, enforced at the
    start of every outer iteration when ``config.clamp``.

    Fresh networks are built and warmed up under a seed (``seed`` for the first, then seeds
    drawn from the generator passed to ``after_iteration``) inside ``torch.random.fork_rng``, so
    the matcher is reproducible and leaves the caller's global RNG untouched. The first network
    is built lazily, so ``load_net_state`` right after construction skips its warm-up.
    """

    def __init__(self, config: GMConfig, real: LabeledImages, make_model: Callable[[], nn.Module], augment=None,
                 device: torch.device | str = torch.device("cpu"),
                 warmup: Callable[[nn.Module], None] | None = None, seed: int = 0, comm=None, net_augment=None,
                 grad_scale: torch.Tensor | None = None,
                 bounds: tuple[torch.Tensor, torch.Tensor] | None = None):
        config.validate()
        for name, aug in (("augment", augment), ("net_augment", net_augment)):
            if aug is not None and not hasattr(aug, "siamese"):
                raise TypeError(f"{name} must provide siamese(*batches, generator=...) (e.g. pdd_ray.augment.DSA)")
        self.config = config
        self.real = real
        self.make_model = make_model
        self.augment = augment
        self.net_augment = net_augment
        self.device = torch.device(device)
        self.warmup = warmup
        self.seed = int(seed)
        self.comm = comm  # data-parallel workers also split the network's real-data batches (see _train_on_real)
        self.grad_scale = grad_scale
        self.bounds = bounds
        self._net: nn.Module | None = None
        self._opt: torch.optim.Optimizer | None = None
        self._since_reset = 0  # after_iteration calls since the current network was made
        self.networks_built = 0  # fresh networks made (warm-up included): one per outer iteration

    # -------------------------------------------------------------- network life cycle

    @property
    def net(self) -> nn.Module:
        """The current matching network (built and warmed up on first use)."""
        if self._net is None:
            self._reset(self.seed)
        return self._net

    def _fork_rng(self):
        devices = []
        if self.device.type == "cuda":
            devices = [self.device.index if self.device.index is not None else torch.cuda.current_device()]
        return torch.random.fork_rng(devices=devices)

    def _build(self, seed: int) -> nn.Module:
        with self._fork_rng():
            torch.manual_seed(seed)
            net = self.make_model().to(self.device)
        net.train()
        return net

    def _reset(self, seed: int) -> None:
        net = self._build(seed)
        if self.warmup is not None:
            with self._fork_rng():
                torch.manual_seed(seed + 1)
                self.warmup(net)
            net.train()
        self._net = net
        self._opt = self._make_opt(net)  # fresh, after the warm-up (distill_idc.py builds optim_net there)
        self._since_reset = 0
        self.networks_built += 1

    def _make_opt(self, net: nn.Module) -> torch.optim.Optimizer:
        cfg = self.config
        return make_sgd(net, cfg.net_lr, cfg.net_momentum, cfg.net_weight_decay)

    # -------------------------------------------------------------- Matcher protocol

    def plan(self, iteration: int, generator: torch.Generator) -> list[GMWorkItem]:
        """One item per class, each with its own seed drawn from ``generator``."""
        seeds = torch.randint(_SEED_HIGH, (self.real.num_classes,), generator=generator).tolist()
        return [GMWorkItem(label=c, seed=int(s)) for c, s in enumerate(seeds)]

    def loss(self, state: SyntheticState, item: GMWorkItem) -> torch.Tensor:
        """Class ``item.label``'s matching loss as a tensor differentiable w.r.t. ``state.images``.

        A plain zero (no graph to ``state.images``) when the class has no real or no
        synthetic images.
        """
        cfg, c, net = self.config, item.label, self.net
        params = matched_parameters(net, cfg.layers)
        live = state.images[state.labels.to(state.images.device) == c]
        parts = [decode(live, cfg.factor)]
        if state.frozen_images.numel() > 0:
            frozen = state.frozen_images[state.frozen_labels.to(state.frozen_images.device) == c].detach()
            if len(frozen):
                parts.insert(0, decode(frozen.to(live.device, live.dtype), cfg.factor))
        syn = torch.cat(parts)
        generator = torch.Generator().manual_seed(item.seed)
        real = self.real.sample(c, cfg.batch_real, generator)
        if 0 < cfg.batch_syn_max < len(syn):  # IDC's Synthesizer.subsample: a random subset per step
            syn = syn[torch.randperm(len(syn), generator=generator)[: cfg.batch_syn_max].to(syn.device)]
        if len(real) == 0 or len(syn) == 0:
            return params[0].new_zeros(())
        real = real.to(self.device, params[0].dtype)
        syn = syn.to(self.device)
        if self.augment is not None:
            real, syn = self.augment.siamese(real, syn, generator=generator)

        buffers = {name: b.clone() for name, b in net.named_buffers()}  # BN running stats stay as they were
        try:
            out_real = net(real)
            loss_real = F.cross_entropy(out_real, torch.full((len(real),), c, device=out_real.device))
            g_real = [g.detach() for g in torch.autograd.grad(loss_real, params)]
            out_syn = net(syn)
            loss_syn = F.cross_entropy(out_syn, torch.full((len(syn),), c, device=out_syn.device))
            g_syn = torch.autograd.grad(loss_syn, params, create_graph=True)
        finally:
            with torch.no_grad():
                for name, b in net.named_buffers():
                    b.copy_(buffers[name])
        return gradient_distance(list(g_syn), g_real, cfg.distance)

    def contribution(self, state: SyntheticState, item: GMWorkItem) -> Contribution:
        """d loss / d state.images for one class (zero rows for the other classes); grad_lr None."""
        loss = self.loss(state, item)
        if loss.requires_grad:
            (grad,) = torch.autograd.grad(loss, [state.images], allow_unused=True)
        else:
            grad = None
        if grad is None:
            grad = torch.zeros_like(state.images)
        elif self.grad_scale is not None:  # the pixel-space lr, per channel (module docstring)
            grad = grad * self.grad_scale.to(grad.device, grad.dtype)
        return Contribution(loss=float(loss.detach()), grad_images=grad.detach())

    def after_iteration(self, state: SyntheticState, iteration: int, generator: torch.Generator) -> None:
        """Train the network between matching steps; after ``net_reset_every`` steps start the next outer iteration.

        The next outer iteration clamps the images to the valid pixel range (``config.clamp``)
        and builds (and warms up) a fresh network; no network update precedes it, since that
        network is discarded.
        """
        seed = int(torch.randint(_SEED_HIGH, (1,), generator=generator))  # always one draw: fixed consumption
        net = self.net
        self._since_reset += 1
        every = self.config.net_reset_every
        if every > 0 and self._since_reset >= every:
            self.clamp_(state)
            self._reset(seed)
            return
        if self.config.net_data == "synthetic":
            self._train_on_synthetic(net, state, seed)
        else:
            self._train_on_real(net, seed)

    def clamp_(self, state: SyntheticState) -> None:
        """Clamp the live images to ``bounds`` in place (IDC: ``synset.data.clamp(0, 1)`` each outer iteration)."""
        if not self.config.clamp or self.bounds is None:
            return
        lo, hi = (b.to(state.images.device, state.images.dtype) for b in self.bounds)
        with torch.no_grad():
            state.images.copy_(torch.maximum(torch.minimum(state.images, hi), lo))

    def _train_on_synthetic(self, net: nn.Module, state: SyntheticState, seed: int) -> None:
        """DC/DSA's inner loop: ``net_updates`` epochs over the synthetic set (frozen and live, detached)."""
        cfg = self.config
        if cfg.net_updates == 0:
            return
        factor = cfg.factor
        images = [decode(state.images.detach(), factor)]
        labels = [decode_labels(state.labels, factor)]
        if state.frozen_images.numel() > 0:
            images.insert(0, decode(state.frozen_images.detach().to(images[0].device, images[0].dtype), factor))
            labels.insert(0, decode_labels(state.frozen_labels.to(labels[0].device), factor))
        x, y = torch.cat(images).to(self.device), torch.cat(labels).to(self.device)
        # Every worker holds the same set and seed, so every worker trains the same network: no messages.
        generator = torch.Generator().manual_seed(seed)
        for _ in range(cfg.net_updates):
            train_epoch(net, x, y, self._opt, cfg.net_batch, self.net_augment, generator, cutmix=cfg.net_cutmix)
        self._opt.zero_grad(set_to_none=True)

    def _train_on_real(self, net: nn.Module, seed: int) -> None:
        cfg = self.config
        if cfg.net_updates == 0 or len(self.real) == 0:
            return
        generator = torch.Generator().manual_seed(seed)
        dtype = next(net.parameters()).dtype
        # Replicated (every worker the whole batch) when alone or when batch norm makes slices inexact.
        comm = self.comm if self.comm is not None and self.comm.world_size > 1 and not has_batch_norm(net) else None
        net.train()
        for _ in range(cfg.net_updates):
            idx = torch.randperm(len(self.real), generator=generator)[: cfg.net_batch]
            x = self.real.images[idx.to(self.real.images.device)].to(self.device, dtype)
            y = self.real.labels[idx.to(self.real.labels.device)].to(self.device)
            if self.net_augment is not None:
                x = self.net_augment(x, generator=generator)  # the whole batch: each worker slices the same draw
            y_b, ratio = y, 1.0
            if cfg.net_cutmix > 0:  # drawn on the whole batch too, so the workers' slices agree
                x, y_b, ratio = mix_batch(x, y, cfg.net_cutmix, generator)
            rows = shard_rows(len(x), comm)
            # Sum over my rows / batch size: the workers' gradients add up to the full batch mean's.
            loss = mixed_cross_entropy(net(x[rows]), y[rows], y_b[rows], ratio, reduction="sum") / len(x)
            self._opt.zero_grad(set_to_none=True)
            loss.backward()
            if comm is not None:
                _all_reduce_grads(net, comm)
            self._opt.step()
        self._opt.zero_grad(set_to_none=True)

    # -------------------------------------------------------------- checkpointing

    def net_state(self) -> dict[str, torch.Tensor]:
        """Flat tensors (safetensors-ready) that restore the network, its optimiser and the reset counter."""
        net = self.net
        out = {f"net.{k}": v.detach().clone() for k, v in net.state_dict().items()}
        for i, p in enumerate(self._opt.param_groups[0]["params"]):
            buf = self._opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                out[f"opt.{i}"] = buf.detach().clone()
        out["since_reset"] = torch.tensor([self._since_reset], dtype=torch.int64)
        return out

    def load_net_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of ``net_state`` (no warm-up is run)."""
        net = self._build(self.seed)
        net.load_state_dict({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")})
        opt = self._make_opt(net)
        for i, p in enumerate(opt.param_groups[0]["params"]):
            if f"opt.{i}" in state:
                opt.state[p]["momentum_buffer"] = state[f"opt.{i}"].to(p.device, p.dtype).clone()
        self._net, self._opt = net, opt
        self._since_reset = int(state["since_reset"].reshape(-1)[0])

    # names the stage driver looks for when checkpointing
    state_tensors = net_state
    load_state_tensors = load_net_state


__all__ = ["GMConfig", "GMWorkItem", "GradientMatcher", "PRESETS", "DISTANCES", "LAYERS", "NET_DATA",
           "IMAGE_SPACES", "WARMUPS", "DSA_LOOPS", "DSA_ITERATIONS", "IDC_NITER", "IDC_INNER_LOOP",
           "idc_net_updates", "layer_distance", "gradient_distance", "matched_parameters"]
