"""Series drawn together stay apart for readers with the common colour-vision deficiencies.

Each set of colours the charts draw side by side is simulated as a protanope, a deuteranope and a tritanope see
it (Machado, Oliveira and Fernandes 2009, severity 1), and every pair must stay at least ``MIN_DELTA_E`` apart in
CIELAB. The palette the charts used before (matplotlib's) fails this: its green and red are 4.6 apart for a
protanope. The browser view draws with the same list.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from desktop.charts.dashboard import LAYER_COLOURS, SPLIT_PENS
from desktop.charts.federation import SERVER_CURVES, SITE_COLOURS
from desktop.charts.palette import OKABE_ITO
from desktop.gui.runs_page import PALETTE as RUN_COLOURS

ROOT = Path(__file__).parents[2]
MIN_DELTA_E = 15.0
SIMULATIONS = {
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
}
SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
WHITE = np.array([0.95047, 1.0, 1.08883])


def _lab(colour: str, simulation: list[list[float]]) -> np.ndarray:
    """CIELAB of ``colour`` (``#rrggbb``) as seen with ``simulation`` (applied in linear RGB)."""
    srgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    xyz = SRGB_TO_XYZ @ np.clip(np.array(simulation) @ linear, 0, 1) / WHITE
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _closest(colours: list[str]) -> dict[str, float]:
    """The smallest distance between two of ``colours`` under each deficiency."""
    return {
        name: min(float(np.linalg.norm(_lab(a, m) - _lab(b, m))) for a, b in itertools.combinations(colours, 2))
        for name, m in SIMULATIONS.items()
    }


@pytest.mark.parametrize(
    "drawn_together",
    [
        pytest.param([pen.color().name() for pen in SPLIT_PENS.values()], id="train and validation"),
        pytest.param(["#000000", *LAYER_COLOURS], id="gradient norm and its layers"),
        pytest.param([colour for _, _, colour in SERVER_CURVES], id="server curves"),
        pytest.param(list(SITE_COLOURS), id="sites"),
        pytest.param(list(OKABE_ITO), id="browser series"),
        pytest.param(list(RUN_COLOURS), id="compared runs"),
    ],
)
def test_series_drawn_together_stay_apart_with_colour_vision_deficiencies(drawn_together):
    closest = _closest(drawn_together)
    assert all(distance >= MIN_DELTA_E for distance in closest.values()), closest


def test_the_old_palette_would_fail_and_the_browser_draws_with_the_same_list():
    assert _closest(["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"])["protanopia"] < 5  # matplotlib's, as before
    script = (ROOT / "resources" / "web" / "js" / "charts.js").read_text(encoding="utf-8")
    (listed,) = re.findall(r"const COLOURS = \[([^\]]*)\]", script)
    assert [c.strip().strip('"').upper() for c in listed.split(",")] == [c.upper() for c in OKABE_ITO]
