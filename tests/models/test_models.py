import pytest
import torch

from pdd_ray.errors import UserError
from pdd_ray.models import MODELS, create_model
from pdd_ray.models.convnet import default_depth


@pytest.mark.parametrize("name", ["convnet", "convnet_bn", "resnet10", "resnet18", "resnet10_bn", "resnet18_bn"])
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_every_model_maps_images_to_logits(name, channels, size):
    model = create_model(name, channels, 7, size, width=8)
    out = model(torch.randn(3, channels, size, size))
    assert out.shape == (3, 7)
    assert model.embed(torch.randn(2, channels, size, size)).shape == (2, model.embed_dim)


def test_convnet_matches_reference_layout():
    model = create_model("convnet", 3, 10, 32, width=128)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in model.features if isinstance(m, torch.nn.GroupNorm)]
    assert len(convs) == 3 and all(c.out_channels == 128 and c.kernel_size == (3, 3) for c in convs)
    # instance norm == GroupNorm with one group per channel, affine
    assert all(n.num_groups == n.num_channels == 128 and n.affine for n in norms)
    assert model.classifier.in_features == 128 * 4 * 4
    assert any(isinstance(m, torch.nn.AvgPool2d) for m in model.features)


def test_depth_defaults_follow_image_size():
    assert default_depth(28) == 3 and default_depth(32) == 3 and default_depth(64) == 4
    tiny = create_model("convnet", 3, 200, 64, width=4)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in tiny.features) == 4
    assert tiny.classifier.in_features == 4 * 4 * 4


def test_instance_norm_convnet_has_no_buffers():
    # No running statistics: train and eval mode agree, and the flat forward needs nothing else.
    model = create_model("convnet", 1, 10, 28, width=8)
    assert list(model.buffers()) == []
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(model.train()(x), model.eval()(x))


@pytest.mark.parametrize("kwargs,fragment", [
    ({"width": 0}, "width"), ({"depth": 0}, "depth"), ({"norm": "layer"}, "norm"), ({"depth": 6}, "below 1px")])
def test_bad_model_options_are_user_errors(kwargs, fragment):
    with pytest.raises(UserError, match=fragment):
        create_model("convnet", 1, 10, 28, **kwargs)


def test_unknown_model_lists_choices():
    with pytest.raises(UserError, match="resnet18"):
        create_model("vgg11", 1, 10, 28)
    assert "convnet" in MODELS.names()
