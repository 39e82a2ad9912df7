"""Pictures: accuracy plots that do not mislead, image grids that stay readable for many classes."""

import json

import numpy as np
import pytest
import torch
from matplotlib.lines import Line2D
from PIL import Image

from pdd_ray.visualize import (DETAIL_CLASSES, Reference, accuracy_figure, image_grid_figure, png_text,
                               save_accuracy_plot, save_image_grid, y_floor)

MIN_TILE_PX = 24  # a tile smaller than this shows no detail at 100%


def test_image_grid_is_a_png(tmp_path):
    pixels = torch.rand(6, 1, 8, 8) * 1.4 - 0.2  # out-of-range values are clipped for display
    path = save_image_grid(pixels, torch.tensor([0, 0, 1, 1, 2, 2]), tmp_path / "g.png", ("a", "b", "c"), "t")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 50


# ------------------------------------------------------------------ accuracy plot

def _curve_ticks(fig):
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    return [t for t in ax.get_xticks() if low <= t <= high]


@pytest.mark.parametrize("stages", [2, 3, 7, 45])
def test_stage_ticks_are_whole_numbers(stages):
    fig = accuracy_figure({"pdd": [0.5 + 0.001 * k for k in range(stages)]})
    ticks = _curve_ticks(fig)
    assert ticks and all(float(t).is_integer() for t in ticks)
    if stages <= 7:
        assert ticks == list(range(1, stages + 1))  # every stage has its tick


def test_error_bars_are_the_std_over_runs():
    fig = accuracy_figure({"pdd": [0.50, 0.60]}, errors={"pdd": [0.02, 0.05]})
    ax = fig.axes[0]
    (container,) = ax.containers
    (bars,) = container.lines[2]  # the vertical error segments
    spans = sorted(round(float(seg[1][1] - seg[0][1]), 6) for seg in bars.get_segments())
    assert spans == [4.0, 10.0]  # 2 x std, in percent


def test_a_single_random_real_reference_is_a_horizontal_line_in_the_legend():
    fig = accuracy_figure({"pdd": [0.7, 0.8, 0.82]}, references={"random real": Reference(0.65, 0.01)}, chance=0.1)
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "random real"]
    assert isinstance(line, Line2D)
    ys = line.get_ydata()
    assert len(set(map(float, ys))) == 1 and float(ys[0]) == pytest.approx(65.0)
    assert line.get_color() != ax.containers[0].lines[0].get_color()  # not mistaken for the curve
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "random real" in legend and "pdd" in legend


def test_a_reference_per_stage_is_drawn_per_stage():
    fig = accuracy_figure({"pdd": [0.7, 0.8]}, references={"random real": Reference([0.6, 0.65], [0.0, 0.01])})
    (bars,) = [c for c in fig.axes[0].containers if c.get_label() == "random real"]
    line = bars.lines[0]  # the data line of the error-bar container
    assert line.get_linestyle() == "--" and list(line.get_xdata()) == [1, 2] and list(line.get_ydata()) == pytest.approx([60.0, 65.0])


def test_y_axis_is_not_zoomed_onto_a_half_point_range():
    ys = [0.880, 0.882, 0.885]  # matplotlib's automatic limits would span 88.0-88.5
    fig = accuracy_figure({"pdd": ys}, chance=0.1)
    low, high = fig.axes[0].get_ylim()
    assert low <= 10.0 and high >= 88.5 and high - low >= 50
    assert accuracy_figure({"pdd": ys}).axes[0].get_ylim()[0] == 0.0  # no chance given: from 0
    assert fig.axes[0].get_ylabel() == "test accuracy (%)"


def test_y_floor_stays_at_or_below_chance_and_every_point():
    assert y_floor([0.8], 0.1) == 10.0
    assert y_floor([0.8], 0.01) == 0.0  # 100 classes
    assert y_floor([0.05], 0.1) == 0.0  # a curve below chance stays visible
    assert y_floor([-0.02], 0.1) == 0.0


def test_saved_plot_carries_its_provenance(tmp_path):
    record = {"config": {"seed": 3}, "seed": 3, "versions": {"torch": "x"}, "other": 1}
    path = save_accuracy_plot({"pdd": [0.5, 0.6]}, tmp_path / "a.png", errors={"pdd": [0.01, 0.02]},
                              metadata=png_text("5 nets, progressive", "pdd-ray run", record))
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.text["Description"] == "5 nets, progressive" and img.text["Source"] == "pdd-ray run"
        assert json.loads(img.text["Comment"]) == {"config": {"seed": 3}, "seed": 3, "versions": {"torch": "x"}}


# ------------------------------------------------------------------ image grids for many classes

def _class_colour(c: int) -> tuple[int, int, int]:
    """A colour no other class has (and no text or padding pixel: never grey, never white)."""
    return 40 + 20 * (c % 10), 40 + 20 * ((c // 10) % 10), 0 if c < 100 else 255


def _coloured_set(classes: int, per_class: int):
    labels = torch.arange(classes).repeat_interleave(per_class)
    colours = torch.tensor([_class_colour(c) for c in range(classes)], dtype=torch.float32) / 255
    pixels = colours[labels][:, :, None, None].expand(-1, -1, 8, 8).contiguous()
    return pixels, labels


def _pixels_per_class(png, classes: int) -> np.ndarray:
    """How many pixels of the picture show each class's colour (within PNG rounding)."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int).reshape(-1, 3)
    r, g = np.rint((rgb[:, 0] - 40) / 20).astype(int), np.rint((rgb[:, 1] - 40) / 20).astype(int)
    exact = ((np.abs(rgb[:, 0] - 40 - 20 * r) <= 2) & (np.abs(rgb[:, 1] - 40 - 20 * g) <= 2)
             & (r >= 0) & (r <= 9) & (g >= 0) & (g <= 9) & ((rgb[:, 2] <= 2) | (rgb[:, 2] >= 253)))
    cls = r + 10 * g + 100 * (rgb[:, 2] >= 253)
    return np.bincount(cls[exact], minlength=classes)[:classes]


@pytest.mark.parametrize("classes, per_class", [(100, 10), (200, 2)])
def test_many_classes_every_class_is_shown_in_tiles_people_can_see(tmp_path, classes, per_class):
    pixels, labels = _coloured_set(classes, per_class)
    path = save_image_grid(pixels, labels, tmp_path / "stage_1.png", title="stage 1")
    counts = _pixels_per_class(path, classes)
    # every class appears, each at least one tile of MIN_TILE_PX x MIN_TILE_PX (its overview tile)
    assert counts.min() >= MIN_TILE_PX ** 2, f"class {counts.argmin()} has {counts.min()} px"
    with Image.open(path) as img:
        assert max(img.size) < 10_000  # not one row per class: 200 rows would be far taller


def test_many_classes_the_first_classes_show_every_image():
    pixels, labels = _coloured_set(200, 3)
    fig = image_grid_figure(pixels, labels)
    detail, overview = fig.axes
    rows = len(detail.get_yticks())
    assert rows == DETAIL_CLASSES and detail.get_images()[0].get_array().shape[1] == 3 * 9 + 1  # 3 per row
    assert len(overview.get_yticks()) == 10  # 200 classes, 20 a row


def test_few_classes_keep_one_row_per_class_in_one_panel():
    pixels, labels = _coloured_set(10, 4)
    fig = image_grid_figure(pixels, labels, tuple(f"c{i}" for i in range(10)))
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"c{i}" for i in range(10)]
    assert tuple(fig.get_size_inches()) == (3.5, 5.0)  # the size small sets always had
