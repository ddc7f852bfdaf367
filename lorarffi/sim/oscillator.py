"""Carrier-offset models of a transmitter's reference oscillator, in ppm of the carrier.

Two models for :func:`lorarffi.sim.fleet.make_fleet`: ``"datasheet"`` (crystals within the +-10 ppm tolerance
and the drift findings of Shen et al. 2021, the simulator's original model, drawn in
:mod:`~lorarffi.sim.fleet`) and ``"calibrated"``, whose distributions are fitted to the CFO statistics of 30
real LoRa transmitters at 433 MHz (``shared/data/real_cfo_30dev``, see ``docs/simulator.md``): a fleet mixes
crystal and TCXO devices, each family with its own offsets, day-to-day shifts, within-session wander, packet
jitter and, for TCXOs, the offset of a frame sent right after another. Everything is in ppm, so it scales
with the carrier. Environment steps (a session in another environment moves crystal devices by about
-1.7 ppm) apply to both models.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lorarffi.errors import ConfigError

__all__ = [
    "CfoModel",
    "OscillatorFamily",
    "CALIBRATED_TCXO_FRACTION",
    "FamilyFit",
    "CALIBRATED_FITS",
    "draw_calibrated_oscillator",
    "wander_hz",
    "EnvironmentStep",
    "ENVIRONMENTS",
    "environment_offset_hz",
]

CfoModel = Literal["datasheet", "calibrated"]
OscillatorFamily = Literal["crystal", "tcxo"]

#: Share of TCXO devices among the 30 real transmitters (19 of 30).
CALIBRATED_TCXO_FRACTION = 19 / 30

_SALT_WANDER = 0x7761
_SALT_ENVIRONMENT = 0x656E

_WANDER_TERMS = 8  # sinusoids in the wander process
_WANDER_PERIOD_S = (60.0, 1800.0)  # log-uniform periods of its terms


@dataclass(frozen=True)
class FamilyFit:
    """Per-device distributions of one oscillator family, all in ppm of the carrier.

    Attributes
    ----------
    offset_ppm : tuple of (weight, mean_ppm, std_ppm)
        Settled offset: a mixture of normals (weights sum to 1).
    day_shift_std_ppm : (low, high)
        The device's day-to-day shift scale, log-uniform; each day's shift is ``N(0, scale)``.
    wander_std_ppm : (low, high)
        Standard deviation of the device's within-session wander, uniform.
    jitter_ppm : (low, high)
        RMS packet-to-packet jitter, uniform.
    warmup_ppm : (low, high)
        CFO right after power-on minus the settled CFO, uniform.
    second_frame_ppm : (low, high)
        Offset of a frame sent right after another (the second of a pair), uniform.
    """

    offset_ppm: tuple[tuple[float, float, float], ...]
    day_shift_std_ppm: tuple[float, float]
    wander_std_ppm: tuple[float, float]
    jitter_ppm: tuple[float, float]
    warmup_ppm: tuple[float, float]
    second_frame_ppm: tuple[float, float]


_HZ_433 = 1e6 / 433e6  # ppm per Hz at the real fleet's 433 MHz carrier

#: Fits to the 30 real transmitters (``docs/simulator.md`` gives the numbers they come from).
CALIBRATED_FITS: dict[str, FamilyFit] = {
    "crystal": FamilyFit(
        offset_ppm=((4 / 11, -2.83, 2.43), (7 / 11, 43.78, 4.16)),
        day_shift_std_ppm=(0.05, 0.2),
        wander_std_ppm=(2.0 * _HZ_433, 5.0 * _HZ_433),
        jitter_ppm=(1.0 * _HZ_433, 4.4 * _HZ_433),
        warmup_ppm=(200.0 / 868.1, 900.0 / 868.1),
        second_frame_ppm=(0.0, 0.0),
    ),
    "tcxo": FamilyFit(
        offset_ppm=((1.0, -0.063, 0.241),),
        day_shift_std_ppm=(0.0005, 0.005),
        wander_std_ppm=(2.0 * _HZ_433, 5.0 * _HZ_433),
        jitter_ppm=(1.0 * _HZ_433, 4.4 * _HZ_433),
        warmup_ppm=(10.0 / 868.1, 45.0 / 868.1),
        second_frame_ppm=(13.8 * _HZ_433, 37.1 * _HZ_433),
    ),
}

_WARMUP_TAU_S = (240.0, 420.0)  # as the datasheet model (Shen et al. 2021 §VI)


def draw_calibrated_oscillator(
    family: OscillatorFamily, rng: np.random.Generator, *, carrier_freq_hz: float
) -> dict[str, Any]:
    """One device's carrier-offset parameters drawn from :data:`CALIBRATED_FITS`.

    Parameters
    ----------
    family : {"crystal", "tcxo"}
    rng : numpy.random.Generator
        The device's own generator.
    carrier_freq_hz : float
        Nominal carrier in Hz: the ppm draws become Hz at this carrier.

    Returns
    -------
    dict
        :class:`~lorarffi.sim.fleet.DeviceProfile` fields: ``oscillator``, ``crystal_ppm``,
        ``warmup_drift_hz``, ``warmup_time_constant_s``, ``day_shift_std_hz``, ``cfo_jitter_hz``,
        ``wander_std_hz``, ``second_frame_offset_hz``.
    """
    if family not in CALIBRATED_FITS:
        raise ConfigError(f"family={family!r} is not valid: use one of {sorted(CALIBRATED_FITS)}")
    fit = CALIBRATED_FITS[family]
    weights = np.array([w for w, _, _ in fit.offset_ppm])
    k = int(rng.choice(weights.size, p=weights / weights.sum()))
    _, mean_ppm, std_ppm = fit.offset_ppm[k]
    hz_per_ppm = carrier_freq_hz * 1e-6
    lo, hi = np.log(fit.day_shift_std_ppm)
    return {
        "oscillator": family,
        "crystal_ppm": float(rng.normal(mean_ppm, std_ppm)),
        "warmup_drift_hz": float(rng.uniform(*fit.warmup_ppm) * hz_per_ppm),
        "warmup_time_constant_s": float(rng.uniform(*_WARMUP_TAU_S)),
        "day_shift_std_hz": float(np.exp(rng.uniform(lo, hi)) * hz_per_ppm),
        "cfo_jitter_hz": float(rng.uniform(*fit.jitter_ppm) * hz_per_ppm),
        "wander_std_hz": float(rng.uniform(*fit.wander_std_ppm) * hz_per_ppm),
        "second_frame_offset_hz": float(rng.uniform(*fit.second_frame_ppm) * hz_per_ppm),
    }


def wander_hz(
    device_seed: int, day: int, time_since_power_on_s: npt.ArrayLike, *, wander_std_hz: float
) -> npt.NDArray[np.float64]:
    """A device's slow CFO wander on ``day`` at the given times (any shape), in Hz.

    A stationary process with standard deviation ``wander_std_hz``: ``_WANDER_TERMS`` sinusoids of equal
    amplitude with log-uniform periods of 1 to 30 minutes and random phases, drawn per device and day. It is
    a pure function of time, so any packet's wander is known without state (streams stay chunk-independent).
    """
    t = np.asarray(time_since_power_on_s, dtype=np.float64)
    rng = np.random.default_rng([int(device_seed), _SALT_WANDER, int(day)])
    lo, hi = np.log(_WANDER_PERIOD_S)
    periods_s = np.exp(rng.uniform(lo, hi, _WANDER_TERMS))
    phases_rad = rng.uniform(0.0, 2 * np.pi, _WANDER_TERMS)
    amplitude_hz = wander_std_hz * np.sqrt(2.0 / _WANDER_TERMS)
    arg = 2 * np.pi * t[..., None] / periods_s + phases_rad
    return amplitude_hz * np.cos(arg).sum(axis=-1)


@dataclass(frozen=True)
class EnvironmentStep:
    """How a named environment moves each family's carrier offset: ``N(mean, std)`` ppm per device."""

    crystal_mean_ppm: float
    crystal_std_ppm: float
    tcxo_mean_ppm: float = 0.0
    tcxo_std_ppm: float = 0.0


#: Named capture environments. ``"reference"`` is where the fleet's offsets hold; ``"nlos"`` is the real
#: fleet's non-line-of-sight day: its three crystal devices measured there moved -1.55, -1.69 and -1.81 ppm
#: (mean -1.68; their spread is what day shifts alone give, so the step's own spread is a small guess), the
#: one TCXO device 3 Hz, within its day shifts (no step).
ENVIRONMENTS: dict[str, EnvironmentStep] = {
    "reference": EnvironmentStep(0.0, 0.0),
    "nlos": EnvironmentStep(-1.684, 0.05),
}


def environment_offset_hz(
    device_seed: int, family: str, environment: str, *, carrier_freq_hz: float
) -> float:
    """The CFO step of one device in a named environment (a fixed draw per device and environment), in Hz."""
    step = _environment(environment)
    mean, std = (
        (step.crystal_mean_ppm, step.crystal_std_ppm)
        if family == "crystal"
        else (step.tcxo_mean_ppm, step.tcxo_std_ppm)
    )
    if mean == 0.0 and std == 0.0:
        return 0.0
    rng = np.random.default_rng([int(device_seed), _SALT_ENVIRONMENT, zlib.crc32(environment.encode())])
    return float(rng.normal(mean, std) * carrier_freq_hz * 1e-6)


def _environment(name: str) -> EnvironmentStep:
    if name not in ENVIRONMENTS:
        raise ConfigError(f"environment={name!r} is not valid: use one of {sorted(ENVIRONMENTS)}")
    return ENVIRONMENTS[name]
