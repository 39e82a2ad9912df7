"""Differentiable Siamese Augmentation (DSA, Zhao & Bilen 2021) for dataset distillation.

Distillation compares a real batch with a synthetic batch after augmenting both; DSA's point
is that both see the *same* random transformation, so the matching signal is not drowned in
augmentation noise.  A draw is a :class:`DSAParams` (ops + per-sample tensors) that can be
applied to any batch up to its size, and every op is differentiable w.r.t. the pixels so the
synthetic images can be optimised through it.

Ops and reference parameters (DC/DSA/MTT ``ParamDiffAug``):

* ``color``  - brightness ``x + (u-0.5)``, saturation ``(x-m_c)*2u + m_c``, contrast
  ``(x-m)*(u+0.5) + m``; no clamping because inputs are normalised, not in [0, 1].
* ``crop``   - integer translation by up to +-0.125 of the size, zero fill.
* ``cutout`` - zero a square of side ``int(0.5*size+0.5)`` at a random centre.
* ``flip``   - horizontal flip with p=0.5.
* ``scale``  - independent x/y factors s in [1/1.2, 1.2] about the centre; the content is
  zoomed by 1/s (the reference's ``affine_grid`` with diag(s) samples the input at s·p, so
  s > 1 shrinks the image).
* ``rotate`` - rotation by up to +-15 degrees about the centre.

Geometric ops (crop, flip, scale, rotate) become 3x3 pixel-space matrices that are composed
and applied with a single kornia ``warp_affine`` (bilinear, zero padding, align_corners=True).
Cutout always runs last, after colour and the warp (the reference's order).

Modes (``DSAConfig.mode``), i.e. which of the strategy's ops one call applies:

* ``single`` - one op drawn at random (DC/DSA/MTT ``aug_mode='S'``).
* ``all``    - every op.
* ``idc``    - IDC's ``DiffAug``: colour and flip always, one op drawn from the remaining
  geometric ones (crop / scale / rotate), cutout last.

``DSAConfig.batch`` (DSA's ``batchmode``, IDC's ``DiffAug(batch=True)``): one parameter set
per call, shared by every image of the batch, so a siamese call transforms every real and
every synthetic image identically. Off, every sample gets its own draw (MTT's default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from kornia.geometry.transform import get_rotation_matrix2d, warp_affine

from pdd_ray.errors import UserError

OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
MODES = ("single", "all", "idc")
ALWAYS_IN_IDC = ("color", "flip")  # IDC's DiffAug applies these on every call; one of the others is drawn
GEOMETRIC = frozenset({"crop", "flip", "scale", "rotate"})

# Reference hyper-parameters (ParamDiffAug in the DC/DSA/MTT code).
BRIGHTNESS = 1.0
SATURATION = 2.0
CONTRAST = 0.5
CROP_RATIO = 0.125
CUTOUT_RATIO = 0.5
SCALE_RATIO = 1.2
ROTATE_DEGREES = 15.0
FLIP_P = 0.5

# Which DSAParams.values keys each op reads.
PARAM_KEYS: dict[str, tuple[str, ...]] = {
    "color": ("brightness", "saturation", "contrast"),
    "crop": ("crop_shift",),
    "cutout": ("cutout_center",),
    "flip": ("flip",),
    "scale": ("scale",),
    "rotate": ("rotate",),
}

Values = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class DSAConfig:
    """Which ops to use (``'_'``-joined strategy), how many a call applies, and per-batch or per-sample draws."""

    strategy: str = "color_crop_cutout_flip_scale_rotate"
    mode: str = "single"
    batch: bool = False  # one parameter set per call for the whole batch (DSA batchmode)

    def __post_init__(self) -> None:
        """Reject unknown or repeated ops and unknown modes."""
        if not isinstance(self.strategy, str):
            raise UserError(f"DSA strategy must be a string like 'color_crop', got {self.strategy!r}")
        ops = self.strategy.split("_")
        for op in ops:
            if op not in OPS:
                raise UserError(
                    f"unknown DSA op '{op}' in strategy '{self.strategy}'; choose from: {', '.join(OPS)}"
                )
        if len(set(ops)) != len(ops):
            raise UserError(f"DSA strategy '{self.strategy}' repeats an op")
        if self.mode not in MODES:
            raise UserError(f"unknown DSA mode '{self.mode}'; choose one of: {', '.join(MODES)}")
        if not isinstance(self.batch, bool):
            raise UserError(f"DSA batch must be true or false, got {self.batch!r}")

    @property
    def ops(self) -> tuple[str, ...]:
        """The strategy's ops, in order."""
        return tuple(self.strategy.split("_"))


@dataclass(frozen=True, eq=False)
class DSAParams:
    """One random draw: the ops to apply (in order) and their per-sample parameters.

    ``values`` keys (first dim = sample): ``brightness`` (offset), ``saturation`` and
    ``contrast`` (factors), ``crop_shift`` (n, 2) integer (dx, dy) pixels, ``cutout_center``
    (n, 2) integer (cx, cy) pixels, ``flip`` bool, ``scale`` (n, 2) (sx, sy), ``rotate``
    degrees.  Build one by hand to force parameters (tests).  ``image_size`` (H, W) is what
    the draw was sized for; ``None`` skips the size check.
    """

    ops: tuple[str, ...]
    values: Values = field(default_factory=dict)
    image_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        """Check that every op is known and has its parameters."""
        for op in self.ops:
            if op not in OPS:
                raise ValueError(f"unknown DSA op '{op}'")
            missing = [k for k in PARAM_KEYS[op] if k not in self.values]
            if missing:
                raise ValueError(f"DSA op '{op}' needs values {missing}")

    def __len__(self) -> int:
        """How many samples the draw covers."""
        return min((len(v) for v in self.values.values()), default=0)


# ---------------------------------------------------------------------------- sampling
# All draws use torch's CPU RNG (optionally a given Generator), so a seed reproduces the
# same augmentation in any process regardless of the device the images live on.


def _rand(generator: torch.Generator | None, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=generator)


def _randint(low: int, high: int, n: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randint(low, high, (n,), generator=generator)


def _sample_color(n: int, h: int, w: int, g: torch.Generator | None) -> dict[str, torch.Tensor]:
    return {
        "brightness": (_rand(g, n) - 0.5) * BRIGHTNESS,
        "saturation": _rand(g, n) * SATURATION,
        "contrast": _rand(g, n) + CONTRAST,
    }


def _sample_crop(n: int, h: int, w: int, g: torch.Generator | None) -> dict[str, torch.Tensor]:
    max_x, max_y = int(w * CROP_RATIO + 0.5), int(h * CROP_RATIO + 0.5)
    dx = _randint(-max_x, max_x + 1, n, g)
    dy = _randint(-max_y, max_y + 1, n, g)
    return {"crop_shift": torch.stack([dx, dy], dim=1)}


def _cutout_size(h: int, w: int) -> tuple[int, int]:
    return int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)


def _sample_cutout(n: int, h: int, w: int, g: torch.Generator | None) -> dict[str, torch.Tensor]:
    side_h, side_w = _cutout_size(h, w)
    # As in the reference: one extra centre for even sides so both borders are reached equally.
    cx = _randint(0, w + 1 - side_w % 2, n, g)
    cy = _randint(0, h + 1 - side_h % 2, n, g)
    return {"cutout_center": torch.stack([cx, cy], dim=1)}


def _sample_flip(n: int, h: int, w: int, g: torch.Generator | None) -> dict[str, torch.Tensor]:
    return {"flip": _rand(g, n) < FLIP_P}


def _sample_scale(n: int, h: int, w: int, g: torch.Generator | None) -> dict[str, torch.Tensor]:
    return {"scale": _rand(g, n, 2) * (SCALE_RATIO - 1.0 / SCALE_RATIO) + 1.0 / SCALE_RATIO}


def _sample_rotate(n: int, h: int, w: int, g: torch.Generator | None) -> dict[str, torch.Tensor]:
    return {"rotate": (_rand(g, n) - 0.5) * 2.0 * ROTATE_DEGREES}


_SAMPLERS: dict[str, Callable[..., dict[str, torch.Tensor]]] = {
    "color": _sample_color,
    "crop": _sample_crop,
    "cutout": _sample_cutout,
    "flip": _sample_flip,
    "scale": _sample_scale,
    "rotate": _sample_rotate,
}


# ---------------------------------------------------------------------------- pixel ops


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (n,) parameter as (n, 1, 1, 1) on x's device and dtype, for broadcasting."""
    return v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _color(x: torch.Tensor, values: Values) -> torch.Tensor:
    x = x + _per_sample(values["brightness"], x)
    mean = x.mean(dim=1, keepdim=True)  # per-pixel grey level: 1 channel -> exact no-op
    x = (x - mean) * _per_sample(values["saturation"], x) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _per_sample(values["contrast"], x) + mean


def _cutout(x: torch.Tensor, values: Values) -> torch.Tensor:
    h, w = x.shape[-2:]
    side_h, side_w = _cutout_size(h, w)
    centre = values["cutout_center"].to(x.device)
    x0 = centre[:, 0:1] - side_w // 2
    y0 = centre[:, 1:2] - side_h // 2
    cols = torch.arange(w, device=x.device)
    rows = torch.arange(h, device=x.device)
    # Squares reaching past a border are clipped simply by comparing against real indices.
    in_x = (cols >= x0) & (cols < x0 + side_w)  # (n, W)
    in_y = (rows >= y0) & (rows < y0 + side_h)  # (n, H)
    keep = ~(in_y[:, :, None] & in_x[:, None, :])
    return x * keep[:, None].to(x.dtype)  # a product, not masked assignment: keeps autograd + input intact


_PIXEL_OPS: dict[str, Callable[[torch.Tensor, Values], torch.Tensor]] = {"color": _color, "cutout": _cutout}


# ---------------------------------------------------------------------------- geometric ops
# Each builder returns (n, 3, 3) forward maps in pixel coordinates (source -> output), whose
# centre is ((W-1)/2, (H-1)/2) because the warp uses align_corners=True.


def _eye(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(3, dtype=torch.float64, device=like.device).repeat(n, 1, 1)


def _centre(n: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0], dtype=torch.float64, device=like.device).expand(n, 2)


def _homogeneous(m: torch.Tensor) -> torch.Tensor:
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=m.dtype, device=m.device).expand(m.shape[0], 1, 3)
    return torch.cat([m, bottom], dim=1)


def _crop_matrix(values: Values, n: int, h: int, w: int) -> torch.Tensor:
    shift = values["crop_shift"][:n]
    m = _eye(n, shift)
    m[:, :2, 2] = shift.to(torch.float64)
    return m


def _flip_matrix(values: Values, n: int, h: int, w: int) -> torch.Tensor:
    flip = values["flip"][:n].to(torch.float64)
    m = _eye(n, flip)
    m[:, 0, 0] = 1.0 - 2.0 * flip  # x -> (W-1) - x for flipped samples
    m[:, 0, 2] = flip * (w - 1)
    return m


def _scale_matrix(values: Values, n: int, h: int, w: int) -> torch.Tensor:
    # The forward map scales by 1/s: the reference samples the input at s·p (affine_grid with diag(s)).
    scale = 1.0 / values["scale"][:n].to(torch.float64)
    angle = torch.zeros(n, dtype=torch.float64, device=scale.device)
    return _homogeneous(get_rotation_matrix2d(_centre(n, h, w, scale), angle, scale))


def _rotate_matrix(values: Values, n: int, h: int, w: int) -> torch.Tensor:
    angle = values["rotate"][:n].to(torch.float64)
    ones = torch.ones(n, 2, dtype=torch.float64, device=angle.device)
    return _homogeneous(get_rotation_matrix2d(_centre(n, h, w, angle), angle, ones))


_MATRICES: dict[str, Callable[[Values, int, int, int], torch.Tensor]] = {
    "crop": _crop_matrix,
    "flip": _flip_matrix,
    "scale": _scale_matrix,
    "rotate": _rotate_matrix,
}


def _warp(x: torch.Tensor, ops: list[str], values: Values) -> torch.Tensor:
    """Compose the geometric ops (first op applied first) and warp x once."""
    n, _, h, w = x.shape
    # Matrices are tiny: build them where the params live (CPU by default), in float64 so the
    # composition stays exact for integer shifts/flips, and move one (n, 2, 3) tensor.
    matrix = _MATRICES[ops[0]](values, n, h, w)
    for op in ops[1:]:
        matrix = _MATRICES[op](values, n, h, w) @ matrix
    # Half/bfloat16 grids would be off by a fraction of a pixel, so those warp in float32.
    src = x if x.dtype in (torch.float32, torch.float64) else x.float()
    matrix = matrix[:, :2].to(device=x.device, dtype=src.dtype)
    out = warp_affine(src, matrix, (h, w), mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.to(x.dtype)


# ---------------------------------------------------------------------------- public API


class DSA:
    """Differentiable Siamese Augmentation: sample a draw once, apply it to several batches."""

    def __init__(self, config: DSAConfig = DSAConfig()):
        self.config = config
        self.ops = config.ops

    def sample(
        self,
        n: int,
        image_size: tuple[int, int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> DSAParams:
        """Draw parameters for n samples of size (H, W) from the CPU generator (global RNG if None)."""
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("DSA needs a CPU torch.Generator so draws reproduce on any device")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        h, w = (int(s) for s in image_size)
        ops = self._draw_ops(generator)
        drawn = 1 if self.config.batch else n
        values: dict[str, torch.Tensor] = {}
        for op in ops:
            values.update(_SAMPLERS[op](drawn, h, w, generator))
        if self.config.batch:  # one parameter set, the same for every sample
            values = {k: v.expand(n, *v.shape[1:]) for k, v in values.items()}
        if device is not None:
            values = {k: v.to(device) for k, v in values.items()}
        return DSAParams(ops=ops, values=values, image_size=(h, w))

    def _draw_ops(self, generator: torch.Generator | None) -> tuple[str, ...]:
        """The ops of one call under the mode (``single``: one; ``idc``: colour, flip, one other, cutout)."""
        ops, mode = self.ops, self.config.mode
        if mode == "single":
            return (ops[int(torch.randint(len(ops), (1,), generator=generator))],)
        if mode == "idc":
            # Colour before flip: the two commute exactly, and colour must precede the warp (contrast
            # uses the whole image's mean, which a zero-filled crop changes).
            always = tuple(op for op in ALWAYS_IN_IDC if op in ops)
            others = [op for op in ops if op not in ALWAYS_IN_IDC and op != "cutout"]
            chosen = (others[int(torch.randint(len(others), (1,), generator=generator))],) if others else ()
            return always + chosen + (("cutout",) if "cutout" in ops else ())
        return ops

    def apply(self, x: torch.Tensor, params: DSAParams) -> torch.Tensor:
        """Augment x (N, C, H, W) with the parameters of the first N samples of the draw."""
        _check_batch(x, params)
        if x.shape[0] == 0:
            return x.clone()
        # Pixel ops run in draw order; all geometric ops run as one warp at the first one's slot;
        # cutout runs last, after colour and the warp, as in the reference.
        geometric = [op for op in params.ops if op in GEOMETRIC]
        order = [op for op in params.ops if op != "cutout"] + [op for op in params.ops if op == "cutout"]
        warped = False
        for op in order:
            if op not in GEOMETRIC:
                x = _PIXEL_OPS[op](x, _first(params.values, PARAM_KEYS[op], x.shape[0]))
            elif not warped:
                x = _warp(x, geometric, params.values)
                warped = True
        return x

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment one batch with a fresh draw."""
        return self.apply(x, self.sample(x.shape[0], tuple(x.shape[-2:]), generator))

    def siamese(self, *batches: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Augment several batches (e.g. real and synthetic) with one shared draw."""
        if not batches:
            raise ValueError("siamese needs at least one batch")
        sizes = {tuple(b.shape[-2:]) for b in batches}
        if len(sizes) != 1:
            raise ValueError(f"siamese batches must share (H, W), got {sorted(sizes)}")
        params = self.sample(max(b.shape[0] for b in batches), sizes.pop(), generator)
        return tuple(self.apply(b, params) for b in batches)


def _first(values: Values, keys: tuple[str, ...], n: int) -> dict[str, torch.Tensor]:
    return {k: values[k][:n] for k in keys}


def _check_batch(x: torch.Tensor, params: DSAParams) -> None:
    if x.dim() != 4:
        raise ValueError(f"DSA expects (N, C, H, W) images, got shape {tuple(x.shape)}")
    if params.ops and len(params) < x.shape[0]:
        raise ValueError(f"DSA draw covers {len(params)} samples but the batch has {x.shape[0]}")
    if params.image_size is not None and tuple(params.image_size) != tuple(x.shape[-2:]):
        raise ValueError(f"DSA draw was sized for {params.image_size}, images are {tuple(x.shape[-2:])}")


def make_augment(config) -> DSA | None:
    """DSA from a run config's augment section (``config.AugmentConfig``), or None when it is switched off."""
    return DSA(DSAConfig(config.strategy, config.mode)) if config.dsa else None
