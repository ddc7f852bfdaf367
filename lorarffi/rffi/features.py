"""Model input from preprocessed preambles: the configured representation as a float32 torch batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.representation import RepresentationConfig, represent
from lorarffi.errors import ConfigError

__all__ = ["rep_config", "compute_features", "shape_hparams"]


def rep_config(rep: dict[str, Any] | RepresentationConfig) -> RepresentationConfig:
    """A :class:`RepresentationConfig` from itself or its JSON dict."""
    if isinstance(rep, RepresentationConfig):
        return rep
    return RepresentationConfig.from_dict(dict(rep))


def compute_features(
    iq: npt.NDArray[np.complex64], rep: dict[str, Any] | RepresentationConfig
) -> npt.NDArray[np.float32]:
    """(N, L) complex64 preprocessed preambles -> float32 (N, C, F, T) or (N, 2, L), finite."""
    feats = np.asarray(represent(np.asarray(iq, dtype=np.complex64), rep_config(rep)), dtype=np.float32)
    if not np.all(np.isfinite(feats)):
        # The column ratio of the channel-independent spectrogram can divide by an exact zero.
        feats = np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0)
    return feats


def shape_hparams(sample_shape: tuple[int, ...]) -> dict[str, Any]:
    """Architecture hyper-parameters (``in_channels``, ``input_shape``) fitting one sample's feature shape."""
    if len(sample_shape) == 3:
        return {
            "in_channels": int(sample_shape[0]),
            "input_shape": [int(sample_shape[1]), int(sample_shape[2])],
        }
    if len(sample_shape) == 2:
        return {"input_shape": [int(sample_shape[0]), int(sample_shape[1])]}
    raise ConfigError(f"feature shape {sample_shape} is neither (C, F, T) nor (2, L)")
