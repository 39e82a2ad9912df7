"""Per-channel normalisation or ZCA whitening, both invertible and saveable.

Synthetic images live in the preprocessed space (that is what the network and
the DSA augmentation see). The inverse brings them back to pixels for image
grids and for use in other tools, so the fitted transform travels with every
synthetic set.

The two are alternatives, as in the reference code (PDD/MTT ``get_dataset``):
without ZCA, pixels are normalised by the per-channel mean/std; with ZCA, the
whitening (kornia ``ZCAWhitening(eps=0.1, compute_inv=True)``) is fitted on
and applied to the raw [0,1] pixels, with no mean/std normalisation first.
The mean/std are still recorded, but are not applied in that case.
"""

from __future__ import annotations

import torch
from kornia.enhance import ZCAWhitening

ZCA_EPS = 0.1  # the reference MTT setting


class Preprocessor:
    """x -> (x - mean) / std, or x -> ZCA(x) on raw pixels when a ZCA fit is given.

    ``normalise`` says whether the mean/std step runs; by default it does
    exactly when there is no ZCA. Sets saved before ZCA moved onto raw pixels
    carry no such flag and were normalised first: ``from_tensors`` reads them
    back that way.
    """

    def __init__(self, mean, std, zca: dict[str, torch.Tensor] | None = None, normalise: bool | None = None):
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.zca = zca
        self.normalise = (zca is None) if normalise is None else bool(normalise)

    @classmethod
    def fit(cls, train_images: torch.Tensor, mean, std, zca: bool, eps: float = ZCA_EPS) -> "Preprocessor":
        """Fit on [0,1] training images; ZCA statistics come from the raw training pixels only."""
        if not zca:
            return cls(mean, std)
        fitted = ZCAWhitening(eps=eps, compute_inv=True).fit(train_images.float())
        return cls(mean, std, {"mean_vector": fitted.mean_vector, "transform": fitted.transform_matrix,
                               "inverse": fitted.transform_inv})

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def _zca_module(self, device) -> ZCAWhitening:
        module = ZCAWhitening(eps=ZCA_EPS, compute_inv=True)
        module.mean_vector = self.zca["mean_vector"].to(device)
        module.transform_matrix = self.zca["transform"].to(device)
        module.transform_inv = self.zca["inverse"].to(device)
        module.fitted = True
        return module

    def __call__(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """[0,1] pixels -> network space (batched so ZCA on a whole dataset stays small)."""
        if self.normalise:
            x = self._normalise(x)
        if self.zca is None:
            return x
        module = self._zca_module(x.device)
        return torch.cat([module(chunk) for chunk in x.split(batch_size)])

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Network space -> [0,1] pixel space (not clamped: synthetic images may overshoot)."""
        if self.zca is not None:
            x = self._zca_module(x.device).inverse_transform(x)
        if self.normalise:
            x = x * self.std.to(x.device) + self.mean.to(x.device)
        return x

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Everything needed to rebuild this transform, as named tensors."""
        out = {"mean": self.mean.flatten().contiguous(), "std": self.std.flatten().contiguous(),
               "normalise": torch.tensor([int(self.normalise)], dtype=torch.uint8)}
        if self.zca is not None:
            out.update({f"zca_{k}": v.contiguous() for k, v in self.zca.items()})
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "Preprocessor":
        """Inverse of ``to_tensors`` (files without a ``normalise`` flag were always normalised)."""
        zca = {k[4:]: v for k, v in tensors.items() if k.startswith("zca_")} or None
        normalise = bool(tensors["normalise"].item()) if "normalise" in tensors else True
        return cls(tensors["mean"], tensors["std"], zca, normalise=normalise)

    def describe(self) -> dict:
        """A JSON summary for manifests."""
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist(),
                "normalise": self.normalise,
                "zca": self.zca is not None, "zca_eps": ZCA_EPS if self.zca is not None else None,
                "zca_fit_on": None if self.zca is None else ("normalised" if self.normalise else "pixels")}
