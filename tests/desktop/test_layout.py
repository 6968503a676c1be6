"""Layout of the run dashboard with real widgets: every chart lies inside the view and none overlaps another,
whatever the gradient legend's layer names ask for (issue 24: the third column was cut off at 1600 x 1000)."""

from __future__ import annotations

import pytest

from desktop.charts.dashboard import RunDashboard

LONG_LAYERS = ["conv1.weight", "layer1.0.conv1.weight", "layer1.0.conv2.weight", "layer4.1.downsample.0.weight"]


@pytest.mark.parametrize("width", [1000, 1320, 1800])  # the dashboard beside the settings, 1366 to 1920 screens
def test_every_chart_of_the_dashboard_is_inside_the_view_and_apart(qtbot, width):
    board = RunDashboard()
    qtbot.addWidget(board)
    board.resize(width, 800)
    board._update_grad_legend(LONG_LAYERS)
    board.show()
    qtbot.waitExposed(board)
    qtbot.wait(50)
    rects = board.chart_rectangles()
    visible = board.visible_width()
    for name, rect in rects.items():
        assert rect.left() >= 0 and rect.right() <= visible, (name, rect.left(), rect.right(), visible)
        assert rect.width() >= 0.2 * visible, (name, rect.width())  # three columns of about a third each
    names = sorted(rects)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not rects[a].intersects(rects[b]), (a, b)
