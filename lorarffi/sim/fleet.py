"""Simulated LoRa devices: chip models and look-alike fleets of devices with persistent fingerprints.

A device (:class:`DeviceProfile`) is a frozen set of physical parameters: its oscillator's carrier offset and
how it drifts (warm-up after power-on, day to day, within a session, packet to packet), and its transmitter
hardware impairments (:mod:`lorarffi.sim.impairments`). A fleet (:func:`make_fleet`) is look-alike devices of
one chip model (:class:`ChipModel`, :data:`CHIPS`): the nominal chip plus per-device deviations scaled by
``spread``, with carrier offsets from one of the models of :mod:`lorarffi.sim.oscillator`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lorarffi.errors import ConfigError
from lorarffi.sim import oscillator
from lorarffi.sim.oscillator import CfoModel

__all__ = [
    "CARRIER_FREQ_HZ",
    "ChipName",
    "ChipModel",
    "CHIPS",
    "DeviceProfile",
    "make_fleet",
]

CARRIER_FREQ_HZ = 868.1e6  # Shen et al.: EU868 channel 868.1 MHz

_SALT_DAY = 0x6461

ChipName = Literal["sx1276", "sx1272", "sx1261"]


@dataclass(frozen=True)
class ChipModel:
    """Nominal hardware parameters of one LoRa chip model (what look-alike devices share).

    Units as in :class:`DeviceProfile`. The values are plausible engineering guesses, not measurements (no
    public measurement of these chips' PLL nonlinearity or transients exists that we know of); their orders of
    magnitude follow TorchSig's default impairment ranges (IQ imbalance up to +-1 dB / +-2 deg, phase noise
    0.25-1 deg RMS, passband ripple 1-2 dB, tanh/Rapp PA) scaled down to what a narrow-band LoRa transmitter
    shows, and Semtech's SX1276 datasheet for the PA ramp (RegPaRamp default 40 us) and crystal tolerance.
    """

    iq_gain_db: float
    iq_phase_deg: float
    phase_noise_rms_deg: float
    phase_noise_corner_hz: float
    sweep_coeffs_hz: tuple[float, float, float]
    transient_overshoot: float
    transient_time_constant_s: float
    transient_ring_hz: float
    ripple_db: float
    ripple_period_hz: float
    pa_saturation: float
    pa_smoothness: float
    pa_am_pm_deg: float
    pa_ramp_s: float


CHIPS: dict[str, ChipModel] = {
    "sx1276": ChipModel(
        0.0, 0.0, 0.6, 30e3, (0.0, 40.0, -15.0), 0.15, 4.0e-6, 80e3, 0.5, 90e3, 1.4, 2.0, 4.0, 40e-6
    ),
    "sx1272": ChipModel(
        0.3, 1.0, 0.8, 25e3, (0.0, 30.0, 20.0), 0.2, 5.0e-6, 60e3, 0.7, 70e3, 1.3, 2.5, 6.0, 40e-6
    ),
    "sx1261": ChipModel(
        -0.2, -1.0, 0.5, 40e3, (0.0, -25.0, 10.0), 0.1, 3.0e-6, 100e3, 0.4, 110e3, 1.5, 3.0, 3.0, 10e-6
    ),
}

# Per-device standard deviations around the chip's nominal values at spread = 1.
_DEVICE_STD: dict[str, Any] = {
    "iq_gain_db": 0.4,
    "iq_phase_deg": 2.5,
    "dc_offset": 0.04,
    "phase_noise_rms_deg": 0.15,
    "phase_noise_corner_hz": 5e3,
    "sweep_coeffs_hz": (5.0, 15.0, 10.0),
    "transient_overshoot": 0.08,
    "transient_time_constant_s": 1.5e-6,
    "transient_ring_hz": 30e3,
    "ripple_db": 0.5,
    "ripple_period_hz": 15e3,
    "ripple_phase_rad": 0.6,
    "pa_saturation": 0.05,
    "pa_smoothness": 0.2,
    "pa_am_pm_deg": 1.0,
    "pa_ramp_s": 2e-6,
}

# Carrier-offset behaviour (crystal and its thermal behaviour: not a property of the chip, so not scaled by
# spread).
_CRYSTAL_PPM_STD = (
    2.0  # per device; clipped to the +-10 ppm tolerance (Semtech AN1200.14: 8.68 kHz at 868 MHz)
)
_CRYSTAL_PPM_LIMIT = 10.0
_WARMUP_DRIFT_HZ = (
    200.0,
    900.0,
)  # CFO at power-on minus settled CFO (Shen et al. 2021 Fig. 10: ~700 Hz fall)
_WARMUP_TAU_S = (240.0, 420.0)  # settles within ~20 min (3-5 time constants), Shen et al. 2021 §VI
_DAY_SHIFT_STD_HZ = (80.0, 250.0)  # per-device scale of day-to-day shifts ("hundreds of Hz", §VI)
_JITTER_HZ = (5.0, 20.0)  # per-packet CFO jitter, RMS


@dataclass(frozen=True)
class DeviceProfile:
    """One simulated LoRa transmitter: its carrier-offset behaviour and hardware impairments (persistent).

    Attributes
    ----------
    device_id : int
        1-based device id (the label in datasets).
    chip : str
        Chip model name (a key of :data:`CHIPS`).
    seed : int
        Seed of the device's own random draws across sessions (its day-to-day shifts, its channel at each
        place).
    carrier_freq_hz : float
        Nominal carrier frequency in Hz (868.1 MHz).
    crystal_ppm : float
        Settled crystal frequency error in ppm: the CFO is ``crystal_ppm * 1e-6 * carrier_freq_hz`` on day 0.
    warmup_drift_hz : float
        CFO right after power-on minus the settled CFO, in Hz; decays as ``exp(-t / warmup_time_constant_s)``.
    warmup_time_constant_s : float
        Time constant of the warm-up drift, in s.
    day_shift_std_hz : float
        Standard deviation of the device's day-to-day CFO shift, in Hz.
    cfo_jitter_hz : float
        RMS packet-to-packet CFO jitter, in Hz.
    iq_gain_db, iq_phase_deg : float
        IQ imbalance of the Q branch (see :func:`~lorarffi.sim.impairments.iq_imbalance`).
    dc_offset_i, dc_offset_q : float
        Carrier leakage relative to the signal amplitude.
    phase_noise_rms_deg, phase_noise_corner_hz : float
        PLL phase noise (see :func:`~lorarffi.sim.impairments.phase_noise`).
    sweep_coeffs_hz : tuple of float
        Legendre coefficients of the chirp frequency deviation, Hz (see
        :func:`~lorarffi.sim.impairments.pll_packet_waveform`).
    transient_overshoot, transient_time_constant_s, transient_ring_hz : float
        PLL settling after each frequency jump.
    ripple_db, ripple_period_hz, ripple_phase_rad : float
        TX filter passband ripple.
    pa_saturation, pa_smoothness, pa_am_pm_deg : float
        Rapp PA AM/AM and AM/PM.
    pa_ramp_s : float
        PA ramp-up/down time in s.
    oscillator : {"crystal", "tcxo"}
        Oscillator family (decides how a named environment moves the CFO, see
        :func:`~lorarffi.sim.oscillator.environment_offset_hz`).
    wander_std_hz : float
        Standard deviation of the slow within-session CFO wander, in Hz
        (:func:`~lorarffi.sim.oscillator.wander_hz`; 0 in the datasheet model).
    second_frame_offset_hz : float
        CFO offset of a frame sent right after another, in Hz (0 in the datasheet model).
    """

    device_id: int
    chip: str
    seed: int
    carrier_freq_hz: float
    crystal_ppm: float
    warmup_drift_hz: float
    warmup_time_constant_s: float
    day_shift_std_hz: float
    cfo_jitter_hz: float
    iq_gain_db: float
    iq_phase_deg: float
    dc_offset_i: float
    dc_offset_q: float
    phase_noise_rms_deg: float
    phase_noise_corner_hz: float
    sweep_coeffs_hz: tuple[float, ...]
    transient_overshoot: float
    transient_time_constant_s: float
    transient_ring_hz: float
    ripple_db: float
    ripple_period_hz: float
    ripple_phase_rad: float
    pa_saturation: float
    pa_smoothness: float
    pa_am_pm_deg: float
    pa_ramp_s: float
    oscillator: str = "crystal"
    wander_std_hz: float = 0.0
    second_frame_offset_hz: float = 0.0

    @property
    def crystal_offset_hz(self) -> float:
        """The settled carrier offset without day shift, ``crystal_ppm * 1e-6 * carrier_freq_hz``, in Hz."""
        return self.crystal_ppm * 1e-6 * self.carrier_freq_hz

    def day_offset_hz(self, day: int) -> float:
        """The device's CFO shift on ``day`` (a fixed draw per device and day), in Hz."""
        return float(
            self.day_shift_std_hz * np.random.default_rng([self.seed, _SALT_DAY, int(day)]).standard_normal()
        )

    def mean_cfo_hz(self, day: int, time_since_power_on_s: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Expected CFO (without packet jitter) on ``day`` at ``time_since_power_on_s`` (any shape), in Hz.

        ``crystal_offset_hz + day_offset_hz(day) + warmup_drift_hz * exp(-t / warmup_time_constant_s)``,
        plus the within-session wander when ``wander_std_hz`` is not 0.
        """
        t = np.asarray(time_since_power_on_s, dtype=np.float64)
        warm = self.warmup_drift_hz * np.exp(-np.maximum(t, 0.0) / self.warmup_time_constant_s)
        cfo = self.crystal_offset_hz + self.day_offset_hz(day) + warm
        if self.wander_std_hz:
            cfo = cfo + oscillator.wander_hz(self.seed, day, t, wander_std_hz=self.wander_std_hz)
        return cfo

    def environment_offset_hz(self, environment: str) -> float:
        """The device's CFO step in a named environment (``"reference"``: 0), in Hz."""
        return oscillator.environment_offset_hz(
            self.seed, self.oscillator, environment, carrier_freq_hz=self.carrier_freq_hz
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-typed fields for JSON; the oscillator fields only where they differ from their defaults."""
        d = dataclasses.asdict(self)
        d["sweep_coeffs_hz"] = list(self.sweep_coeffs_hz)
        for name, default in _OPTIONAL_FIELDS.items():
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeviceProfile:
        """Inverse of :meth:`to_dict`."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not names - set(_OPTIONAL_FIELDS) <= set(d) <= names:
            raise ConfigError(
                f"DeviceProfile fields differ: missing {sorted(names - set(_OPTIONAL_FIELDS) - set(d))}, "
                f"unknown {sorted(set(d) - names)}"
            )
        return cls(**{**d, "sweep_coeffs_hz": tuple(float(c) for c in d["sweep_coeffs_hz"])})


#: Fields added with a default: written by :meth:`DeviceProfile.to_dict` only where they differ from it.
_OPTIONAL_FIELDS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(DeviceProfile) if f.default is not dataclasses.MISSING
}

_SALT_FAMILY = 0x6661
_SALT_OSCILLATOR = 0x6F73


def make_fleet(
    n_devices: int,
    *,
    seed: int,
    chip: ChipName = "sx1276",
    spread: float = 1.0,
    first_device: int = 1,
    carrier_freq_hz: float = CARRIER_FREQ_HZ,
    cfo_model: CfoModel = "datasheet",
    tcxo_fraction: float | None = None,
) -> list[DeviceProfile]:
    """Look-alike devices of one chip model: nominal chip parameters plus per-device deviations.

    Ranges (per device) and their sources:

    - crystal: ``N(0, 2 ppm)`` clipped to +-10 ppm (Semtech AN1200.14: +-10 ppm = +-8.68 kHz at 868.1 MHz;
      Shen et al. 2021 measured CFOs of -5 to +5.5 kHz). Twenty devices therefore share a few kHz, and with
      the drifts below their CFO ranges overlap: CFO alone cannot identify them.
    - warm-up drift: CFO falls by U(200, 900) Hz with a time constant U(240, 420) s after power-on,
      settling within ~20 min (Shen et al. 2021 §VI, Fig. 10: ~700 Hz over 15 min).
    - day-to-day shift: ``N(0, s)`` per day with ``s`` ~ U(80, 250) Hz per device ("hundreds of Hz", §VI).
    - packet jitter: U(5, 20) Hz RMS.
    - hardware: nominal values from :data:`CHIPS` plus a normal deviation per device with these standard
      deviations at ``spread=1``: IQ gain 0.4 dB and phase 2.5 deg (TorchSig ``IQImbalance`` defaults +-1 dB,
      +-2 deg), DC offset 0.04 per component (-25 dBc), phase noise 0.15 deg RMS (TorchSig 0.25-1 deg) and
      its corner 5 kHz; PLL settling after each frequency jump: overshoot 0.08 of the jump, time constant
      1.5 us, ringing 30 kHz (around a nominal 0.15, 4 us, 80 kHz for the SX1276); sweep nonlinearity
      Legendre coefficients (5, 15, 10) Hz around a nominal bow of a few tens of Hz (it must stay well below
      the 30 Hz FFT bin of SF12/125 kHz, which real chips demodulate at datasheet sensitivity); ripple 0.5 dB
      (TorchSig ``PassbandRipple`` 1-2 dB is for wide-band filters), its period 15 kHz and phase 0.6 rad;
      PA saturation 0.05, Rapp smoothness 0.2, AM/PM 1 deg; PA ramp 2 us (SX1276 ``RegPaRamp`` 40 us).
      These are engineering guesses (no public measurement of these chips' PLL transients exists that we
      know of) sized so that ``spread=1`` devices are told apart mainly by these subtle effects with a
      realistic, not perfect, accuracy (see ``spread``).

    With ``cfo_model="calibrated"`` the carrier-offset parameters come instead from distributions fitted to 30
    real transmitters (:data:`~lorarffi.sim.oscillator.CALIBRATED_FITS`, ``docs/simulator.md``), in ppm of
    ``carrier_freq_hz``: crystal and TCXO devices, each family with its offsets, day shifts, within-session
    wander, jitter, warm-up and second-frame offset. The hardware draws are the same as the datasheet
    model's for the same seed.

    The crystal and drift parameters do not scale with ``spread`` (a crystal is not part of the chip model);
    ``spread=0`` gives devices that differ only in carrier offset. The per-device random draws do not depend
    on ``spread`` either: the same seed at another spread gives the same devices with their hardware
    deviations scaled.

    Parameters
    ----------
    n_devices : int
        Number of devices (>= 1).
    seed : int
        Seed of the fleet: the same seed, chip and spread give the same devices.
    chip : {"sx1276", "sx1272", "sx1261"}
        Chip model (LoPy4/Dragino, FiPy/SX1272 shield, SX1261 shield in Shen et al.).
    spread : float
        Scale of the per-device hardware deviations (>= 0). Calibration (20 sx1276 devices, seed 7, train
        150 packets each on day 1 from power-on at place 1, test 50 each on day 2 warmed up at place 2,
        multipath, in-band SNR 10-25 dB; nearest centroid with per-feature variance weighting on the LoRa-band
        rows of CFO-compensated channel-independent spectrograms): 75 % at ``spread=1``, 90 % at 1.5, 95 % at
        2, chance (6 %) at 0; at in-band SNR 0-10 dB: 19 %, 29 %, 32 %, 5 %.
    first_device : int
        Id of the first device; ids are consecutive.
    carrier_freq_hz : float
        Nominal carrier frequency in Hz.
    cfo_model : {"datasheet", "calibrated"}
        Carrier-offset model (see above).
    tcxo_fraction : float, optional
        Share of TCXO devices in a calibrated fleet (default 19/30, the real fleet's):
        ``round(tcxo_fraction * n_devices)`` devices, chosen at random with the fleet's seed. Only with
        ``cfo_model="calibrated"``.

    Returns
    -------
    list of DeviceProfile

    Examples
    --------
    >>> fleet = make_fleet(3, seed=1)
    >>> [d.device_id for d in fleet], fleet == make_fleet(3, seed=1)
    ([1, 2, 3], True)
    """
    if isinstance(n_devices, bool) or int(n_devices) != n_devices or n_devices < 1:
        raise ConfigError(f"n_devices={n_devices!r} is not valid: use an integer >= 1")
    if chip not in CHIPS:
        raise ConfigError(f"chip={chip!r} is not valid: use one of {sorted(CHIPS)}")
    if not np.isfinite(spread) or spread < 0:
        raise ConfigError(f"spread={spread!r} is not valid: use a number >= 0")
    families = _families(int(n_devices), seed=int(seed), cfo_model=cfo_model, tcxo_fraction=tcxo_fraction)
    nominal = CHIPS[chip]
    fleet = []
    for k in range(int(n_devices)):
        device_id = int(first_device) + k
        rng = np.random.default_rng([int(seed), device_id])
        crystal = float(np.clip(rng.normal(0.0, _CRYSTAL_PPM_STD), -_CRYSTAL_PPM_LIMIT, _CRYSTAL_PPM_LIMIT))
        drift = rng.uniform(*_WARMUP_DRIFT_HZ)
        tau = rng.uniform(*_WARMUP_TAU_S)
        day_std = rng.uniform(*_DAY_SHIFT_STD_HZ)
        jitter = rng.uniform(*_JITTER_HZ)
        dev_seed = int(rng.integers(2**62))

        def dev(
            name: str, base: float, lo: float | None = None, hi: float | None = None, rng=rng
        ) -> float:
            v = base + spread * _DEVICE_STD[name] * rng.standard_normal()
            return float(np.clip(v, lo if lo is not None else -np.inf, hi if hi is not None else np.inf))

        sweep = tuple(
            float(c + spread * s * rng.standard_normal())
            for c, s in zip(nominal.sweep_coeffs_hz, _DEVICE_STD["sweep_coeffs_hz"], strict=True)
        )
        fleet.append(
            DeviceProfile(
                device_id=device_id,
                chip=chip,
                seed=dev_seed,
                carrier_freq_hz=float(carrier_freq_hz),
                crystal_ppm=crystal,
                warmup_drift_hz=float(drift),
                warmup_time_constant_s=float(tau),
                day_shift_std_hz=float(day_std),
                cfo_jitter_hz=float(jitter),
                iq_gain_db=dev("iq_gain_db", nominal.iq_gain_db),
                iq_phase_deg=dev("iq_phase_deg", nominal.iq_phase_deg),
                dc_offset_i=dev("dc_offset", 0.0),
                dc_offset_q=dev("dc_offset", 0.0),
                phase_noise_rms_deg=dev("phase_noise_rms_deg", nominal.phase_noise_rms_deg, 0.0),
                phase_noise_corner_hz=dev("phase_noise_corner_hz", nominal.phase_noise_corner_hz, 1e3),
                sweep_coeffs_hz=sweep,
                transient_overshoot=dev("transient_overshoot", nominal.transient_overshoot, 0.0, 1.0),
                transient_time_constant_s=dev(
                    "transient_time_constant_s", nominal.transient_time_constant_s, 0.2e-6
                ),
                transient_ring_hz=dev("transient_ring_hz", nominal.transient_ring_hz, 0.0),
                ripple_db=dev("ripple_db", nominal.ripple_db, 0.0),
                ripple_period_hz=dev("ripple_period_hz", nominal.ripple_period_hz, 20e3),
                ripple_phase_rad=dev("ripple_phase_rad", 0.0),
                pa_saturation=dev("pa_saturation", nominal.pa_saturation, 1.0),
                pa_smoothness=dev("pa_smoothness", nominal.pa_smoothness, 0.5),
                pa_am_pm_deg=dev("pa_am_pm_deg", nominal.pa_am_pm_deg),
                pa_ramp_s=dev("pa_ramp_s", nominal.pa_ramp_s, 0.0),
            )
        )
        if families is not None:
            osc_rng = np.random.default_rng([int(seed), _SALT_OSCILLATOR, device_id])
            fleet[-1] = dataclasses.replace(
                fleet[-1],
                **oscillator.draw_calibrated_oscillator(
                    families[k], osc_rng, carrier_freq_hz=float(carrier_freq_hz)
                ),
            )
    return fleet


def _families(
    n_devices: int, *, seed: int, cfo_model: str, tcxo_fraction: float | None
) -> list[oscillator.OscillatorFamily] | None:
    """The oscillator family of each device of a calibrated fleet (None for the datasheet model)."""
    if cfo_model == "datasheet":
        if tcxo_fraction is not None:
            raise ConfigError("tcxo_fraction is only valid with cfo_model='calibrated'")
        return None
    if cfo_model != "calibrated":
        raise ConfigError(f"cfo_model={cfo_model!r} is not valid: use 'datasheet' or 'calibrated'")
    fraction = oscillator.CALIBRATED_TCXO_FRACTION if tcxo_fraction is None else tcxo_fraction
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"tcxo_fraction={tcxo_fraction!r} is not valid: use a number in [0, 1]")
    tcxo = np.random.default_rng([seed, _SALT_FAMILY, n_devices]).permutation(n_devices)
    is_tcxo = np.zeros(n_devices, bool)
    is_tcxo[tcxo[: int(round(fraction * n_devices))]] = True
    return ["tcxo" if t else "crystal" for t in is_tcxo]
