"""Capture sessions: which day, how long after power-on, where, and in which environment.

A train session and a later test session differ as real captures do (Shen et al. 2021 §VI: CFO falls over
the first ~20 min after power-on and moves by hundreds of Hz between days; another room is another channel;
another environment moves crystal oscillators by a ppm or two), while each device's hardware fingerprint
persists. :func:`session_mean_cfo_hz` is a device's expected CFO in a session.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lorarffi.errors import ConfigError
from lorarffi.sim import channel
from lorarffi.sim.fleet import DeviceProfile
from lorarffi.sim.oscillator import ENVIRONMENTS

__all__ = ["CHANNEL_FAMILIES", "Session", "place_channel", "session_mean_cfo_hz", "tuned_to_cfo"]

#: Multipath families of place channels: ``"exponential"`` (the indoor profile the training augmentation also
#: draws from) and ``"two_cluster"`` (an outdoor profile with a late reflection cluster, for shift tests).
CHANNEL_FAMILIES = ("exponential", "two_cluster")


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
    channel_family : str
        Multipath family of the place channels (a key of :data:`CHANNEL_FAMILIES`, see :func:`place_channel`).
    """

    day: int = 1
    minutes_since_power_on: float = 0.0
    place: int = 1
    environment: str = "reference"
    channel_family: str = "exponential"

    def __post_init__(self) -> None:
        if not np.isfinite(self.minutes_since_power_on) or self.minutes_since_power_on < 0:
            raise ConfigError(
                f"minutes_since_power_on={self.minutes_since_power_on!r} is not valid: use >= 0"
            )
        if self.environment not in ENVIRONMENTS:
            raise ConfigError(
                f"environment={self.environment!r} is not valid: use one of {sorted(ENVIRONMENTS)}"
            )
        if self.channel_family not in CHANNEL_FAMILIES:
            raise ConfigError(
                f"channel_family={self.channel_family!r} is not valid: use one of {list(CHANNEL_FAMILIES)}"
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



def tuned_to_cfo(
    device: DeviceProfile,
    target_cfo_hz: float,
    session: Session,
    time_since_power_on_s: npt.ArrayLike = 0.0,
    *,
    device_id: int | None = None,
) -> DeviceProfile:
    """``device`` with its crystal moved so that its mean CFO over ``time_since_power_on_s`` (s) of
    ``session`` is ``target_cfo_hz`` (Hz): an attacker who tunes its carrier onto a legitimate device's CFO
    while its hardware fingerprint stays its own.

    ``device_id`` renames it (default: keeps its id).
    """
    mean_hz = float(np.mean(session_mean_cfo_hz(device, session, time_since_power_on_s)))
    ppm = device.crystal_ppm + (float(target_cfo_hz) - mean_hz) / device.carrier_freq_hz * 1e6
    tuned = dataclasses.replace(device, crystal_ppm=ppm)
    return tuned if device_id is None else dataclasses.replace(tuned, device_id=int(device_id))


_SALT_PLACE = 0x706C


def place_channel(
    device: DeviceProfile, place: int, *, doppler_hz: float, family: str = "exponential"
) -> channel.MultipathChannel:
    """The multipath channel of ``device`` at ``place``: one realisation, the same in every session there.

    ``"exponential"``: RMS delay spread U(10, 300) ns and K-factor U(0, 10) (Shen et al. 2022 Table I), drawn
    per device and place. ``"two_cluster"``: no line of sight (K = 0), clusters of U(50, 300) ns RMS spread,
    the second U(1, 4) us later at U(-9, -3) dB (:func:`~lorarffi.sim.channel.draw_two_cluster`; delay
    spreads of outdoor links, beyond the indoor range the augmentation draws). The Jakes process evolves with
    absolute session time at ``doppler_hz`` (people moving in the room).
    """
    if family not in CHANNEL_FAMILIES:
        raise ConfigError(f"family={family!r} is not valid: use one of {list(CHANNEL_FAMILIES)}")
    rng = np.random.default_rng([device.seed, _SALT_PLACE, int(place)])
    tau = rng.uniform(10e-9, 300e-9)
    k = rng.uniform(0.0, 10.0)
    if family == "exponential":
        return channel.draw_multipath(1, rms_delay_spread_s=tau, k_factor=k, doppler_hz=doppler_hz, rng=rng)
    return channel.draw_two_cluster(
        1,
        rms_delay_spread_s=rng.uniform(50e-9, 300e-9),
        second_delay_s=rng.uniform(1e-6, 4e-6),
        second_power_db=rng.uniform(-9.0, -3.0),
        k_factor=0.0,
        doppler_hz=doppler_hz,
        rng=rng,
    )
