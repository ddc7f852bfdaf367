"""``sim``: the built-in virtual radio: simulated LoRa devices transmitting at random times.

A :class:`~lorarffi.sim.stream.StreamSimulator` (N devices with their hardware impairments, optional
rogue devices outside the fleet, through the channel model) produces the stream. Paced (``speed``), a
producer thread releases it at ``speed`` times real time into a ring buffer like a radio (a consumer that
falls behind loses runs, counted as overflows); unpaced, samples are made as fast as they are consumed.
The simulator's ground truth is :attr:`SimSource.events`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from lorarffi.capture.base import Pacer, ThreadedSource
from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError

__all__ = ["SimSource"]

log = logging.getLogger(__name__)


class SimSource(ThreadedSource):
    """A virtual radio receiving ``n_devices`` simulated LoRa transmitters (and ``n_rogues`` strangers).

    Parameters
    ----------
    cfg : LoRaConfig
        Modulation and sample rate of the stream.
    n_devices : int
        Devices of the fleet (``make_fleet(n_devices, seed=fleet_seed)``; a model trained on the same fleet
        seed recognises them).
    n_rogues : int
        Extra transmitters that are not in the fleet.
    tuned_rogues : sequence of int
        Ids of fleet devices each imitated by one more rogue whose carrier is tuned to that device's CFO
        (a CFO-tuned attacker, see :class:`~lorarffi.sim.stream.StreamSimulator`).
    snr_db : float or (low, high), optional
        Signal-to-noise ratio of the packets in dB (default: the simulator's range).
    mean_interval_s : float, optional
        Mean idle time between packets in seconds (exponential gaps; default: the simulator's).
    duration_s : float, optional
        End the stream after this much signal (default: never).
    speed : float, optional
        Pace at this multiple of real time; None: as fast as consumed.
    seed : int
        Seed of the stream (arrival times, noise, channel).
    fleet_seed : int
        Seed of the fleet's hardware impairments.
    spread : float
        How much the devices (and rogues) of the chip model differ (``make_fleet(..., spread=spread)``; 1.0 is
        the simulator's default, ``lora-rffi simulate --spread`` makes the same fleet).
    center_freq_hz : float
        Reported centre frequency.
    chunk_samples : int
        Samples produced per step (the paced radio's MTU).
    buffer_s : float
        Ring buffer length in seconds.
    session : dict, optional
        Keyword arguments of :class:`~lorarffi.sim.session.Session` (``day``, ``minutes_since_power_on``,
        ``place``).
    """

    def __init__(
        self,
        cfg: LoRaConfig | None = None,
        *,
        n_devices: int = 4,
        n_rogues: int = 0,
        tuned_rogues: Sequence[int] = (),
        snr_db: float | tuple[float, float] | None = None,
        mean_interval_s: float | None = None,
        duration_s: float | None = None,
        speed: float | None = None,
        seed: int = 0,
        fleet_seed: int = 0,
        spread: float = 1.0,
        center_freq_hz: float = 868.1e6,
        chunk_samples: int = 8192,
        buffer_s: float = 2.0,
        session: dict[str, Any] | None = None,
    ) -> None:
        cfg = LoRaConfig() if cfg is None else cfg
        if n_devices < 1 or n_rogues < 0:
            raise ConfigError(
                f"n_devices={n_devices}, n_rogues={n_rogues} are not valid: use >= 1 devices, >= 0 rogues"
            )
        if duration_s is not None and not duration_s > 0:
            raise ConfigError(f"duration_s={duration_s!r} is not valid: give a positive duration in seconds")
        super().__init__(
            fs_hz=cfg.fs_hz,
            center_freq_hz=center_freq_hz,
            buffer_s=buffer_s,
            overflow="drop" if speed else "block",
            chunk_samples=1 << 18,
        )
        from lorarffi.sim import Session, StreamSimulator, make_fleet

        self.cfg = cfg
        self.name = "sim"
        self.finite = duration_s is not None
        self.fleet = make_fleet(n_devices, seed=fleet_seed, spread=spread)
        extra: dict[str, Any] = {}
        if snr_db is not None:
            extra["snr_db"] = snr_db
        if mean_interval_s is not None:
            extra["mean_interval_s"] = mean_interval_s
        self.simulator = StreamSimulator(
            self.fleet,
            cfg,
            session=Session(**(session or {})),
            rogues=n_rogues,
            tuned_rogues=tuned_rogues,
            seed=seed,
            spread=spread,
            **extra,
        )
        self.n_total = None if duration_s is None else int(round(duration_s * cfg.fs_hz))
        self.step_samples = int(chunk_samples)
        self._speed = speed

    @property
    def events(self) -> Any:
        """Ground truth of the packets transmitted so far (see ``StreamSimulator.events``)."""
        return self.simulator.events

    def _produce(self) -> None:
        pacer = Pacer(self.fs_hz, self._speed)
        made = 0
        while not self.stopping:
            n = self.step_samples if self.n_total is None else min(self.step_samples, self.n_total - made)
            if n <= 0:
                return
            start, iq = self.simulator.read(n)
            made = int(start) + iq.shape[0]
            pacer.wait_until(made, self._stop)
            if self.stopping or not self._emit(int(start), iq):  # arrives now, late if the pace was not kept
                return
