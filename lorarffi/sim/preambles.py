"""Aligned preamble sets: a fleet's fingerprint windows with ground truth, like the public LoRa_RFFI dataset.

Each window is cut from a fully synthesised packet (:func:`~lorarffi.sim.transmitter.transmit`) that went
through the device's channel at the session's place, AWGN and, as an option, another receiver
(:mod:`~lorarffi.sim.receiver`); windows are not CFO-compensated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.chirp import packet_layout
from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.packet_symbol import packet_tail_samples
from lorarffi.errors import ConfigError
from lorarffi.sim import channel
from lorarffi.sim.fleet import DeviceProfile
from lorarffi.sim.receiver import ReceiverProfile, receive
from lorarffi.sim.session import Session, place_channel, session_mean_cfo_hz
from lorarffi.sim.transmitter import MARGIN_SAMPLES, transmit

__all__ = ["PreambleSet", "simulate_preamble_set"]


@dataclass(frozen=True)
class PreambleSet:
    """Aligned fingerprint windows with ground truth, like the public dataset (not CFO-compensated).

    Attributes
    ----------
    preambles : ndarray of complex64, shape (N, L)
        Each row starts at the first of the ``cfg.preamble_symbols`` up-chirps before the sync word; ``L =
        cfg.preamble_samples``, or longer when the rows go on into the packet (``payload_symbols``).
    device_ids : ndarray of int64, shape (N,)
        1-based device ids.
    cfo_hz : ndarray of float64, shape (N,)
        True carrier frequency offset of each packet, in Hz.
    snr_db : ndarray of float64, shape (N,)
        In-band SNR of each packet, in dB.
    capture_time_s : ndarray of float64, shape (N,)
        Time of each packet since its device's power-on, in s.
    start : ndarray of int64, shape (N,)
        First preamble sample in a notional continuous capture of each device that started at its power-on.
    cfg : LoRaConfig
    """

    preambles: npt.NDArray[np.complex64]
    device_ids: npt.NDArray[np.int64]
    cfo_hz: npt.NDArray[np.float64]
    snr_db: npt.NDArray[np.float64]
    capture_time_s: npt.NDArray[np.float64]
    start: npt.NDArray[np.int64]
    cfg: LoRaConfig

    def __len__(self) -> int:
        return self.device_ids.size


_BATCH_ROWS = 128


def simulate_preamble_set(
    fleet: Sequence[DeviceProfile],
    cfg: LoRaConfig,
    n_packets_per_device: int,
    *,
    session: Session,
    rng: np.random.Generator,
    snr_db: float | tuple[float, float] = (10.0, 25.0),
    multipath: bool = True,
    doppler_hz: float = 0.2,
    packet_interval_s: float = 0.3,
    frame_pairs: bool = False,
    receiver: ReceiverProfile | None = None,
    payload_symbols: int = 0,
) -> PreambleSet:
    """Aligned preamble windows of every device, cut from fully synthesised packets.

    Each device sends ``n_packets_per_device`` packets every ``packet_interval_s`` starting
    ``session.minutes_since_power_on`` after its power-on (devices recorded one after another, as in the
    public dataset). Each packet gets its CFO (drift curve + day shift + jitter), a random carrier phase, a
    random sub-sample arrival time (+-0.5 sample: the window start is the nearest sample), the device's
    channel at ``session.place`` at that time, and AWGN at an in-band SNR drawn uniformly from ``snr_db``.

    Parameters
    ----------
    fleet : sequence of DeviceProfile
    cfg : LoRaConfig
    n_packets_per_device : int
    session : Session
    rng : numpy.random.Generator
        Source of the per-packet randomness (the devices' persistent draws come from their own seeds).
    snr_db : float or (low, high)
        In-band SNR in dB, or a range to draw from uniformly.
    multipath : bool
        Pass packets through each device's multipath channel at the session's place (else a cable).
    doppler_hz : float
        Maximum Doppler of the place channels in Hz (0 = static; 0.2 = a room where people move slowly).
    packet_interval_s : float
        Time between a device's packets in s (0.3 s in Shen et al.).
    frame_pairs : bool
        Devices send frames in pairs, the second right after the first (as the firmware of the real fleet of
        :mod:`~lorarffi.sim.oscillator` did): every odd-numbered packet of a device gets its
        ``second_frame_offset_hz`` (non-zero for calibrated TCXO devices).
    receiver : ReceiverProfile, optional
        Receive with this receiver (:func:`~lorarffi.sim.receiver.receive`) after the AWGN; ``cfo_hz`` then
        includes its LO error at each device's carrier. ``None``: an ideal receiver.

    Returns
    -------
    PreambleSet
    """
    if not fleet:
        raise ConfigError("fleet is empty")
    if int(n_packets_per_device) < 1:
        raise ConfigError(f"n_packets_per_device={n_packets_per_device!r} is not valid: use >= 1")
    lo, hi = channel.snr_range_db(snr_db)
    n_per = int(n_packets_per_device)
    n_pay = int(payload_symbols)
    if n_pay < 0:
        raise ConfigError(f"payload_symbols={payload_symbols!r} is not valid: use >= 0")
    length = cfg.preamble_samples + (packet_tail_samples(cfg, n_pay) if n_pay else 0)
    lay = packet_layout(cfg)
    n_samples = length + 2 * MARGIN_SAMPLES
    t_packets = session.minutes_since_power_on * 60.0 + np.arange(n_per) * packet_interval_s
    rows = [(dev, k) for dev in fleet for k in range(n_per)]
    awgn = {"reference": "in_band", "rng": rng, "bw_hz": cfg.bw_hz, "fs_hz": cfg.fs_hz}
    mean_cfo = np.concatenate([session_mean_cfo_hz(dev, session, t_packets) for dev in fleet])
    if frame_pairs:
        second = np.tile(np.arange(n_per) % 2 == 1, len(fleet))
        mean_cfo = mean_cfo + second * np.repeat([dev.second_frame_offset_hz for dev in fleet], n_per)
    out = np.empty((len(rows), length), np.complex64)
    cfo = np.empty(len(rows))
    snr_all = np.empty(len(rows))
    channels = (
        {
            d.device_id: place_channel(d, session.place, doppler_hz=doppler_hz, family=session.channel_family)
            for d in fleet
        }
        if multipath
        else {}
    )
    for b0 in range(0, len(rows), _BATCH_ROWS):
        batch = rows[b0 : b0 + _BATCH_ROWS]
        n = len(batch)
        profiles = [dev for dev, _ in batch]
        t_cap = t_packets[[k for _, k in batch]]
        jitter = np.array([dev.cfo_jitter_hz for dev in profiles])
        cfo_b = mean_cfo[b0 : b0 + n] + jitter * rng.standard_normal(n)
        frac = rng.uniform(-0.5, 0.5, n)
        t0 = (lay.fingerprint_start - MARGIN_SAMPLES - frac) / cfg.fs_hz
        payload = rng.integers(0, cfg.n_chips, n_pay) if n_pay else np.zeros(0, np.int64)
        x = transmit(profiles, cfg, payload, t0_s=t0, n_samples=n_samples, cfo_hz=cfo_b, rng=rng)
        if multipath:
            ch = channel.MultipathChannel.concatenate([channels[dev.device_id] for dev in profiles])
            x = channel.apply_multipath(x, ch, fs_hz=cfg.fs_hz, t0_s=t_cap)
        window = x[:, MARGIN_SAMPLES : MARGIN_SAMPLES + length]
        power = np.mean(np.abs(window[:, : cfg.preamble_samples]) ** 2, axis=1, dtype=np.float64)
        snr = rng.uniform(lo, hi, n)
        if receiver is None:
            out[b0 : b0 + n] = channel.add_awgn(window, snr, signal_power=power, **awgn)
        else:
            carrier_hz = np.array([dev.carrier_freq_hz for dev in profiles])
            x = channel.add_awgn(x, snr, signal_power=power, **awgn)
            x = receive(x, receiver, fs_hz=cfg.fs_hz, rng=rng, carrier_freq_hz=carrier_hz)
            out[b0 : b0 + n] = x[:, MARGIN_SAMPLES : MARGIN_SAMPLES + length]
            cfo_b = cfo_b - receiver.clock_ppm * 1e-6 * carrier_hz
        cfo[b0 : b0 + n] = cfo_b
        snr_all[b0 : b0 + n] = snr
    t_all = np.tile(t_packets, len(fleet))
    return PreambleSet(
        preambles=out,
        device_ids=np.repeat([d.device_id for d in fleet], n_per).astype(np.int64),
        cfo_hz=cfo,
        snr_db=snr_all,
        capture_time_s=t_all,
        start=np.round(t_all * cfg.fs_hz).astype(np.int64),
        cfg=cfg,
    )
