"""LoRa physical-layer parameters of a capture: :class:`LoRaConfig`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from lorarffi.errors import ConfigError

__all__ = ["LoRaConfig", "VALID_BW_HZ", "SYNC_WORD_PRIVATE", "SYNC_WORD_LORAWAN"]

VALID_BW_HZ: tuple[float, ...] = (125e3, 250e3, 500e3)
SYNC_WORD_PRIVATE = 0x12
SYNC_WORD_LORAWAN = 0x34


@dataclass(frozen=True, slots=True)
class LoRaConfig:
    """Spreading factor, bandwidth, sample rate and preamble length of a LoRa capture.

    Parameters
    ----------
    sf : int
        Spreading factor, 7 to 12: a symbol carries ``sf`` bits and lasts ``2**sf`` chips.
    bw_hz : float
        Occupied bandwidth in Hz: 125e3, 250e3 or 500e3.
    fs_hz : float
        Receiver sample rate in Hz, at least ``bw_hz``. Need not be an integer multiple of ``bw_hz``
        (the detector resamples such input, see :meth:`integer_oversampling`).
    preamble_symbols : int
        Number of preamble up-chirps in the fingerprint window (the ones just before the sync word).
    sync_word : int
        Expected sync word, 0 to 255 (0x12 private networks, 0x34 LoRaWAN). Detection reports the one seen.

    Examples
    --------
    >>> cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    >>> cfg.samples_per_symbol, cfg.preamble_samples
    (1024, 8192)
    """

    sf: int = 7
    bw_hz: float = 125e3
    fs_hz: float = 1e6
    preamble_symbols: int = 8
    sync_word: int = SYNC_WORD_PRIVATE

    def __post_init__(self) -> None:
        if isinstance(self.sf, bool) or not isinstance(self.sf, int) or not 7 <= self.sf <= 12:
            raise ConfigError(f"sf={self.sf!r} is not valid: the spreading factor is an integer from 7 to 12")
        if float(self.bw_hz) not in VALID_BW_HZ:
            raise ConfigError(f"bw_hz={self.bw_hz:g} is not valid: use 125e3, 250e3 or 500e3")
        if not math.isfinite(self.fs_hz) or self.fs_hz < self.bw_hz:
            raise ConfigError(
                f"fs_hz={self.fs_hz:g} is below bw_hz={self.bw_hz:g}: sample at least at the bandwidth"
            )
        if not isinstance(self.preamble_symbols, int) or not 1 <= self.preamble_symbols <= 65535:
            raise ConfigError(f"preamble_symbols={self.preamble_symbols!r} is not valid: use 1 to 65535")
        if not isinstance(self.sync_word, int) or not 0 <= self.sync_word <= 0xFF:
            raise ConfigError(f"sync_word={self.sync_word!r} is not valid: use 0x00 to 0xFF")
        object.__setattr__(self, "bw_hz", float(self.bw_hz))
        object.__setattr__(self, "fs_hz", float(self.fs_hz))

    # -- derived quantities -------------------------------------------------------------------------------
    @property
    def n_chips(self) -> int:
        """Chips per symbol, ``2**sf``."""
        return 1 << self.sf

    @property
    def symbol_duration_s(self) -> float:
        """Symbol duration ``2**sf / bw_hz`` in seconds."""
        return self.n_chips / self.bw_hz

    @property
    def oversampling(self) -> float:
        """Samples per chip, ``fs_hz / bw_hz`` (not necessarily an integer)."""
        return self.fs_hz / self.bw_hz

    @property
    def is_integer_oversampling(self) -> bool:
        """True when ``fs_hz`` is an integer multiple of ``bw_hz``."""
        return abs(self.oversampling - round(self.oversampling)) < 1e-9

    @property
    def samples_per_symbol(self) -> int:
        """Samples per symbol at ``fs_hz``, ``2**sf * fs_hz / bw_hz`` rounded to the nearest integer."""
        return int(round(self.n_chips * self.oversampling))

    @property
    def preamble_samples(self) -> int:
        """Length of the fingerprint window: ``preamble_symbols * samples_per_symbol``."""
        return self.preamble_symbols * self.samples_per_symbol

    @property
    def fine_cfo_range_hz(self) -> float:
        """Unambiguous range of the fine CFO estimate, ``bw_hz / 2**(sf+1)`` (Shen et al. 2021, eq. 15)."""
        return self.bw_hz / (2 * self.n_chips)

    def integer_oversampling(self) -> LoRaConfig:
        """The same configuration at the nearest integer oversampling not above the current one (min 1).

        A detector fed at a rate that is not a multiple of the bandwidth resamples to this rate first
        (e.g. 2.4 MS/s with a 500 kHz signal becomes 2 MS/s, oversampling 4).
        """
        if self.is_integer_oversampling:
            return self
        osr = max(1, math.floor(self.oversampling + 1e-9))
        return dataclasses.replace(self, fs_hz=osr * self.bw_hz)

    def replace(self, **changes: Any) -> LoRaConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # -- JSON round trip -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-typed fields for JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoRaConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown LoRaConfig field(s) {sorted(unknown)}; valid are {sorted(names)}")
        return cls(**d)
