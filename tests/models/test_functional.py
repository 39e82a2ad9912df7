import pytest
import torch

from pdd_ray.models import FlatForward, ParamLayout, create_model, flatten_params, load_flat_, unflatten


@pytest.mark.parametrize("name", ["convnet", "resnet10"])
def test_flat_forward_equals_module_forward(name):
    torch.manual_seed(0)
    model = create_model(name, 3, 5, 16, width=8)
    x = torch.randn(4, 3, 16, 16)
    flat = flatten_params(model)
    assert torch.allclose(FlatForward(model)(x, flat), model(x), atol=1e-6)


def test_flat_forward_uses_the_given_vector_and_passes_gradients():
    torch.manual_seed(0)
    model = create_model("convnet", 1, 3, 8, width=4, depth=2)
    forward = FlatForward(model)
    flat = flatten_params(model).clone().requires_grad_(True)
    x = torch.randn(2, 1, 8, 8)
    base = forward(x, flat)
    shifted = forward(x, flat + 0.1)
    assert not torch.allclose(base, shifted)
    base.sum().backward()
    assert flat.grad is not None and flat.grad.abs().sum() > 0
    # the module's own parameters were not touched
    assert torch.equal(flatten_params(model), flat.detach())


def test_layout_round_trips_and_load_flat_writes_parameters():
    model = create_model("convnet", 1, 3, 8, width=4, depth=2)
    layout = ParamLayout.of(model)
    assert ParamLayout.from_dict(layout.to_dict()) == layout
    assert layout.numel == sum(p.numel() for p in model.parameters())
    new = torch.arange(layout.numel, dtype=torch.float32)
    load_flat_(model, new)
    assert torch.equal(flatten_params(model), new)
    parts = unflatten(new, layout)
    assert list(parts) == list(layout.names)
    with pytest.raises(ValueError):
        unflatten(new[:-1], layout)
