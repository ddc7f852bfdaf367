"""The transmitter signal chain: packets of simulated devices, impaired and carrier-shifted, no channel yet.

Per packet, in the receiver's frame: PLL chirps with sweep nonlinearity and settling transients, PA ramps ->
phase noise -> IQ imbalance, DC offset -> TX filter ripple -> PA AM/AM, AM/PM -> carrier offset (CFO, random
carrier phase). The channel (multipath, AWGN) is :mod:`lorarffi.sim.channel`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.config import LoRaConfig
from lorarffi.sim import channel, impairments
from lorarffi.sim.fleet import DeviceProfile

__all__ = ["MARGIN_SAMPLES", "transmit"]

#: Samples synthesised on either side of the samples wanted (the multipath filter's lead-in and tail).
MARGIN_SAMPLES = 32


def _rows_of(profiles: Sequence[DeviceProfile]) -> dict[str, npt.NDArray[np.float64]]:
    """The profiles' numeric fields as arrays of shape (N,) (``sweep_coeffs_hz``: (N, n_coeffs))."""
    skip = ("device_id", "chip", "seed", "oscillator")
    names = [f.name for f in dataclasses.fields(DeviceProfile) if f.name not in skip]
    out = {name: np.array([getattr(p, name) for p in profiles], dtype=np.float64) for name in names}
    return out


def transmit(
    profiles: Sequence[DeviceProfile],
    cfg: LoRaConfig,
    payload: npt.NDArray[np.int64],
    *,
    t0_s: npt.NDArray[np.float64],
    n_samples: int,
    cfo_hz: npt.NDArray[np.float64],
    rng: np.random.Generator,
    n_preamble: int | None = None,
    sync_word: int | None = None,
) -> npt.NDArray[np.complex64]:
    """Packets of ``profiles`` as transmitted, in the receiver's frame: impaired, CFO applied, no channel.

    Parameters
    ----------
    profiles : sequence of DeviceProfile
        The sender of each packet (row); repeats allowed.
    cfg : LoRaConfig
    payload : ndarray of int64, shape (n_payload_symbols,)
        Payload symbols, the same for every row (empty for preamble windows).
    t0_s : ndarray of float64, shape (N,)
        Time of each row's first sample relative to its packet's start, in s.
    n_samples : int
        Samples per row.
    cfo_hz : ndarray of float64, shape (N,)
        Carrier frequency offset of each packet, in Hz.
    rng : numpy.random.Generator
        Source of the phase noise and the random carrier phase.
    n_preamble, sync_word : int, optional
        Preamble up-chirps and sync word (default ``cfg``'s).

    Returns
    -------
    iq : ndarray of complex64, shape (N, n_samples)
    """
    p = _rows_of(profiles)
    x = impairments.pll_packet_waveform(
        cfg,
        payload,
        n_samples=n_samples,
        t0_s=t0_s,
        n_preamble=n_preamble,
        sync_word=sync_word,
        sweep_coeffs_hz=p["sweep_coeffs_hz"],
        transient_overshoot=p["transient_overshoot"],
        transient_time_constant_s=p["transient_time_constant_s"],
        transient_ring_hz=p["transient_ring_hz"],
        pa_ramp_s=p["pa_ramp_s"],
    )
    x = np.atleast_2d(x)
    on = np.abs(x) > 0
    x = impairments.phase_noise(
        x,
        phase_noise_rms_deg=p["phase_noise_rms_deg"],
        corner_hz=p["phase_noise_corner_hz"],
        fs_hz=cfg.fs_hz,
        rng=rng,
    )
    x = impairments.iq_imbalance(x, iq_gain_db=p["iq_gain_db"], iq_phase_deg=p["iq_phase_deg"])
    x = x + (p["dc_offset_i"] + 1j * p["dc_offset_q"])[:, None].astype(np.complex64) * on
    x = impairments.tx_filter_ripple(
        x,
        ripple_db=p["ripple_db"],
        ripple_period_hz=p["ripple_period_hz"],
        ripple_phase_rad=p["ripple_phase_rad"],
        fs_hz=cfg.fs_hz,
    )
    x = impairments.pa_nonlinearity(
        x, saturation=p["pa_saturation"], smoothness=p["pa_smoothness"], am_pm_deg=p["pa_am_pm_deg"]
    )
    x = channel.frequency_shift(x, cfo_hz, fs_hz=cfg.fs_hz, t0_s=t0_s)
    return x * np.exp(1j * rng.uniform(0, 2 * np.pi, (x.shape[0], 1))).astype(np.complex64)
