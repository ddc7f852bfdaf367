"""The streaming resampler behind StreamDetector: equal to scipy's upfirdn, and blind to chunking."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import upfirdn

from lorarffi.dsp.resample import StreamResampler, _upfirdn_range


@pytest.mark.parametrize(("up", "down"), [(5, 6), (4, 3), (2, 5), (25, 24)])
@pytest.mark.parametrize("i0", [0, 3, 17])
def test_polyphase_filter_equals_scipy_upfirdn(up, down, i0):
    rng = np.random.default_rng(up * 100 + down)
    x = (rng.standard_normal(4000) + 1j * rng.standard_normal(4000)).astype(np.complex64)
    h = rng.standard_normal(4 * max(up, down) * 2 + 1).astype(np.float32)
    ref = upfirdn(h, x, up, down)
    count = ref.size - i0
    got = _upfirdn_range(h, x, up, down, i0, count)
    assert got.dtype == np.complex64
    np.testing.assert_allclose(got, ref[i0:], rtol=0, atol=1e-5 * np.abs(ref).max())
    # a negative control: one output phase off is not equal
    assert not np.allclose(_upfirdn_range(h, x, up, down, i0 + 1, count - 1), ref[i0 : i0 + count - 1],
                           atol=1e-3)


def test_stream_resampler_matches_resample_poly_in_the_band():
    """A tone well inside the band comes out as the same tone at the new rate (5/6: 2.4 -> 2 MS/s)."""
    n = 24_000
    f_cycles = 0.05  # per input sample
    x = np.exp(2j * np.pi * f_cycles * np.arange(n)).astype(np.complex64)
    rs = StreamResampler(5, 6, 4096)
    y = np.concatenate(rs.process(x) + rs.flush())
    assert y.size == n * 5 // 6
    m = np.arange(200, y.size - 200)
    expect = np.exp(2j * np.pi * f_cycles * 6 / 5 * m)
    assert np.max(np.abs(y[m] - expect)) < 2e-3


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(1, 9000), max_size=5))
def test_stream_resampler_ignores_chunk_boundaries(cuts):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(30_000) + 1j * rng.standard_normal(30_000)).astype(np.complex64)
    one = StreamResampler(5, 6, 4096)
    whole = np.concatenate(one.process(x) + one.flush())
    edges = np.cumsum(cuts)
    rs = StreamResampler(5, 6, 4096)
    parts = [b for chunk in np.split(x, edges[edges < x.size]) for b in rs.process(chunk)] + rs.flush()
    assert np.array_equal(np.concatenate(parts), whole)
