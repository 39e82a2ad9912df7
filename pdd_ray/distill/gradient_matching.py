"""Gradient matching: DC (Zhao et al. 2021), DSA (Zhao & Bilen 2021) and IDC (Kim et al. 2022) as one matcher.

For every class c the synthetic images should make a network take the same step as
real images of that class would::

    g_real = d CE(net(real_c), c) / d theta          (a constant)
    g_syn  = d CE(net(syn_c),  c) / d theta          (a function of the synthetic pixels)
    L_c    = sum over matched layers of distance(g_syn, g_real)

and the images follow d L_c / d S. Between iterations the matching network is trained
a few SGD steps on real data, and every ``net_reset_every`` iterations it is replaced by a
fresh one (which the PDD driver first warms up on the earlier synthetic sets).

PDD conditioning: the synthetic batch of class c holds the frozen earlier images of c as
well as the live ones; the frozen part is detached, so it shapes g_syn (and therefore the
gradient of the live images) without being updated.

The three methods differ only in configuration (``PRESETS``):

* DC:  cosine-style layer distance, every parameter matched, no augmentation, factor 1.
* DSA: DC plus siamese augmentation (the same DSA draw for the real and the synthetic batch).
* IDC: multi-formation factor 2, conv weights only, MSE (CIFAR) or L1 ((Fashion-)MNIST).

One deliberate difference from the DC/DSA papers: their inner loop trains the network on
the *synthetic* set; here (as in IDC) it is trained on real data for every method, which is
what PDD's conditioning on earlier stages is built around.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pdd_ray.data.splits import LabeledImages
from pdd_ray.distill.base import Contribution, SyntheticState
from pdd_ray.distill.formation import decode
from pdd_ray.errors import UserError
from pdd_ray.parallel.comm import has_batch_norm, shard_rows
from pdd_ray.train.loop import make_sgd

DISTANCES = ("dc", "mse", "l1")
LAYERS = ("conv", "all")
_SEED_HIGH = 2**62
_DC_EPS = 1e-6  # as in DC's distance_wb: keeps 1 - cos finite for all-zero gradient rows


# ---------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class GMConfig:
    """Hyper-parameters of gradient matching (defaults: IDC on CIFAR)."""

    distance: str = "mse"  # "dc" (sum over output units of 1 - cosine), "mse", "l1" (sums over elements)
    factor: int = 2  # multi-formation factor (1 = none; DC and DSA use 1)
    batch_real: int = 128  # real images per class per iteration
    layers: str = "conv"  # "conv": conv weights only (IDC); "all": every parameter (DC/DSA)
    net_updates: int = 10  # SGD steps of the matching network on real data after each iteration
    net_lr: float = 0.01
    net_batch: int = 256
    net_reset_every: int = 50  # fresh matching network every N iterations (0 = never)
    lr_img: float = 0.005  # for the driver's image optimiser

    def validate(self) -> None:
        """Raise UserError naming the first bad value."""
        if self.distance not in DISTANCES:
            raise UserError(f"gradient-matching distance must be one of {', '.join(DISTANCES)}, got {self.distance!r}")
        if self.layers not in LAYERS:
            raise UserError(f"gradient-matching layers must be one of {', '.join(LAYERS)}, got {self.layers!r}")
        for name, minimum in (("factor", 1), ("batch_real", 1), ("net_updates", 0), ("net_batch", 1),
                              ("net_reset_every", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise UserError(f"gradient-matching {name} must be an integer >= {minimum}, got {value!r}")
        for name in ("net_lr", "lr_img"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
                    or value == float("inf"):
                raise UserError(f"gradient-matching {name} must be a positive number, got {value!r}")

    def replace(self, **changes) -> "GMConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


# DC/DSA: the IPC-10 schedule of the DC paper (outer loop 10 -> a fresh net every 10
# matching steps, inner loop 50 net updates, batch_real 256, lr_img 0.1). "dsa" is meant
# to be used with a DSA augmenter, "dc" without one.
PRESETS: dict[str, GMConfig] = {
    "idc": GMConfig(),
    "dsa": GMConfig(distance="dc", factor=1, batch_real=256, layers="all", net_updates=50,
                    net_reset_every=10, lr_img=0.1),
    "dc": GMConfig(distance="dc", factor=1, batch_real=256, layers="all", net_updates=50,
                   net_reset_every=10, lr_img=0.1),
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
    every fresh network (PDD: train it on the union of the earlier stages first). Fresh
    networks are built and warmed up under a seed (``seed`` for the first, then seeds drawn
    from the generator passed to ``after_iteration``) inside ``torch.random.fork_rng``, so the
    matcher is reproducible and leaves the caller's global RNG untouched. The first network is
    built lazily, so ``load_net_state`` right after construction skips its warm-up.
    """

    def __init__(self, config: GMConfig, real: LabeledImages, make_model: Callable[[], nn.Module], augment=None,
                 device: torch.device | str = torch.device("cpu"),
                 warmup: Callable[[nn.Module], None] | None = None, seed: int = 0, comm=None):
        config.validate()
        if augment is not None and not hasattr(augment, "siamese"):
            raise TypeError("augment must provide siamese(*batches, generator=...) (e.g. pdd_ray.augment.DSA)")
        self.config = config
        self.real = real
        self.make_model = make_model
        self.augment = augment
        self.device = torch.device(device)
        self.warmup = warmup
        self.seed = int(seed)
        self.comm = comm  # data-parallel workers also split the network's real-data batches (see _train_on_real)
        self._net: nn.Module | None = None
        self._opt: torch.optim.Optimizer | None = None
        self._since_reset = 0  # after_iteration calls since the current network was made

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
        self._opt = make_sgd(net, self.config.net_lr)
        self._since_reset = 0

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
        return Contribution(loss=float(loss.detach()), grad_images=grad.detach())

    def after_iteration(self, state: SyntheticState, iteration: int, generator: torch.Generator) -> None:
        """Train the network ``net_updates`` SGD steps on real data, or replace it every ``net_reset_every`` calls."""
        seed = int(torch.randint(_SEED_HIGH, (1,), generator=generator))  # always one draw: fixed consumption
        net = self.net
        self._since_reset += 1
        every = self.config.net_reset_every
        if every > 0 and self._since_reset >= every:
            self._reset(seed)
            return
        self._train_on_real(net, seed)

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
            if self.augment is not None:
                x = self.augment(x, generator=generator)  # the whole batch: each worker slices the same draw
            rows = shard_rows(len(x), comm)
            # Sum over my rows / batch size: the workers' gradients add up to the full batch mean's.
            loss = F.cross_entropy(net(x[rows]), y[rows], reduction="sum") / len(x)
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
        opt = make_sgd(net, self.config.net_lr)
        for i, p in enumerate(opt.param_groups[0]["params"]):
            if f"opt.{i}" in state:
                opt.state[p]["momentum_buffer"] = state[f"opt.{i}"].to(p.device, p.dtype).clone()
        self._net, self._opt = net, opt
        self._since_reset = int(state["since_reset"].reshape(-1)[0])

    # names the stage driver looks for when checkpointing
    state_tensors = net_state
    load_state_tensors = load_net_state


__all__ = ["GMConfig", "GMWorkItem", "GradientMatcher", "PRESETS", "DISTANCES", "LAYERS",
           "layer_distance", "gradient_distance", "matched_parameters"]
