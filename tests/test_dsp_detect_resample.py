"""The streaming resampler behind StreamDetector: equal to scipy's upfirdn, and blind to chunking."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import upfirdn

from lorarffi.dsp.resample import StreamResampler, upfirdn_range


@pytest.mark.parametrize(("up", "down"), [(5, 6), (4, 3), (2, 5), (25, 24)])
@pytest.mark.parametrize("i0", [0, 3, 17])
def test_polyphase_filter_equals_scipy_upfirdn(up, down, i0):
    rng = np.random.default_rng(up * 100 + down)
    x = (rng.standard_normal(4000) + 1j * rng.standard_normal(4000)).astype(np.complex64)
    h = rng.standard_normal(4 * max(up, down) * 2 + 1).astype(np.float32)
    ref = upfirdn(h, x, up, down)
    count = ref.size - i0
    got = upfirdn_range(h, x, up, down, i0, count)
    assert got.dtype == np.complex64
    # Both sum n_taps complex64 products per output (ours by BLAS axpy, scipy in its own order): each within
    # (n_taps + 1) u of sum |h_t x_t| <= max|x| * (largest phase's sum |h_t|).
    n_taps = -(-h.size // up)
    phase_sum = max(np.abs(h[p::up]).sum() for p in range(up))
    bound = 2 * (n_taps + 1) * 2.0**-24 * np.abs(x).max() * phase_sum
    np.testing.assert_allclose(got, ref[i0:], rtol=0, atol=bound)
    # a negative control: one output phase off is not equal
    assert not np.allclose(upfirdn_range(h, x, up, down, i0 + 1, count - 1), ref[i0 : i0 + count - 1],
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
    # the filter's design, not rounding: a Kaiser(beta 5) window gives about 54 dB of stop-band attenuation
    # (beta / 0.1102 + 8.7), so a pass-band ripple of 10**(-54 / 20) = 2e-3
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
