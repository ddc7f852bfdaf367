"""Capture sessions: which day, how long after power-on, where, and in which environment.

A train session and a later test session differ as real captures do (Shen et al. 2021 §VI: CFO falls over
the first ~20 min after power-on and moves by hundreds of Hz between days; another room is another channel;
another environment moves crystal oscillators by a ppm or two), while each device's hardware fingerprint
persists. :func:`session_mean_cfo_hz` is a device's expected CFO in a session.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lorarffi.errors import ConfigError
from lorarffi.sim import channel
from lorarffi.sim.fleet import DeviceProfile
from lorarffi.sim.oscillator import ENVIRONMENTS

__all__ = ["Session", "place_channel", "session_mean_cfo_hz"]

@dataclass(frozen=True)
class Session:
    """One capture session: which day, how long after the devices' power-on, and where.

    Parameters
    ----------
    day : int
        Day index: each device's CFO has a fixed shift per day (:meth:`DeviceProfile.day_offset_hz`).
    minutes_since_power_on : float
        Time from each device's power-on to its first packet in this session, in minutes (0 = cold start, the
        CFO then falls over ~20 min; 30 = warmed up).
    place : int
        Place index: fixes each device's multipath channel realisation (:func:`place_channel`).
    environment : str
        Named environment (a key of :data:`~lorarffi.sim.oscillator.ENVIRONMENTS`): ``"reference"`` leaves
        the CFOs alone; ``"nlos"`` moves each crystal device by about -1.7 ppm, as the real fleet's
        non-line-of-sight day did (:meth:`DeviceProfile.environment_offset_hz`).
    """

    day: int = 1
    minutes_since_power_on: float = 0.0
    place: int = 1
    environment: str = "reference"

    def __post_init__(self) -> None:
        if not np.isfinite(self.minutes_since_power_on) or self.minutes_since_power_on < 0:
            raise ConfigError(
                f"minutes_since_power_on={self.minutes_since_power_on!r} is not valid: use >= 0"
            )
        if self.environment not in ENVIRONMENTS:
            raise ConfigError(
                f"environment={self.environment!r} is not valid: use one of {sorted(ENVIRONMENTS)}"
            )


def session_mean_cfo_hz(
    device: DeviceProfile, session: Session, time_since_power_on_s: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Expected CFO of ``device`` in ``session`` (without packet jitter) at the given times (any shape), Hz.

    :meth:`DeviceProfile.mean_cfo_hz` on the session's day plus the device's step in the session's
    environment.
    """
    cfo = device.mean_cfo_hz(session.day, time_since_power_on_s)
    if session.environment != "reference":
        cfo = cfo + device.environment_offset_hz(session.environment)
    return cfo


_SALT_PLACE = 0x706C


def place_channel(device: DeviceProfile, place: int, *, doppler_hz: float) -> channel.MultipathChannel:
    """The multipath channel of ``device`` at ``place``: one realisation, the same in every session there.

    RMS delay spread U(10, 300) ns and K-factor U(0, 10) (Shen et al. 2022 Table I), drawn per device and
    place. Its Jakes process evolves with absolute session time at ``doppler_hz`` (people moving in the room).
    """
    rng = np.random.default_rng([device.seed, _SALT_PLACE, int(place)])
    tau = rng.uniform(10e-9, 300e-9)
    k = rng.uniform(0.0, 10.0)
    return channel.draw_multipath(1, rms_delay_spread_s=tau, k_factor=k, doppler_hz=doppler_hz, rng=rng)
