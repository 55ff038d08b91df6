"""Long chains go into a report as block means, so a 100,000-step audit stays a small message."""
from __future__ import annotations

import pytest

from services.estimator.worker import MAX_TRACE_POINTS, downsample


def test_short_traces_are_kept_step_by_step():
    traces = [[float(i) for i in range(100)], [1.0] * 100]
    assert downsample(traces) == (1, traces)


def test_long_traces_become_block_means_with_their_stride():
    steps = 10_001
    traces = [[float(i) for i in range(steps)], [2.0] * steps]
    stride, out = downsample(traces)
    assert stride == 3 and all(len(t) == -(-steps // 3) <= MAX_TRACE_POINTS for t in out)
    assert out[0][0] == pytest.approx(1.0) and out[0][1] == pytest.approx(4.0)
    assert out[0][-1] == pytest.approx(9_999.5)  # the last, partial block: steps 9,999 and 10,000
    assert out[1] == pytest.approx([2.0] * len(out[1]))
