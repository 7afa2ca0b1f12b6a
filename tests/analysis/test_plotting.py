"""The figure readability check: the smallest text of a figure at the size the book's column shows it."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from lib.analysis import plotting  # noqa: E402


def _fig(width_in: float, fontsize: float):
    fig = plt.figure(figsize=(width_in, 2), dpi=100)
    fig.text(0.0, 0.5, "x" * 5, fontsize=fontsize)  # the only text
    fig.text(1.0, 0.5, "y", fontsize=fontsize + 4, ha="right")
    fig.canvas.draw()
    return fig


@pytest.mark.parametrize("width_in, fontsize, want", [
    (5.0, 9.0, 9.0 * 100 / 96),  # narrower than the column: shown at its own size (100 dpi image, 96 CSS px/in)
    (13.8, 9.0, 9.0 * 690 / 96 / 13.8),  # wider: scaled to 690 px
])
def test_smallest_text_at_display_size(width_in, fontsize, want):
    fig = _fig(width_in, fontsize)
    r = plotting.readability(fig)
    tight = r["width_in"]  # the texts span the figure, so the tight box is about its width
    assert abs(tight - width_in) / width_in < 0.1
    expected = fontsize * min(100, 690 / tight) / 96
    assert r["min_pt"] == pytest.approx(expected, rel=1e-2) and r["text"] == "xxxxx"
    assert r["min_pt"] == pytest.approx(want, rel=0.1)
    plt.close(fig)


def test_error_mode_names_the_figure(monkeypatch):
    fig = _fig(14, 8)
    fig.suptitle("Fig. 9: too wide")
    monkeypatch.setenv(plotting.FIGURE_CHECK, "error")
    with pytest.raises(ValueError, match="Fig. 9: too wide.*'xxxxx' at 4.1 pt"):
        plotting.check_readable(fig)
    monkeypatch.setenv(plotting.FIGURE_CHECK, "")
    assert plotting.check_readable(fig) == {}
    plt.close(fig)
