"""Per-packet RMS normalisation (lorarffi.dsp.normalize): unit power, zeros kept, numpy and torch alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lorarffi.dsp.normalize import rms_normalize

U32 = 2.0**-24  # unit roundoff of float32


def packets(seed: int, n: int = 4, length: int = 8192) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-3, 3, (n, 1))
    x = (rng.standard_normal((n, length)) + 1j * rng.standard_normal((n, length))) * scale
    return x.astype(np.complex64)


def mean_power(y: np.ndarray) -> np.ndarray:
    return np.mean(np.abs(y.astype(np.complex128)) ** 2, axis=-1)


def test_every_packet_gets_unit_power():
    """y = x * s with s the float32 rounding of 1/rms: s and every product are off by at most U32 relative,
    so the power (squares) by at most 4 U32; the float64 sums add nothing visible."""
    x = packets(0)
    y = rms_normalize(x)
    assert y.dtype == np.complex64 and y.shape == x.shape
    assert np.all(np.abs(mean_power(y) - 1.0) <= 4 * U32)
    assert np.all(np.abs(mean_power(x) - 1.0) > 0.5)  # negative control: the input was not unit power
    ref = x.astype(np.complex128) / np.sqrt(mean_power(x))[:, None]
    np.testing.assert_allclose(y, ref, rtol=2 * U32 * 1.01, atol=0)


def test_zero_packets_stay_zero_and_one_packet_keeps_its_shape():
    x = packets(1, 3, 64)
    x[1] = 0
    y = rms_normalize(x)
    assert np.all(y[1] == 0) and np.all(np.isfinite(y))
    one = rms_normalize(x[0])
    assert one.shape == (64,)
    np.testing.assert_array_equal(one, y[0])  # the same arithmetic on the same row


def test_the_input_is_not_modified_and_other_dtypes_are_converted():
    x = packets(2, 2, 128)
    keep = x.copy()
    rms_normalize(x)
    np.testing.assert_array_equal(x, keep)
    y = rms_normalize(x.astype(np.complex128)[:, ::2])  # complex128, not contiguous
    assert y.dtype == np.complex64
    np.testing.assert_array_equal(y, rms_normalize(np.ascontiguousarray(x[:, ::2])))


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(1e-3, 1e3), seed=st.integers(0, 1000))
def test_a_positive_scale_changes_only_rounding(scale, seed):
    """x and c x normalise to the same packet up to the rounding of c x (U32), of the two float32 scales
    (U32 each) and of the two products (U32 each): 5 U32 relative."""
    x = packets(seed, 2, 256)
    y = rms_normalize(x)
    np.testing.assert_allclose(rms_normalize(x * np.float32(scale)), y, rtol=5 * U32, atol=0)


def test_torch_tensors_give_the_numpy_result_on_their_device():
    """Both sum the squares in float64 (only the order differs: 1e-12 relative at most), which can move the
    float32 scale by one ulp (2 U32): then each product differs by at most 2 U32 + its own rounding."""
    x = packets(3)
    t = rms_normalize(torch.from_numpy(x))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.complex64 and t.device.type == "cpu"
    np.testing.assert_allclose(t.numpy(), rms_normalize(x), rtol=4 * U32, atol=0)
    z = torch.zeros(2, 16, dtype=torch.complex64)
    assert torch.equal(rms_normalize(z), z)
    assert rms_normalize(torch.from_numpy(x[0])).shape == (x.shape[1],)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_cuda_tensor_stays_on_the_gpu():
    x = packets(4)
    t = rms_normalize(torch.from_numpy(x).cuda())
    assert t.device.type == "cuda"
    np.testing.assert_allclose(t.cpu().numpy(), rms_normalize(x), rtol=4 * U32, atol=0)
