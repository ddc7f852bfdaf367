"""A continuous simulated IQ stream: whole packets from a fleet (and rogues) at random times, in noise.

:class:`StreamSimulator` is chunk-independent and keeps the ground truth (:class:`TransmissionEvent`); it is
the ``sim`` virtual radio's engine. :func:`simulate_stream` gives a stretch of it as one array. Another
receiver (:mod:`~lorarffi.sim.receiver`) is an option.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.chirp import packet_layout
from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError
from lorarffi.sim import channel
from lorarffi.sim.fleet import DeviceProfile, make_fleet
from lorarffi.sim.receiver import ReceiverProfile, adc, front_end, resample
from lorarffi.sim.session import Session, place_channel, session_mean_cfo_hz, tuned_to_cfo
from lorarffi.sim.transmitter import MARGIN_SAMPLES, transmit

__all__ = ["TransmissionEvent", "StreamSimulator", "simulate_stream"]


@dataclass(frozen=True)
class TransmissionEvent:
    """Ground truth of one packet in a simulated stream.

    Attributes
    ----------
    start : int
        Absolute index of the packet's first preamble sample (the packet begins within +-0.5 sample of it).
    device_id : int
        Sender's id; rogues have ids above the fleet's.
    is_rogue : bool
        True for a device outside the fleet.
    cfo_hz : float
        Carrier frequency offset, Hz.
    snr_db : float
        In-band SNR, dB.
    n_preamble : int
        Preamble up-chirps sent.
    sync_word : int
    n_payload_symbols : int
    n_samples : int
        Packet length in samples (preamble to end of payload).
    channel_hz : float, optional
        Centre frequency of the channel the packet was sent on, Hz (a gateway stream; None otherwise).
    sf : int, optional
        Spreading factor of the packet (a gateway stream; None: the stream's ``cfg.sf``).
    """

    start: int
    device_id: int
    is_rogue: bool
    cfo_hz: float
    snr_db: float
    n_preamble: int
    sync_word: int
    n_payload_symbols: int
    n_samples: int
    channel_hz: float | None = None
    sf: int | None = None

    @property
    def stop(self) -> int:
        """One past the packet's last sample."""
        return self.start + self.n_samples


_NOISE_BLOCK = 1 << 16
_SALT_ROGUE = 0x726F
_SALT_TUNED = 0x7475
_SALT_PLAN = 0x6777  # the devices' channels and spreading factors in a gateway stream


class StreamSimulator:
    """A continuous IQ stream of whole LoRa packets from a fleet (and rogues) at random times, in noise.

    The stream is a pure function of its parameters and ``seed``: ``read`` returns the same samples whatever
    the chunk sizes (noise comes in fixed blocks seeded by block index, each packet from a generator seeded
    by its index). Packets do not overlap: after each packet comes an exponential gap with mean
    ``mean_interval_s``.

    Parameters
    ----------
    fleet : sequence of DeviceProfile
    cfg : LoRaConfig
    session : Session
    rogues : int
        Number of extra look-alike devices (same chip, spread and carrier) outside the fleet; their ids follow
        the fleet's highest id and their events say ``is_rogue``.
    tuned_rogues : sequence of int
        Ids of fleet devices each imitated by one more look-alike rogue whose carrier is tuned to that
        device's mean CFO at the session's start (a CFO-tuned attacker; its ids follow the other rogues').
        In a gateway stream it sends on its target's channel at its target's spreading factor.
    channels_hz : sequence of float, optional
        A gateway stream: every device (rogues too) sends on one of these channels (centre frequencies, Hz,
        drawn per device from ``seed``), the stream being sampled at ``cfg.fs_hz`` around
        ``center_freq_hz``. Packets on different channels may overlap in time; packets on the same channel
        never do: ``mean_interval_s`` is then the mean time between attempts on any channel, and a device
        whose channel is busy at its attempt does not send (listen before talk).
    sfs : sequence of int, optional
        A gateway stream: each device's spreading factor is drawn from these (default ``cfg.sf``); its
        packets' ``n_payload_symbols`` symbols carry ``sf`` bits each.
    center_freq_hz : float, optional
        Frequency of the stream's 0 Hz with ``channels_hz`` (default: halfway between the outer channels).
    snr_db : float or (low, high)
        In-band SNR per packet in dB (uniform over the range).
    mean_interval_s : float
        Mean idle time between packets, in s.
    seed : int
    multipath : bool
    doppler_hz : float
        Maximum Doppler of the place channels, Hz.
    n_preamble : int, optional
        Preamble up-chirps per packet (default ``cfg.preamble_symbols``).
    payload_symbols : (int, int)
        Range (inclusive) of the number of random payload symbols per packet.
    noise_power : float
        Full-band noise power (variance of the complex noise).
    spread : float
        Spread of the rogue devices (default 1.0).
    receiver : ReceiverProfile, optional
        Receive with another receiver. Its LO phase noise, IQ imbalance, clock error and sample-rate round
        trip act on each packet (the clock error from the packet's start: it does not move packets along
        the stream); its DC offset and ADC act on every sample at the simulator's rate, with the gain set
        for a packet at the top of the SNR range. Event CFOs include its LO error. ``None``: ideal.

    Examples
    --------
    >>> cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    >>> sim = StreamSimulator(make_fleet(2, seed=0), cfg, seed=1)
    >>> start, chunk = sim.read(100_000)
    >>> start, chunk.shape, chunk.dtype
    (0, (100000,), dtype('complex64'))
    """

    def __init__(
        self,
        fleet: Sequence[DeviceProfile],
        cfg: LoRaConfig,
        *,
        session: Session | None = None,
        rogues: int = 0,
        tuned_rogues: Sequence[int] = (),
        snr_db: float | tuple[float, float] = (10.0, 25.0),
        mean_interval_s: float = 0.3,
        seed: int = 0,
        multipath: bool = True,
        doppler_hz: float = 0.2,
        n_preamble: int | None = None,
        payload_symbols: tuple[int, int] = (8, 32),
        noise_power: float = 1e-3,
        spread: float = 1.0,
        receiver: ReceiverProfile | None = None,
        channels_hz: Sequence[float] | None = None,
        sfs: Sequence[int] | None = None,
        center_freq_hz: float | None = None,
    ) -> None:
        if not fleet:
            raise ConfigError("fleet is empty")
        if int(rogues) < 0:
            raise ConfigError(f"rogues={rogues!r} is not valid: use >= 0")
        if not mean_interval_s > 0:
            raise ConfigError(f"mean_interval_s={mean_interval_s!r} is not valid: use > 0")
        if not 0 <= payload_symbols[0] <= payload_symbols[1]:
            raise ConfigError(
                f"payload_symbols={payload_symbols!r} is not valid: use (low, high), 0 <= low <= high"
            )
        if not noise_power > 0:
            raise ConfigError(f"noise_power={noise_power!r} is not valid: use > 0")
        self.cfg = cfg
        self.session = session or Session()
        self.seed = int(seed)
        self.fleet = list(fleet)
        last = max(d.device_id for d in self.fleet)
        self.rogues = (
            make_fleet(
                int(rogues),
                seed=self.seed ^ _SALT_ROGUE,
                chip=self.fleet[0].chip,  # type: ignore
                spread=spread,
                first_device=last + 1,
                carrier_freq_hz=self.fleet[0].carrier_freq_hz,
            )
            if rogues
            else []
        )
        tuned = self._tuned_rogues(tuned_rogues, spread)
        self.rogues += tuned
        self._targets = {dev.device_id: int(t) for dev, t in zip(tuned, tuned_rogues, strict=True)}
        self._senders = self.fleet + self.rogues
        self._lo, self._hi = channel.snr_range_db(snr_db)
        self.mean_interval_s = float(mean_interval_s)
        self.multipath = bool(multipath)
        self.n_preamble = cfg.preamble_symbols if n_preamble is None else int(n_preamble)
        self.payload_symbols = (int(payload_symbols[0]), int(payload_symbols[1]))
        self.noise_power = float(noise_power)
        self.receiver = receiver
        # The gain control's reference: a packet at the top of the SNR range plus the noise, RMS amplitude.
        peak_snr = 10 ** (self._hi / 10) * cfg.bw_hz / cfg.fs_hz
        self._rx_reference_rms = np.sqrt(self.noise_power * (1 + peak_snr))
        self._channels = (
            {
                d.device_id: place_channel(
                    d, self.session.place, doppler_hz=doppler_hz, family=self.session.channel_family
                )
                for d in self._senders
            }
            if multipath
            else {}
        )
        self._gateway = channels_hz is not None or sfs is not None
        self.assignments = self._assign(channels_hz, sfs, center_freq_hz)
        self._busy_until_s: dict[float | None, float] = {}
        self._plan_rng = np.random.default_rng([self.seed, 1])
        self._planned: list[
            tuple[TransmissionEvent, float, npt.NDArray[np.int64]]
        ] = []  # event, exact pos, payload
        self._next_free_s = 0.0
        self._cache: dict[int, npt.NDArray[np.complex64]] = {}
        self._first_active = 0  # planned packets before this one lie wholly before the read position
        self._noise_block: tuple[int, npt.NDArray[np.complex64]] = (-1, np.zeros(0, np.complex64))
        self._position = 0

    def _assign(
        self, channels_hz: Sequence[float] | None, sfs: Sequence[int] | None, center_freq_hz: float | None
    ) -> dict[int, tuple[float | None, int]]:
        """Each sender's (channel centre in Hz or None, spreading factor); checks the channels fit."""
        chans = [float(c) for c in channels_hz] if channels_hz is not None else []
        sf_list = [int(v) for v in sfs] if sfs is not None else [self.cfg.sf]
        if channels_hz is not None and not chans:
            raise ConfigError("channels_hz is empty: give at least one channel or None")
        if not sf_list or any(not 6 <= v <= 12 for v in sf_list):
            raise ConfigError(f"sfs={sfs!r} is not valid: spreading factors run from 6 to 12")
        if chans:
            self.center_freq_hz = (
                float(center_freq_hz) if center_freq_hz is not None else (min(chans) + max(chans)) / 2
            )
            reach = max(abs(c - self.center_freq_hz) for c in chans) + self.cfg.bw_hz / 2
            if reach > self.cfg.fs_hz / 2:
                raise ConfigError(
                    f"channels_hz={chans!r} do not fit in {self.cfg.fs_hz:g} S/s around "
                    f"{self.center_freq_hz:g} Hz: use a larger fs_hz or closer channels"
                )
        else:
            self.center_freq_hz = center_freq_hz
        rng = np.random.default_rng([self.seed, _SALT_PLAN])
        out = {}
        for d in self._senders:
            ch = chans[int(rng.integers(len(chans)))] if chans else None
            out[d.device_id] = (ch, sf_list[int(rng.integers(len(sf_list)))])
        for rogue, target in self._targets.items():  # an imitator uses its target's channel and SF
            out[rogue] = out[target]
        return out

    @property
    def position(self) -> int:
        """Absolute index of the next sample :meth:`read` returns."""
        return self._position

    def _tuned_rogues(self, targets: Sequence[int], spread: float) -> list[DeviceProfile]:
        """One look-alike rogue per target id, its carrier tuned to the target's mean CFO at the session's
        start."""
        by_id = {d.device_id: d for d in self.fleet}
        unknown = sorted(set(targets) - set(by_id))
        if unknown:
            raise ConfigError(f"tuned_rogues={list(targets)!r}: no fleet device with id {unknown}")
        if not targets:
            return []
        last = max(d.device_id for d in self.fleet + self.rogues)
        t0_s = self.session.minutes_since_power_on * 60.0
        look_alikes = make_fleet(
            len(targets),
            seed=self.seed ^ _SALT_TUNED,
            chip=self.fleet[0].chip,  # type: ignore
            spread=spread,
            first_device=last + 1,
            carrier_freq_hz=self.fleet[0].carrier_freq_hz,
        )
        return [
            tuned_to_cfo(dev, float(session_mean_cfo_hz(by_id[t], self.session, t0_s)), self.session, t0_s)
            for dev, t in zip(look_alikes, targets, strict=True)
        ]

    @property
    def events(self) -> list[TransmissionEvent]:
        """Ground truth of every packet whose first sample has been returned so far, in time order."""
        return [ev for ev, _, _ in self._planned if ev.start < self._position]

    def _plan_until(self, stop: int) -> None:
        """Plan events (in order, from the planning generator) until one starts at or after ``stop``."""
        fs = self.cfg.fs_hz
        while not self._planned or self._planned[-1][0].start < stop:
            rng = self._plan_rng
            t = self._next_free_s + rng.exponential(self.mean_interval_s)
            dev = self._senders[int(rng.integers(len(self._senders)))]
            channel_hz, sf = self.assignments[dev.device_id]
            ev_cfg = self.cfg if sf == self.cfg.sf else self.cfg.replace(sf=sf)
            n_pay = int(rng.integers(self.payload_symbols[0], self.payload_symbols[1] + 1))
            payload = rng.integers(0, ev_cfg.n_chips, n_pay)
            snr = float(rng.uniform(self._lo, self._hi))
            if self._gateway and t < self._busy_until_s.get(channel_hz, 0.0):
                self._next_free_s = t  # its channel is busy: listening before talking, the device keeps quiet
                continue
            pos = t * fs  # exact (fractional) position of the packet start, in samples
            lay = packet_layout(ev_cfg, n_pay, n_preamble=self.n_preamble)
            n_samples = int(np.ceil(lay.stop))
            t_on = self.session.minutes_since_power_on * 60.0 + t
            cfo = float(session_mean_cfo_hz(dev, self.session, t_on))
            cfo += dev.cfo_jitter_hz * float(rng.standard_normal())
            if self.receiver is not None:
                cfo -= self.receiver.clock_ppm * 1e-6 * dev.carrier_freq_hz
            ev = TransmissionEvent(
                start=int(np.round(pos)),
                device_id=dev.device_id,
                is_rogue=dev in self.rogues,
                cfo_hz=cfo,
                snr_db=snr,
                n_preamble=self.n_preamble,
                sync_word=self.cfg.sync_word,
                n_payload_symbols=n_pay,
                n_samples=n_samples,
                channel_hz=channel_hz,
                sf=sf if self._gateway else None,
            )
            self._planned.append((ev, pos, payload))
            if self._gateway:
                self._busy_until_s[channel_hz] = t + (n_samples + 64) / fs
                self._next_free_s = t
            else:
                self._next_free_s = t + (n_samples + 64) / fs

    def _packet(self, index: int) -> npt.NDArray[np.complex64]:
        """Planned packet ``index`` as received, without noise, and ``MARGIN_SAMPLES`` on either side."""
        if index in self._cache:
            return self._cache[index]
        ev, pos, payload = self._planned[index]
        dev = next(d for d in self._senders if d.device_id == ev.device_id)
        rng = np.random.default_rng([self.seed, 2, index])
        first = ev.start - MARGIN_SAMPLES
        n_samples = ev.n_samples + 2 * MARGIN_SAMPLES
        t0 = np.array([(first - pos) / self.cfg.fs_hz])
        channel_hz, sf = self.assignments[dev.device_id]
        x = transmit(
            [dev],
            self.cfg if sf == self.cfg.sf else self.cfg.replace(sf=sf),
            payload,
            t0_s=t0,
            n_samples=n_samples,
            cfo_hz=np.array([ev.cfo_hz]),
            rng=rng,
            n_preamble=ev.n_preamble,
            sync_word=ev.sync_word,
        )
        if self.multipath:
            t_abs = self.session.minutes_since_power_on * 60.0 + first / self.cfg.fs_hz
            x = channel.apply_multipath(x, self._channels[dev.device_id], fs_hz=self.cfg.fs_hz, t0_s=t_abs)
        body = x[0, MARGIN_SAMPLES : MARGIN_SAMPLES + ev.n_samples]
        power = float(np.mean(np.abs(body) ** 2))
        noise_in_band = self.noise_power * self.cfg.bw_hz / self.cfg.fs_hz
        scale = np.sqrt(10 ** (ev.snr_db / 10) * noise_in_band / power)
        out = (x[0] * scale).astype(np.complex64)
        if channel_hz is not None:  # onto its channel (the carrier phase is random anyway)
            shift = 2 * np.pi * (channel_hz - self.center_freq_hz) / self.cfg.fs_hz
            out *= np.exp(1j * shift * np.arange(out.size)).astype(np.complex64)
        if self.receiver is not None:
            lo_offset_hz = self.receiver.clock_ppm * 1e-6 * dev.carrier_freq_hz
            out = front_end(out, self.receiver, fs_hz=self.cfg.fs_hz, rng=rng, lo_offset_hz=lo_offset_hz)
            if self.receiver.fs_hz is not None:
                rx_fs_hz = self.receiver.fs_hz
                out = resample(resample(out, self.cfg.fs_hz, rx_fs_hz), rx_fs_hz, self.cfg.fs_hz)
                out = out[: ev.n_samples + 2 * MARGIN_SAMPLES]
        self._cache[index] = out
        return out

    def _noise(self, start: int, stop: int) -> npt.NDArray[np.complex64]:
        out = np.empty(stop - start, np.complex64)
        sigma = np.float32(np.sqrt(self.noise_power / 2))
        for block in range(start // _NOISE_BLOCK, (stop - 1) // _NOISE_BLOCK + 1):
            b0 = block * _NOISE_BLOCK
            if self._noise_block[0] == block:  # small reads reuse the block they are in
                noise = self._noise_block[1]
            else:
                rng = np.random.default_rng([self.seed, 3, block])
                noise = rng.standard_normal((_NOISE_BLOCK, 2), dtype=np.float32).view(np.complex64)[:, 0]
                noise *= sigma
                self._noise_block = (block, noise)
            lo, hi = max(start, b0), min(stop, b0 + _NOISE_BLOCK)
            out[lo - start : hi - start] = noise[lo - b0 : hi - b0]
        return out

    def read(self, n_samples: int) -> tuple[int, npt.NDArray[np.complex64]]:
        """The next samples as ``(start, chunk)``; ``start`` is the absolute index of ``chunk[0]``."""
        n = int(n_samples)
        if n < 0:
            raise ConfigError(f"n_samples={n_samples!r} is not valid: use >= 0")
        start, stop = self._position, self._position + n
        if n == 0:
            return start, np.zeros(0, np.complex64)
        self._plan_until(stop + MARGIN_SAMPLES)
        chunk = self._noise(start, stop)
        for index in range(self._first_active, len(self._planned)):
            ev = self._planned[index][0]
            lo, hi = ev.start - MARGIN_SAMPLES, ev.stop + MARGIN_SAMPLES
            if hi <= start:
                self._cache.pop(index, None)
                if index == self._first_active:  # packets of a gateway stream may end out of order
                    self._first_active = index + 1
                continue
            if lo >= stop:
                break
            wave = self._packet(index)
            a, b = max(lo, start), min(hi, stop)
            chunk[a - start : b - start] += wave[a - lo : b - lo]
            if hi <= stop:
                self._cache.pop(index, None)
        self._position = stop
        if self.receiver is not None:
            chunk = adc(chunk, self.receiver, reference_rms=self._rx_reference_rms)
        return start, chunk


def simulate_stream(
    fleet: Sequence[DeviceProfile], cfg: LoRaConfig, *, duration_s: float, **simulator_kwargs: Any
) -> tuple[npt.NDArray[np.complex64], list[TransmissionEvent]]:
    """``duration_s`` of a :class:`StreamSimulator` stream as one array, with the events that start in it.

    Parameters
    ----------
    fleet : sequence of DeviceProfile
    cfg : LoRaConfig
    duration_s : float
        Length of the stream in s (> 0).
    **simulator_kwargs
        Keyword arguments of :class:`StreamSimulator` (``session``, ``rogues``, ``snr_db``,
        ``mean_interval_s``, ``seed``, ``multipath``...), with its defaults.

    Returns
    -------
    iq : ndarray of complex64, shape (round(duration_s * fs_hz),)
    events : list of TransmissionEvent
        Packets whose first sample lies in ``iq`` (the last may run past its end).
    """
    if not duration_s > 0:
        raise ConfigError(f"duration_s={duration_s!r} is not valid: use > 0")
    sim = StreamSimulator(fleet, cfg, **simulator_kwargs)
    _, iq = sim.read(int(round(duration_s * cfg.fs_hz)))
    return iq, sim.events
