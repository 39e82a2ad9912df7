import torch
from PIL import Image

from pdd_ray.visualize import save_accuracy_plot, save_image_grid


def test_image_grid_is_a_png(tmp_path):
    pixels = torch.rand(6, 1, 8, 8) * 1.4 - 0.2  # out-of-range values are clipped for display
    path = save_image_grid(pixels, torch.tensor([0, 0, 1, 1, 2, 2]), tmp_path / "g.png", ("a", "b", "c"), "t")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 50


def test_accuracy_plot_is_a_png(tmp_path):
    path = save_accuracy_plot({"pdd": [0.5, 0.6, 0.7], "random": [0.4, 0.5, 0.55]}, tmp_path / "a.png",
                              errors={"pdd": [0.01, 0.02, 0.01]})
    with Image.open(path) as img:
        assert img.format == "PNG"
