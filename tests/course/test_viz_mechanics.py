"""minimipt.course.viz_mechanics: the figures of notebooks 04-06 draw headless and change with their
controls."""

from __future__ import annotations

import math

import pytest

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # noqa: E402

from minimipt.course import analysis as A  # noqa: E402
from minimipt.course import viz_mechanics as V  # noqa: E402
from tests._support import png  # noqa: E402


def test_plot_gate_trajectory_changes_with_its_controls():
    a = V.plot_gate_trajectory(-3.0, 0.3, L=32, second_at=10)
    assert isinstance(a, Figure) and len(a.axes) == 3  # plane, colorbar, modulus
    assert "p = 0.0474" in a.axes[0].get_title()
    b = V.plot_gate_trajectory(1.0, 0.3, L=32, second_at=10)
    c = V.plot_gate_trajectory(-3.0, 1.2, L=32, second_at=None)
    assert png(a) != png(b) and png(a) != png(c)
    with pytest.raises(ValueError, match="second_at"):
        V.plot_gate_trajectory(second_at=40, L=32)


def test_plot_layer_memory_kernel():
    fig = V.plot_layer_memory_kernel([(1e-3, 0.1), (0.1, 0.5)], L=32, d_model=8)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 2 and ax.get_yscale() == "log"
    png(fig)


def test_plot_gate_numerics_marks_the_naive_failure():
    fig = V.plot_gate_numerics(-120.0, 60.0)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert any("−inf" in t.get_text() for t in ax.get_legend().get_texts())
    png(fig)


def test_plot_scan_error():
    r = A.scan_error_vs_length([16, 64], B=1, D=4)
    r["error"][("cumprod", "float32")][-1] = math.inf  # a NaN result is drawn as a cross
    fig = V.plot_scan_error(r)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.get_lines()) >= 7
    png(fig)


def test_plot_cache_membership_changes_with_K_and_threshold():
    a = V.plot_cache_membership(K=4, threshold=0.0, L=32, D=8)
    assert isinstance(a, Figure) and len(a.axes) == 3
    img = a.axes[1].get_images()[0].get_array()
    assert img.shape == (32, 32) and int(img.sum(1).max()) <= 4
    b = V.plot_cache_membership(K=8, threshold=0.0, L=32, D=8)
    c = V.plot_cache_membership(K=4, threshold=0.05, L=32, D=8)
    assert png(a) != png(b) and png(a) != png(c)
    V.plot_cache_membership(K=None, threshold=0.02, L=16, D=4)
    window = V.plot_cache_membership(K=4, threshold=0.0, L=32, D=8, contrast=0.0, noise=0.0)
    img = window.axes[1].get_images()[0].get_array()
    assert int(img[31].sum()) == 4 and img[31, 28:].all()  # the last K tokens
    with pytest.raises(ValueError, match="K must"):
        V.plot_cache_membership(K=0)


def test_plot_chunk_tradeoff_marks_the_chosen_chunk():
    a = V.plot_chunk_tradeoff(chunk=8, dtype="float32", L=128, B=1, D=4, chunks=(4, 8, 32), repeats=1)
    assert len(a.axes) == 2 and a.axes[0].get_xscale() == "log"
    assert "C = 8" in a.axes[0].get_title() and "float32" in a.axes[0].get_title()
    b = V.plot_chunk_tradeoff(chunk=32, dtype="float64", L=128, B=1, D=4, chunks=(4, 8, 32), repeats=1)
    assert "C = 32" in b.axes[0].get_title() and "float64" in b.axes[0].get_title()
    with pytest.raises(ValueError, match="dtype"):
        V.plot_chunk_tradeoff(dtype="bfloat16")
