"""Stage detection on LLC-over-training curves: level stretches and the climbs between them are
found, and noise alone makes no boundary."""
from __future__ import annotations

import random

import pytest

from lambdascope.llc.stages import detect_stages


def _steps(n: int) -> list[int]:
    return [round(10 * 1.5**k) for k in range(n)]


def test_plateaus_and_the_climbs_between_them_are_the_stages() -> None:
    rng = random.Random(0)
    levels = [10] * 6 + [30] * 6 + [50] * 6  # three plateaus (a DLN learning rank 1, 2, 3)
    llc = [v + rng.gauss(0, 0.5) for v in levels]
    loss = [1.0] * 6 + [0.5] * 6 + [0.1] * 6
    stages = detect_stages(_steps(18), llc, [0.5] * 18, loss)
    assert [s.llc for s in stages] == ["flat", "up", "flat", "up", "flat"], stages
    assert [(s.first, s.last) for s in stages] == [(0, 5), (5, 6), (6, 11), (11, 12), (12, 17)]
    assert [s.loss for s in stages] == ["flat", "down", "flat", "down", "flat"]
    assert stages[1].label == "λ̂ up, loss down" and stages[1].llc_change == pytest.approx(20, abs=2)


def test_a_fall_while_the_loss_stays_flat_is_read_as_such() -> None:
    llc = [10, 20, 30, 40, 40, 40, 35, 30, 25, 20]
    loss = [1.0, 0.7, 0.4, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]
    stages = detect_stages(_steps(10), llc, [0.3] * 10, loss)
    assert [s.llc for s in stages] == ["up", "flat", "down"], stages
    assert stages[-1].label == "λ̂ down, loss flat"


@pytest.mark.parametrize("seed", range(20))
def test_noise_alone_makes_no_boundary(seed: int) -> None:
    rng = random.Random(seed)
    se = [rng.uniform(0.5, 2.0) for _ in range(30)]
    llc = [100 + rng.gauss(0, s) for s in se]  # one level, each point off by its own error
    stages = detect_stages(_steps(30), llc, se)
    assert [s.llc for s in stages] == ["flat"] and (stages[0].first, stages[0].last) == (0, 29)
    assert stages[0].loss == "unknown" and stages[0].label == "λ̂ flat"


def test_bad_curves_are_refused() -> None:
    with pytest.raises(ValueError, match="increase"):
        detect_stages([1, 5, 5], [1, 2, 3], [0.1] * 3)
    with pytest.raises(ValueError, match="one entry per checkpoint"):
        detect_stages([1, 2], [1.0], [0.1])
    with pytest.raises(ValueError, match="finite"):
        detect_stages([1, 2], [1.0, float("nan")], [0.1, 0.1])
    assert detect_stages([1], [1.0], [0.1]) == []


def test_a_late_fall_of_a_small_loss_is_still_a_fall() -> None:
    """The DLN's last mode: the loss goes 0.072 → 0 after 5.7 → 0.7 → 0.072; against the run's
    range that is under 2%, but the loss went down (bench/stages.py)."""
    llc = [8.0] * 3 + [24.0] * 3 + [40.0] * 3 + [56.0] * 3
    loss = [5.68] * 3 + [0.685] * 3 + [0.072] * 3 + [0.0] * 3
    stages = detect_stages(_steps(12), llc, [0.5] * 12, loss)
    assert [(s.llc, s.loss) for s in stages] == [("flat", "flat"), ("up", "down"), ("flat", "flat"), ("up", "down"),
                                                 ("flat", "flat"), ("up", "down"), ("flat", "flat")]
