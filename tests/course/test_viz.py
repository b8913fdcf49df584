"""minimipt.course.viz: every plotting function runs headless and returns the figure it promises."""

from __future__ import annotations

import math

import pytest

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # noqa: E402

from minimipt.course import theory as T  # noqa: E402
from minimipt.course import viz  # noqa: E402
from tests._support import png  # noqa: E402


def test_plot_rotation():
    fig = viz.plot_rotation(theta=0.5, steps=12)
    (line,) = fig.axes[0].get_lines()
    assert list(line.get_ydata()) == pytest.approx([math.cos(0.5 * t) for t in range(12)])
    assert png(viz.plot_rotation(0.5)) != png(viz.plot_rotation(1.5))  # the widget's plot changes
    with pytest.raises(ValueError, match="steps"):
        viz.plot_rotation(steps=1)


def test_plot_memory_kernel():
    fig = viz.plot_memory_kernel((0.5, 0.9, 1.0), K=20)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 4  # three kernels and the floor line
    assert ax.get_yscale() == "log"
    assert list(ax.get_lines()[2].get_ydata()) == [1.0] * 20
    png(fig)
    with pytest.raises(ValueError, match="abs_lams"):
        viz.plot_memory_kernel((1.5,))


def test_plot_tradeoff():
    r = T.copy_recall_tradeoff([0.0, 0.8, 0.95], k=2, D=8, L=8, V=16, trials=8)
    fig = viz.plot_tradeoff(r)
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # plot and colorbar
    ax = fig.axes[0]
    assert len(ax.collections) >= 2  # the fixed-λ points and the gate star
    assert "steps back" in ax.get_xlabel()
    png(fig)


def test_plot_tradeoff_explorer_changes_with_D_and_k():
    a = viz.plot_tradeoff_explorer(D=8, k=2, L=8, V=16, trials=8)
    assert isinstance(a, Figure) and "D=8" in a.axes[0].get_title() and "2 steps back" in a.axes[0].get_xlabel()
    b = viz.plot_tradeoff_explorer(D=16, k=2, L=8, V=16, trials=8)
    c = viz.plot_tradeoff_explorer(D=8, k=12, L=8, V=16, trials=8)  # L grows to k + 2
    assert png(a) != png(b) and png(a) != png(c)


def test_plot_selective_copy():
    fig = viz.plot_selective_copy(D=4, Ls=(2, 8), ps=(0.1,), trials=16)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and "marked token" in ax.get_ylabel()
    bound = [line for line in ax.get_lines() if "bound" in line.get_label()][0]
    assert list(bound.get_ydata()) == [1.0, 0.5]
    png(fig)


def test_plot_phase_memory_changes_with_its_controls():
    small = viz.plot_phase_memory(D=16, N=8, noise=0.0, trials=2, ratios=(0.5, 1.0, 2.0))
    assert isinstance(small, Figure) and len(small.axes) == 2
    left, right = small.axes
    assert len(left.get_lines()) >= 6 and left.get_xscale() == "log"  # three decoders: theory and measured
    labels = " ".join(line.get_label() for line in left.get_lines())
    assert "complex-linear" in labels and "real-linear" in labels
    assert "N = 8" in right.get_title()
    big = viz.plot_phase_memory(D=16, N=48, noise=0.0, trials=2, ratios=(0.5, 1.0, 2.0))
    noisy = viz.plot_phase_memory(D=16, N=8, noise=2.0, trials=2, ratios=(0.5, 1.0, 2.0))
    assert png(small) != png(big) and png(small) != png(noisy)
    with pytest.raises(ValueError, match="D and N"):
        viz.plot_phase_memory(D=0, N=4)


def test_plot_phase_diagram():
    r = T.recall_phase_diagram([0.01, 0.3], [0.5, 2.0], D=8, trials=2)
    fig = viz.plot_phase_diagram(r)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert fig.axes[0].get_ylabel() == "measurement rate p"
    png(fig)


def test_plot_entropy_vs_p():
    r = T.entropy_vs_p([0.01, 0.1, 1.0], D=8, L=16, active=2, trials=2)
    fig = viz.plot_entropy_vs_p(r)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert fig.axes[0].get_xscale() == "log"
    png(fig)


def test_plot_particle_state():
    a = viz.plot_particle_state(p=0.02, D=16, L=32, active=2, trials=2, grid=(0.01, 0.1, 1.0))
    b = viz.plot_particle_state(p=0.9, D=16, L=32, active=2, trials=2, grid=(0.01, 0.1, 1.0))
    assert isinstance(a, Figure) and len(a.axes) == 3
    assert a.axes[0].get_title() != b.axes[0].get_title()
    star = [line for line in a.axes[2].get_lines() if line.get_label() == "this state"][0]
    assert list(star.get_xdata()) == [0.02, 0.02]  # the entropy panel marks the current p
    assert png(a) != png(b)
    with pytest.raises(ValueError, match="p must"):
        viz.plot_particle_state(p=0.0)
