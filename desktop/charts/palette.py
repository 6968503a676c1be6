"""Series colours: the Okabe-Ito palette, distinguishable with the common colour-vision deficiencies.

Okabe and Ito's eight colours stay apart under protanopia, deuteranopia and tritanopia (tests/desktop/
test_palette.py simulates each); matplotlib's default blue/orange/green/red, which the charts used before, puts
green and red within a few units of each other for a protanope. The browser view uses the same list
(``resources/web/js/charts.js``). Yellow is last: it is faint on a white background.
"""

from __future__ import annotations

BLUE = "#0072B2"
VERMILLION = "#D55E00"
GREEN = "#009E73"  # Okabe-Ito's "bluish green"
PURPLE = "#CC79A7"  # "reddish purple"
ORANGE = "#E69F00"
SKY = "#56B4E9"
BLACK = "#000000"
YELLOW = "#F0E442"
OKABE_ITO = (BLUE, VERMILLION, GREEN, PURPLE, ORANGE, SKY, BLACK, YELLOW)
GREY = "#7f7f7f"  # references (a chance diagonal, a resume mark), never a series
