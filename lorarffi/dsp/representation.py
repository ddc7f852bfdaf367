"""Model input representations of packets, by name: IQ, FFT, spectrogram, channel-independent spectrogram.

Shen et al. (INFOCOM 2021, §IV-C, Table II) feed a CNN three representations of the same RMS-normalised
8-up-chirp preamble: the IQ samples, their FFT and a spectrogram; the TIFS 2022 extractor takes the
channel-independent spectrogram. A :class:`RepresentationConfig` names one and its parameters, is saved as
JSON beside a model, and :func:`represent` turns packets into the model's float32 input. Packets come
normalised (:func:`lorarffi.dsp.normalize.rms_normalize`, applied by the detector and the preprocessing):
the representations do not normalise them again.

Adding a representation (CQT, wavelets, ...) is one registered function with keyword-only, defaulted
parameters::

    @register_representation("name", shape=lambda n_samples, *, param: (channels, ...))
    def _name(iq, *, param=default):          # iq: (N, L) complex64 ndarray or tensor
        return ...                            # (N, C, ...) float32, same kind and device as iq

(and, for static type checkers, its name added to :data:`RepresentationName`).
"""

from __future__ import annotations

import inspect
import json
import math
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.fft

from lorarffi.dsp.coherent import coherent_symbol_average
from lorarffi.dsp.spectrogram import (
    as_packets,
    channel_independent_spectrogram,
    crop_rows,
    is_tensor,
    spectrogram,
    stft_frame_count,
)
from lorarffi.errors import ConfigError

__all__ = [
    "RepresentationName",
    "RepresentationConfig",
    "represent",
    "output_shape",
    "register_representation",
    "available_representations",
]

RepresentationName = Literal[
    "iq",
    "fft",
    "spectrogram",
    "channel_independent_spectrogram",
    "folded_channel_independent_spectrogram",
    "coherent_channel_independent_spectrogram",
]


@dataclass(frozen=True, slots=True)
class _Representation:
    fn: Callable[..., Any]
    shape: Callable[..., tuple[int, ...]]
    defaults: Mapping[str, Any]


_REGISTRY: dict[str, _Representation] = {}


def register_representation(name: str, *, shape: Callable[..., tuple[int, ...]]) -> Callable:
    """Register a representation function under ``name`` (a decorator); a name can be registered once.

    Parameters
    ----------
    name : str
        Name used in :class:`RepresentationConfig`.
    shape : callable
        ``shape(n_samples, **params) -> (C, ...)``: the per-packet output shape for packets of ``n_samples``
        samples, computed without computing the representation; receives every parameter (defaults filled in).

    The decorated function takes ``(iq, **params)`` with ``iq`` an ``(N, L)`` complex64 numpy array or torch
    tensor and returns an ``(N, C, ...)`` float32 array or tensor of the same kind on the same device. Its
    parameters must be keyword-only with defaults; they are the names a config's ``params`` may hold.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"representation name {name!r} is not valid: use a non-empty string")

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ConfigError(f"representation {name!r} is already registered: choose another name")
        sig = inspect.signature(fn)
        defaults = {}
        for p in list(sig.parameters.values())[1:]:
            if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.default is inspect.Parameter.empty:
                raise ConfigError(f"representation {name!r}: parameter {p.name!r} must be keyword-only "
                                  "with a default")
            defaults[p.name] = p.default
        _REGISTRY[name] = _Representation(fn, shape, types.MappingProxyType(defaults))
        return fn

    return decorator


def available_representations() -> tuple[str, ...]:
    """Names of the registered representations, in registration order."""
    return tuple(_REGISTRY)


def _frozen_value(value: Any, where: str) -> Any:
    """A JSON-compatible parameter value with sequences as tuples (so configs compare equal after JSON)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise ConfigError(f"{where}={value!r} is not valid: use a finite number")
        return float(value)
    if isinstance(value, (list, tuple)):
        return tuple(_frozen_value(v, where) for v in value)
    raise ConfigError(f"{where}={value!r} is not valid: use numbers, strings, booleans, None or lists")


def _json_value(value: Any) -> Any:
    return [_json_value(v) for v in value] if isinstance(value, tuple) else value


@dataclass(frozen=True, slots=True)
class RepresentationConfig:
    """A model input representation: its registered name and parameters.

    Parameters
    ----------
    name : {"iq", "fft", "spectrogram", "channel_independent_spectrogram"} or another registered name
        ``"iq"``: real and imaginary rows of the packet, ``(2, L)``. ``"fft"``: real and imaginary rows of the
        fftshift-ed FFT of the packet scaled by ``1/sqrt(L)`` (the packet's mean power), ``(2, L)``.
        ``"spectrogram"``: :func:`~lorarffi.dsp.spectrogram.spectrogram`, ``(1, F, M)``.
        ``"channel_independent_spectrogram"``:
        :func:`~lorarffi.dsp.spectrogram.channel_independent_spectrogram`, ``(1, 102, 62)`` for 8192-sample
        packets at the defaults.
    params : dict
        Keyword parameters of the representation (for the spectrograms ``n_fft``, ``hop``, ``crop``,
        ``top_db``); omitted ones take the function's defaults. Stored read-only, sequences as tuples.

    Examples
    --------
    >>> cfg = RepresentationConfig("spectrogram", {"crop": [0.3, 0.7]})
    >>> cfg.to_dict()
    {'name': 'spectrogram', 'params': {'crop': [0.3, 0.7]}}
    >>> RepresentationConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    name: RepresentationName
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in _REGISTRY:
            raise ConfigError(f"representation name={self.name!r} is not valid: use one of "
                              f"{', '.join(_REGISTRY)}")
        if not isinstance(self.params, Mapping):
            raise ConfigError(f"params={self.params!r} is not valid: use a dict of keyword parameters")
        allowed = _REGISTRY[self.name].defaults
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            raise ConfigError(f"params {unknown} are not parameters of representation {self.name!r}: "
                              f"valid are {sorted(allowed) or 'none'}")
        frozen = {k: _frozen_value(v, f"params[{k!r}]") for k, v in self.params.items()}
        object.__setattr__(self, "params", types.MappingProxyType(frozen))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RepresentationConfig):
            return NotImplemented
        return self.name == other.name and dict(self.params) == dict(other.params)

    def __hash__(self) -> int:
        return hash((self.name, json.dumps(self.to_dict()["params"], sort_keys=True)))

    def params_with_defaults(self) -> dict[str, Any]:
        """Every parameter of the representation: the given ones, the function's defaults for the rest."""
        return {**_REGISTRY[self.name].defaults, **self.params}

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible ``{"name": ..., "params": {...}}`` (tuples become lists)."""
        return {"name": self.name, "params": {k: _json_value(v) for k, v in self.params.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RepresentationConfig:
        """Inverse of :meth:`to_dict`; unknown keys are refused."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"representation config {data!r} is not valid: expected a JSON object")
        unknown = sorted(set(data) - {"name", "params"})
        if unknown or "name" not in data:
            raise ConfigError(f"representation config keys {sorted(data)} are not valid: expected 'name' and "
                              "optionally 'params'")
        return cls(name=data["name"], params=data.get("params") or {})


def _resolved(rep_cfg: RepresentationConfig) -> tuple[_Representation, dict[str, Any]]:
    if not isinstance(rep_cfg, RepresentationConfig):
        raise ConfigError(f"rep_cfg={rep_cfg!r} is not valid: expected a RepresentationConfig")
    return _REGISTRY[rep_cfg.name], rep_cfg.params_with_defaults()


def output_shape(rep_cfg: RepresentationConfig, n_samples: int) -> tuple[int, ...]:
    """Per-packet shape ``(C, ...)`` of :func:`represent` for ``n_samples``-sample packets, not computed.

    Examples
    --------
    >>> output_shape(RepresentationConfig("channel_independent_spectrogram"), 8192)
    (1, 102, 62)
    >>> output_shape(RepresentationConfig("iq"), 8192)
    (2, 8192)
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ConfigError(f"n_samples={n_samples!r} is not valid: use a positive number of samples")
    entry, params = _resolved(rep_cfg)
    return tuple(int(d) for d in entry.shape(int(n_samples), **params))


def represent(iq: Any, rep_cfg: RepresentationConfig) -> Any:
    """Packets as the float32 model input named by ``rep_cfg``.

    Parameters
    ----------
    iq : ndarray or torch.Tensor, complex64, shape (N, L) or (L,)
        Packets (aligned preambles scaled to unit RMS, CFO-compensated for most models: ``Packet.preamble``,
        :func:`~lorarffi.rffi.preprocess.preprocess_preambles`); other numeric dtypes are converted. The
        spectrograms do not depend on the scale; ``"iq"`` and ``"fft"`` are linear in the packet.
    rep_cfg : RepresentationConfig
        Which representation, and its parameters.

    Returns
    -------
    x : ndarray or torch.Tensor of float32, shape (N, C, F, T) or (N, C, L); without N for 1-D input
        Same kind and device as ``iq``; per-packet shape :func:`output_shape`.

    Examples
    --------
    >>> iq = np.exp(2j * np.pi * 0.01 * np.arange(8192)).astype(np.complex64)
    >>> represent(iq[None], RepresentationConfig("iq")).shape
    (1, 2, 8192)
    >>> represent(iq, RepresentationConfig("channel_independent_spectrogram")).shape
    (1, 102, 62)
    """
    entry, params = _resolved(rep_cfg)
    x, squeeze = as_packets(iq)
    out = entry.fn(x, **params)
    return out[0] if squeeze else out


def _real_imag_rows(z: Any) -> Any:
    if is_tensor(z):
        import torch

        return torch.stack((z.real, z.imag), dim=1).contiguous()
    return np.stack((z.real, z.imag), axis=1).astype(np.float32, copy=False)


def _two_rows(n_samples: int) -> tuple[int, ...]:
    return (2, n_samples)


@register_representation("iq", shape=_two_rows)
def _iq(iq: Any) -> Any:
    """Real and imaginary parts of the packet as two rows: (N, 2, L) float32."""
    return _real_imag_rows(iq)


@register_representation("fft", shape=_two_rows)
def _fft(iq: Any) -> Any:
    """Real, imaginary rows of ``fftshift(fft(x)) / sqrt(L)``, lowest frequency first: (N, 2, L)."""
    z = iq
    scale = 1.0 / math.sqrt(z.shape[-1])
    if is_tensor(z):
        import torch

        spec = torch.fft.fftshift(torch.fft.fft(z, dim=-1), dim=-1) * scale
    else:
        spec = np.fft.fftshift(scipy.fft.fft(z, axis=-1), axes=-1) * np.float32(scale)
    return _real_imag_rows(spec)


def _spectrogram_shape(n_samples: int, *, n_fft: int, hop: int, crop: Any, top_db: float) -> tuple[int, ...]:
    first, stop = crop_rows(n_fft, crop)
    n_frames = stft_frame_count(n_samples, n_fft=n_fft, hop=hop)
    if n_frames < 1:
        raise ConfigError(f"n_samples={n_samples} is shorter than one frame of n_fft={n_fft}")
    return (1, stop - first, n_frames)


def _channel_independent_shape(n_samples: int, *, n_fft: int, hop: int, crop: Any,
                               top_db: float) -> tuple[int, ...]:
    first, stop = crop_rows(n_fft, crop)
    n_frames = stft_frame_count(n_samples, n_fft=n_fft, hop=hop)
    if n_frames < 2:
        raise ConfigError(f"n_samples={n_samples} is shorter than two frames (n_fft={n_fft}, hop={hop})")
    return (1, stop - first, n_frames - 1)


@register_representation("spectrogram", shape=_spectrogram_shape)
def _spectrogram(iq: Any, *, n_fft: int = 256, hop: int = 128, crop: Any = None,
                 top_db: float = 120.0) -> Any:
    """:func:`~lorarffi.dsp.spectrogram.spectrogram` with a channel axis: (N, 1, F, M)."""
    return spectrogram(iq, n_fft=n_fft, hop=hop, crop=crop, top_db=top_db)[:, None]


@register_representation("channel_independent_spectrogram", shape=_channel_independent_shape)
def _channel_independent_spectrogram(iq: Any, *, n_fft: int = 256, hop: int = 128, crop: Any = (0.3, 0.7),
                                     top_db: float = 120.0) -> Any:
    """:func:`~lorarffi.dsp.spectrogram.channel_independent_spectrogram` with a channel axis: (N, 1, F, T)."""
    return channel_independent_spectrogram(iq, n_fft=n_fft, hop=hop, crop=crop, top_db=top_db)[:, None]



def _folded_shape(n_samples: int, *, n_fft: int, hop: int, crop: Any, top_db: float,
                  period_frames: int) -> tuple[int, ...]:
    n_frames = _spectrogram_shape(n_samples, n_fft=n_fft, hop=hop, crop=crop, top_db=top_db)[2]
    if period_frames < 2 or n_frames < period_frames:
        raise ConfigError(
            f"period_frames={period_frames} is not valid for {n_frames} frames: use 2..{n_frames}"
        )
    first, stop = crop_rows(n_fft, crop)
    return (1, stop - first, period_frames)


@register_representation("folded_channel_independent_spectrogram", shape=_folded_shape)
def _folded_channel_independent_spectrogram(iq: Any, *, n_fft: int = 256, hop: int = 128,
                                            crop: Any = (0.3, 0.7), top_db: float = 120.0,
                                            period_frames: int = 8) -> Any:
    """The channel-independent spectrogram of the preamble folded over its symbol period: (N, 1, F, P).

    STFT frames ``m`` and ``m + P`` (``P = period_frames`` hops = one symbol: 8 x 128 = 1024 samples at SF7,
    125 kHz, 1 MS/s) lie at the same place in two identical up-chirps. Their powers are averaged over the
    ``K = floor(M / P)`` whole periods (7 of the 63 frames at the defaults; frames after the last whole
    period are left out), which keeps what every chirp repeats and divides the variance of the noise's power
    by ``K``; then the log10 power ratio of adjacent frames is taken within the period, cyclically
    (``log10(P[(j + 1) mod P] / P[j])``, as the next chirp starts where this one ends). A channel constant
    over the preamble cancels, as in the unfolded one.
    """
    log_power = spectrogram(iq, n_fft=n_fft, hop=hop, crop=crop, top_db=top_db)
    k = log_power.shape[-1] // period_frames
    whole = log_power[..., : k * period_frames]
    power = (10.0 ** whole).reshape(*log_power.shape[:-1], k, period_frames).mean(-2)
    if is_tensor(power):
        import torch

        ratio = torch.log10(torch.roll(power, -1, dims=-1) / power)
    else:
        ratio = np.log10(np.roll(power, -1, axis=-1) / power)
    return ratio[:, None]


def _coherent_shape(n_samples: int, *, n_fft: int, hop: int, crop: Any, top_db: float, period_frames: int,
                   flat_floor_db: float | None) -> tuple[int, ...]:
    return _folded_shape(n_samples, n_fft=n_fft, hop=hop, crop=crop, top_db=top_db,
                         period_frames=period_frames)


@register_representation("coherent_channel_independent_spectrogram", shape=_coherent_shape)
def _coherent_channel_independent_spectrogram(iq: Any, *, n_fft: int = 256, hop: int = 128,
                                              crop: Any = (0.3, 0.7), top_db: float = 120.0,
                                              period_frames: int = 8,
                                              flat_floor_db: float | None = None) -> Any:
    """The channel-independent spectrogram of the preamble's coherently averaged symbol: (N, 1, F, P).

    The ``K`` whole symbols of ``P = period_frames`` hops each (1024 samples at SF7, 125 kHz, 1 MS/s and
    the default 128-sample hop) are rotated onto one phase and averaged sample by sample
    (:func:`~lorarffi.dsp.coherent.coherent_symbol_average`): what every chirp repeats stays and the noise's
    power drops by ``K`` (9 dB for 8 up-chirps). The average is one period of a periodic signal, so its STFT
    wraps around: ``P`` frames starting at ``0, hop, ..., (P - 1) hop`` of the average followed by its own
    first ``n_fft - hop`` samples. Then the log10 power ratio of adjacent frames, cyclically
    (``log10(P[(j + 1) mod P] / P[j])``); a channel constant over the preamble cancels.

    ``flat_floor_db`` (None: none) raises every bin's power to at least the level of a flat spectrum,
    ``10 ** (flat_floor_db / 10) / n_fft``: the average is normalised to unit RMS, so each STFT frame holds
    unit power, and ``1 / n_fft`` is what a bin gets when that power is spread evenly (the mean bin of white
    noise; about 18 dB below the chirp's peak at SF7, 125 kHz, 1 MS/s). Unlike ``top_db``, which follows the
    peak, this level rises towards the chirp as noise fills the average, so the bins a noisy packet cannot
    resolve read the same flat value as in a clean one.
    """
    if flat_floor_db is not None and not math.isfinite(flat_floor_db):
        raise ConfigError(f"flat_floor_db={flat_floor_db!r} is not valid: use a finite number of dB or None")
    period = period_frames * hop
    if n_fft - hop > period:
        raise ConfigError(f"n_fft={n_fft} is longer than a symbol ({period} samples) plus a hop: use a "
                          "shorter frame or a longer period")
    avg = coherent_symbol_average(iq, period)
    if is_tensor(avg):
        import torch

        periodic = torch.cat([avg, avg[:, : n_fft - hop]], dim=1)
    else:
        periodic = np.concatenate([avg, avg[:, : n_fft - hop]], axis=1)
    log_power = spectrogram(periodic, n_fft=n_fft, hop=hop, crop=crop, top_db=top_db)
    if flat_floor_db is not None:
        level = float(flat_floor_db) / 10.0 - math.log10(n_fft)
        if is_tensor(log_power):
            log_power = log_power.clamp(min=level)
        else:
            log_power = np.maximum(log_power, np.float32(level))
    if is_tensor(log_power):
        import torch

        ratio = torch.roll(log_power, -1, dims=-1) - log_power
    else:
        ratio = np.roll(log_power, -1, axis=-1) - log_power
    return ratio[:, None]
