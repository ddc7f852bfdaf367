"""The simulator's building blocks on their own: the transmitter chain row by row, DC offset per component,
place channels, stacking channels, the SNR range and the batch convention."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lorarffi.dsp import LoRaConfig, packet_waveform
from lorarffi.errors import ConfigError
from lorarffi.sim import channel, make_fleet
from lorarffi.sim.batch import as_batch, per_packet, per_packet_column, unbatch
from lorarffi.sim.session import place_channel
from lorarffi.sim.transmitter import transmit

CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
N_SAMPLES = CFG.preamble_samples


def _bare_device(device_id: int, **impairments: object):
    """A device whose only impairments are ``impairments`` (linear PA, no noise, no ripple, no transients)."""
    base = make_fleet(1, seed=3, spread=0.0, first_device=device_id)[0]
    clean = dataclasses.replace(
        base, iq_gain_db=0.0, iq_phase_deg=0.0, dc_offset_i=0.0, dc_offset_q=0.0, phase_noise_rms_deg=0.0,
        sweep_coeffs_hz=(0.0, 0.0, 0.0), transient_overshoot=0.0, ripple_db=0.0, pa_saturation=1e6,
        pa_am_pm_deg=0.0, pa_ramp_s=0.0,
    )
    return dataclasses.replace(clean, **impairments)


def _transmit(profiles, seed: int = 0) -> np.ndarray:
    n = len(profiles)
    return transmit(profiles, CFG, np.zeros(0, np.int64), t0_s=np.zeros(n), n_samples=N_SAMPLES,
                    cfo_hz=np.zeros(n), rng=np.random.default_rng(seed))


def test_transmit_gives_each_row_its_own_senders_impairments():
    """A batch of two senders equals each sent alone, up to the random carrier phase of each row (constant
    along the row). The two differ by a 3 kHz sweep bow, a phase swing of radians over a chirp; float32 keeps
    the phase of unit-magnitude samples to a few 1e-7 rad, so 1e-4 rad is a wide bound."""
    a = _bare_device(1)
    b = _bare_device(2, sweep_coeffs_hz=(0.0, 3e3, 0.0))
    both = _transmit([a, b])
    assert both.shape == (2, N_SAMPLES) and both.dtype == np.complex64
    for row, dev in zip(both, (a, b), strict=True):
        alone = _transmit([dev], seed=5)[0]
        phase = np.unwrap(np.angle(row * np.conj(alone)).astype(np.float64))
        assert np.ptp(phase) < 1e-4
    # negative control: the two senders' waveforms differ beyond a constant phase
    cross = np.unwrap(np.angle(both[1] * np.conj(both[0])).astype(np.float64))
    assert np.ptp(cross) > 1.0


def test_transmitted_dc_offset_has_its_in_phase_and_quadrature_parts():
    """With a linear PA and no other impairment, carrier leakage ``dc_i + j dc_q`` adds exactly that complex
    constant, turned by the row's random carrier phase, which the clean packet shows against the ideal
    chirps. Errors: float32 rounding of unit-magnitude samples through the chain's FFT filter (a few 1e-7
    times log2 of the FFT length), bounded here by 1e-5."""
    dc = 0.05 - 0.2j
    x1 = _transmit([_bare_device(1, dc_offset_i=dc.real, dc_offset_q=dc.imag)], seed=7)[0]
    x0 = _transmit([_bare_device(1)], seed=7)[0]  # the same draws: the same carrier phase
    ideal = packet_waveform(CFG)[:N_SAMPLES]
    carrier = np.mean(x0 * np.conj(ideal)) / np.mean(np.abs(ideal) ** 2)
    assert abs(abs(carrier) - 1) < 1e-5
    np.testing.assert_allclose(x0, carrier * ideal, atol=1e-5)
    np.testing.assert_allclose((x1 - x0) / carrier, dc, atol=1e-5)


def test_place_channel_is_fixed_per_device_and_place_and_differs_between_places():
    dev_a, dev_b = make_fleet(2, seed=11)
    same = [place_channel(dev_a, 1, doppler_hz=0.2) for _ in range(2)]
    for f in dataclasses.fields(channel.MultipathChannel):
        assert np.array_equal(getattr(same[0], f.name), getattr(same[1], f.name))
    spread_s = {
        (d.device_id, p): float(place_channel(d, p, doppler_hz=0.2).rms_delay_spread_s[0])
        for d in (dev_a, dev_b) for p in (1, 2, 3)
    }
    assert all(10e-9 <= s <= 300e-9 * 1.0001 for s in spread_s.values())  # U(10, 300) ns by construction
    assert len(set(spread_s.values())) == len(spread_s)  # every (device, place) draws its own channel
    assert place_channel(dev_a, 2, doppler_hz=5.0).doppler_hz[0] == 5.0


def test_concatenated_channels_keep_their_rows_in_order():
    rng = np.random.default_rng(2)
    parts = [channel.draw_multipath(n, rms_delay_spread_s=s, k_factor=k, doppler_hz=d, rng=rng)
             for n, s, k, d in ((1, 20e-9, 0.0, 0.0), (2, 100e-9, 3.0, 1.0), (1, 250e-9, 8.0, 5.0))]
    stacked = channel.MultipathChannel.concatenate(parts)
    assert len(stacked) == 4
    rows = [(0, 0), (1, 0), (1, 1), (2, 0)]
    for i, (p, r) in enumerate(rows):
        for f in dataclasses.fields(channel.MultipathChannel):
            assert np.array_equal(getattr(stacked, f.name)[i], getattr(parts[p], f.name)[r])
    np.testing.assert_array_equal(stacked.doppler_hz, [0.0, 1.0, 1.0, 5.0])


def test_snr_range_takes_a_number_or_an_ordered_finite_pair():
    assert channel.snr_range_db(12) == (12.0, 12.0)
    assert channel.snr_range_db((0, 30.5)) == (0.0, 30.5)
    for bad in ((30, 0), (0, np.inf), np.nan):
        with pytest.raises(ConfigError, match="snr_db="):
            channel.snr_range_db(bad)


def test_batch_convention_round_trips_a_row_and_a_batch():
    row = np.arange(6, dtype=np.float64) + 1j
    x, single = as_batch(row)
    assert single and x.shape == (1, 6) and x.dtype == np.complex64
    assert unbatch(x, single).shape == (6,)
    batch = np.ones((3, 6), np.complex64)
    y, single = as_batch(batch)
    assert not single and y is batch  # no copy when it already is complex64 (N, L)
    assert unbatch(y, single).shape == (3, 6)
    np.testing.assert_array_equal(per_packet(2.5, 3, "p"), [2.5, 2.5, 2.5])
    np.testing.assert_array_equal(per_packet_column([1, 2, 3], 3, "p"), [[1], [2], [3]])
    with pytest.raises(ConfigError, match=r"gain has shape \(2,\): expected a scalar or shape \(3,\)"):
        per_packet([1, 2], 3, "gain")
    with pytest.raises(ConfigError, match="iq has shape"):
        as_batch(np.zeros((2, 2, 2)))


def test_two_cluster_channel_has_its_late_cluster_at_the_drawn_delay_and_power():
    rng = np.random.default_rng(4)
    ch = channel.draw_two_cluster(
        3, rms_delay_spread_s=100e-9, second_delay_s=[1e-6, 2e-6, 4e-6], second_power_db=[-3.0, -6.0, -9.0],
        k_factor=5.0, doppler_hz=0.0, rng=rng,
    )
    half = ch.path_delays_s.shape[1] // 2
    np.testing.assert_allclose(ch.path_powers.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(ch.path_delays_s[:, half], [1e-6, 2e-6, 4e-6], rtol=1e-12)
    ratio_db = 10 * np.log10(ch.path_powers[:, half:].sum(axis=1) / ch.path_powers[:, :half].sum(axis=1))
    np.testing.assert_allclose(ratio_db, [-3.0, -6.0, -9.0], rtol=1e-9)
    # The late cluster shows as an echo: a delta through the static channel has energy at 2 us in row 1.
    fs_hz = 8e6
    x = np.zeros((3, 128), np.complex64)
    x[:, 8] = 1.0
    y = channel.apply_multipath(x, ch, fs_hz=fs_hz)
    echo = np.abs(y[1, 8 + 16 - 2 : 8 + 16 + 3]) ** 2  # 2 us = 16 samples later, +-2 samples
    assert echo.sum() > 0.5 * 10 ** (-6.0 / 10) / (1 + 10 ** (-6.0 / 10)) * (np.abs(y[1]) ** 2).sum()


def test_place_channel_families_differ_and_bad_ones_are_refused():
    (dev,) = make_fleet(1, seed=11)
    exp = place_channel(dev, 1, doppler_hz=0.2)
    two = place_channel(dev, 1, doppler_hz=0.2, family="two_cluster")
    assert two.path_delays_s.shape[1] == 2 * exp.path_delays_s.shape[1]
    assert 1e-6 <= two.path_delays_s[0, two.path_delays_s.shape[1] // 2] <= 4e-6
    assert np.all(two.k_factor == 0.0)
    with pytest.raises(ConfigError, match="family='street'"):
        place_channel(dev, 1, doppler_hz=0.2, family="street")
    from lorarffi.sim import Session

    with pytest.raises(ConfigError, match="channel_family='street'"):
        Session(channel_family="street")
