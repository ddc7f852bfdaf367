"""Synthetic LoRa devices: persistent fingerprints, sessions, aligned preamble sets and packet streams.

A *device* (:class:`DeviceProfile`) is a frozen set of physical parameters: its crystal's carrier offset and
how it drifts (warm-up after power-on, day to day, packet to packet), and its transmitter hardware impairments
(:mod:`lorarffi.sim.impairments`). A *fleet* (:func:`make_fleet`) is look-alike devices of one chip
model: a nominal chip plus per-device deviations scaled by ``spread``. A *session* (:class:`Session`) is one
capture: a day, how long the devices have been on, and a place (which fixes each device's multipath channel).
A train session and a later test session thus differ as real captures do (Shen et al. 2021 §VI: CFO falls
over the first ~20 min after power-on and moves by hundreds of Hz between days; another room is another
channel), while each device's hardware fingerprint persists.

Outputs: :func:`simulate_preamble_set` gives aligned fingerprint windows like the public LoRa_RFFI dataset
(not CFO-compensated), :class:`StreamSimulator` a continuous, chunk-independent stream of whole packets in
noise with ground truth (the ``sim`` virtual radio), :func:`simulate_stream` the same as one array.

Signal chain per packet (receiver frame): PLL chirps with sweep nonlinearity and settling transients, PA
ramps -> phase noise -> IQ imbalance, DC offset -> TX filter ripple -> PA AM/AM, AM/PM -> carrier offset
(CFO, random carrier phase) -> multipath with Doppler -> AWGN at an in-band SNR.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.chirp import packet_layout
from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError
from lorarffi.sim import channel, impairments

__all__ = [
    "CARRIER_FREQ_HZ",
    "ChipModel",
    "DeviceProfile",
    "make_fleet",
    "Session",
    "PreambleSet",
    "simulate_preamble_set",
    "TransmissionEvent",
    "StreamSimulator",
    "simulate_stream",
    "place_channel",
]

log = logging.getLogger(__name__)

CARRIER_FREQ_HZ = 868.1e6  # Shen et al.: EU868 channel 868.1 MHz

_SALT_DAY = 0x6461
_SALT_PLACE = 0x706C
_SALT_ROGUE = 0x726F

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

        ``crystal_offset_hz + day_offset_hz(day) + warmup_drift_hz * exp(-t / warmup_time_constant_s)``.
        """
        t = np.asarray(time_since_power_on_s, dtype=np.float64)
        warm = self.warmup_drift_hz * np.exp(-np.maximum(t, 0.0) / self.warmup_time_constant_s)
        return self.crystal_offset_hz + self.day_offset_hz(day) + warm

    def to_dict(self) -> dict[str, Any]:
        """Plain-typed fields for JSON."""
        d = dataclasses.asdict(self)
        d["sweep_coeffs_hz"] = list(self.sweep_coeffs_hz)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeviceProfile:
        """Inverse of :meth:`to_dict`."""
        names = {f.name for f in dataclasses.fields(cls)}
        if set(d) != names:
            raise ConfigError(
                f"DeviceProfile fields differ: missing {sorted(names - set(d))}, "
                f"unknown {sorted(set(d) - names)}"
            )
        return cls(**{**d, "sweep_coeffs_hz": tuple(float(c) for c in d["sweep_coeffs_hz"])})


def make_fleet(
    n_devices: int,
    *,
    seed: int,
    chip: ChipName = "sx1276",
    spread: float = 1.0,
    first_device: int = 1,
    carrier_freq_hz: float = CARRIER_FREQ_HZ,
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
    return fleet


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
    """

    day: int = 1
    minutes_since_power_on: float = 0.0
    place: int = 1

    def __post_init__(self) -> None:
        if not np.isfinite(self.minutes_since_power_on) or self.minutes_since_power_on < 0:
            raise ConfigError(
                f"minutes_since_power_on={self.minutes_since_power_on!r} is not valid: use >= 0"
            )


def place_channel(device: DeviceProfile, place: int, *, doppler_hz: float) -> channel.MultipathChannel:
    """The multipath channel of ``device`` at ``place``: one realisation, the same in every session there.

    RMS delay spread U(10, 300) ns and K-factor U(0, 10) (Shen et al. 2022 Table I), drawn per device and
    place. Its Jakes process evolves with absolute session time at ``doppler_hz`` (people moving in the room).
    """
    rng = np.random.default_rng([device.seed, _SALT_PLACE, int(place)])
    tau = rng.uniform(10e-9, 300e-9)
    k = rng.uniform(0.0, 10.0)
    return channel.draw_multipath(1, rms_delay_spread_s=tau, k_factor=k, doppler_hz=doppler_hz, rng=rng)


# -- synthesis -----------------------------------------------------------------------------------------------


def _rows_of(profiles: Sequence[DeviceProfile]) -> dict[str, npt.NDArray[np.float64]]:
    names = [f.name for f in dataclasses.fields(DeviceProfile) if f.name not in ("device_id", "chip", "seed")]
    out = {name: np.array([getattr(p, name) for p in profiles], dtype=np.float64) for name in names}
    return out


def _transmit(
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
    """Transmitted packets in the receiver's frame (impaired, CFO applied, no channel): (N, n_samples)."""
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


def _check_snr(snr_db: float | tuple[float, float]) -> tuple[float, float]:
    lo, hi = (snr_db, snr_db) if np.ndim(snr_db) == 0 else tuple(snr_db)  # type: ignore[misc]
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
        raise ConfigError(f"snr_db={snr_db!r} is not valid: use a number or a range (low, high)")
    return float(lo), float(hi)


@dataclass(frozen=True)
class PreambleSet:
    """Aligned fingerprint windows with ground truth, like the public dataset (not CFO-compensated).

    Attributes
    ----------
    preambles : ndarray of complex64, shape (N, cfg.preamble_samples)
        Each row starts at the first of the ``cfg.preamble_symbols`` up-chirps before the sync word.
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


_MARGIN = 32  # samples synthesised before the window (channel interpolation lead-in) and after it
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

    Returns
    -------
    PreambleSet
    """
    if not fleet:
        raise ConfigError("fleet is empty")
    if int(n_packets_per_device) < 1:
        raise ConfigError(f"n_packets_per_device={n_packets_per_device!r} is not valid: use >= 1")
    lo, hi = _check_snr(snr_db)
    n_per = int(n_packets_per_device)
    length = cfg.preamble_samples
    lay = packet_layout(cfg)
    n_samples = length + 2 * _MARGIN
    t_packets = session.minutes_since_power_on * 60.0 + np.arange(n_per) * packet_interval_s
    rows = [(dev, k) for dev in fleet for k in range(n_per)]
    out = np.empty((len(rows), length), np.complex64)
    cfo = np.empty(len(rows))
    snr_all = np.empty(len(rows))
    channels = (
        {d.device_id: place_channel(d, session.place, doppler_hz=doppler_hz) for d in fleet}
        if multipath
        else {}
    )
    for b0 in range(0, len(rows), _BATCH_ROWS):
        batch = rows[b0 : b0 + _BATCH_ROWS]
        n = len(batch)
        profiles = [dev for dev, _ in batch]
        t_cap = t_packets[[k for _, k in batch]]
        mean = np.array([dev.mean_cfo_hz(session.day, t) for dev, t in zip(profiles, t_cap, strict=True)])
        jitter = np.array([dev.cfo_jitter_hz for dev in profiles])
        cfo_b = mean + jitter * rng.standard_normal(n)
        frac = rng.uniform(-0.5, 0.5, n)
        t0 = (lay.fingerprint_start - _MARGIN - frac) / cfg.fs_hz
        x = _transmit(
            profiles, cfg, np.zeros(0, np.int64), t0_s=t0, n_samples=n_samples, cfo_hz=cfo_b, rng=rng
        )
        if multipath:
            ch = _stack_channels([channels[dev.device_id] for dev in profiles])
            x = channel.apply_multipath(x, ch, fs_hz=cfg.fs_hz, t0_s=t_cap)
        window = x[:, _MARGIN : _MARGIN + length]
        power = np.mean(np.abs(window) ** 2, axis=1, dtype=np.float64)
        snr = rng.uniform(lo, hi, n)
        out[b0 : b0 + n] = channel.add_awgn(
            window, snr, reference="in_band", rng=rng, bw_hz=cfg.bw_hz, fs_hz=cfg.fs_hz, signal_power=power
        )
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


def _stack_channels(chans: Sequence[channel.MultipathChannel]) -> channel.MultipathChannel:
    fields = channel.MultipathChannel.__dataclass_fields__
    return channel.MultipathChannel(*(np.concatenate([getattr(c, f) for c in chans]) for f in fields))


# -- continuous stream ---------------------------------------------------------------------------------------


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

    @property
    def stop(self) -> int:
        """One past the packet's last sample."""
        return self.start + self.n_samples


_NOISE_BLOCK = 1 << 16


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
        snr_db: float | tuple[float, float] = (10.0, 25.0),
        mean_interval_s: float = 0.3,
        seed: int = 0,
        multipath: bool = True,
        doppler_hz: float = 0.2,
        n_preamble: int | None = None,
        payload_symbols: tuple[int, int] = (8, 32),
        noise_power: float = 1e-3,
        spread: float = 1.0,
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
        self._senders = self.fleet + self.rogues
        self._lo, self._hi = _check_snr(snr_db)
        self.mean_interval_s = float(mean_interval_s)
        self.multipath = bool(multipath)
        self.n_preamble = cfg.preamble_symbols if n_preamble is None else int(n_preamble)
        self.payload_symbols = (int(payload_symbols[0]), int(payload_symbols[1]))
        self.noise_power = float(noise_power)
        self._channels = (
            {d.device_id: place_channel(d, self.session.place, doppler_hz=doppler_hz) for d in self._senders}
            if multipath
            else {}
        )
        self._plan_rng = np.random.default_rng([self.seed, 1])
        self._planned: list[
            tuple[TransmissionEvent, float, npt.NDArray[np.int64]]
        ] = []  # event, exact pos, payload
        self._next_free_s = 0.0
        self._cache: dict[int, npt.NDArray[np.complex64]] = {}
        self._first_active = 0  # planned packets before this one lie wholly before the read position
        self._noise_block: tuple[int, npt.NDArray[np.complex64]] = (-1, np.zeros(0, np.complex64))
        self._position = 0

    @property
    def position(self) -> int:
        """Absolute index of the next sample :meth:`read` returns."""
        return self._position

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
            n_pay = int(rng.integers(self.payload_symbols[0], self.payload_symbols[1] + 1))
            payload = rng.integers(0, self.cfg.n_chips, n_pay)
            snr = float(rng.uniform(self._lo, self._hi))
            pos = t * fs  # exact (fractional) position of the packet start, in samples
            lay = packet_layout(self.cfg, n_pay, n_preamble=self.n_preamble)
            n_samples = int(np.ceil(lay.stop))
            t_on = self.session.minutes_since_power_on * 60.0 + t
            cfo = float(dev.mean_cfo_hz(self.session.day, t_on))
            cfo += dev.cfo_jitter_hz * float(rng.standard_normal())
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
            )
            self._planned.append((ev, pos, payload))
            self._next_free_s = t + (n_samples + 64) / fs

    def _packet(self, index: int) -> npt.NDArray[np.complex64]:
        """Samples ``start - _MARGIN .. stop + _MARGIN`` of planned packet ``index`` (received, no noise)."""
        if index in self._cache:
            return self._cache[index]
        ev, pos, payload = self._planned[index]
        dev = next(d for d in self._senders if d.device_id == ev.device_id)
        rng = np.random.default_rng([self.seed, 2, index])
        first = ev.start - _MARGIN
        n_samples = ev.n_samples + 2 * _MARGIN
        t0 = np.array([(first - pos) / self.cfg.fs_hz])
        x = _transmit(
            [dev],
            self.cfg,
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
        body = x[0, _MARGIN : _MARGIN + ev.n_samples]
        power = float(np.mean(np.abs(body) ** 2))
        noise_in_band = self.noise_power * self.cfg.bw_hz / self.cfg.fs_hz
        scale = np.sqrt(10 ** (ev.snr_db / 10) * noise_in_band / power)
        out = (x[0] * scale).astype(np.complex64)
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
        self._plan_until(stop + _MARGIN)
        chunk = self._noise(start, stop)
        for index in range(self._first_active, len(self._planned)):
            ev = self._planned[index][0]
            lo, hi = ev.start - _MARGIN, ev.stop + _MARGIN
            if hi <= start:
                self._cache.pop(index, None)
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
        return start, chunk


def simulate_stream(
    fleet: Sequence[DeviceProfile],
    cfg: LoRaConfig,
    *,
    duration_s: float,
    session: Session | None = None,
    rogues: int = 0,
    snr_db: float | tuple[float, float] = (10.0, 25.0),
    mean_interval_s: float = 0.3,
    seed: int = 0,
    **kwargs: Any,
) -> tuple[npt.NDArray[np.complex64], list[TransmissionEvent]]:
    """``duration_s`` of a :class:`StreamSimulator` stream as one array, with the events that start in it.

    Returns
    -------
    iq : ndarray of complex64, shape (round(duration_s * fs_hz),)
    events : list of TransmissionEvent
        Packets whose first sample lies in ``iq`` (the last may run past its end).
    """
    if not duration_s > 0:
        raise ConfigError(f"duration_s={duration_s!r} is not valid: use > 0")
    sim = StreamSimulator(
        fleet,
        cfg,
        session=session,
        rogues=rogues,
        snr_db=snr_db,
        mean_interval_s=mean_interval_s,
        seed=seed,
        **kwargs,
    )
    _, iq = sim.read(int(round(duration_s * cfg.fs_hz)))
    return iq, sim.events
