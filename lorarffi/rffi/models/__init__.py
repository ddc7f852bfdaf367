"""Neural network models, one file per family, registered by name.

>>> from lorarffi.rffi.models import build_model, list_models
>>> "infocom_cnn" in list_models()
True
>>> model = build_model("infocom_cnn", n_classes=20, input_shape=(102, 62))

Each builder takes architecture hyper-parameters only (``n_classes``, ``in_channels``, ``input_shape``,
widths) and returns an ``nn.Module`` whose ``forward`` maps a float32 batch ``(N, C, F, T)`` (or ``(N, C, L)``
for IQ/FFT input) to logits ``(N, n_classes)``. The backbones also give ``trunk(x)`` (the features their
dense layers take, ``(N, trunk_dim)``) and ``penultimate(x)`` (the last layer's input,
``(N, penultimate_dim)``: what enrollment embeds a softmax-trained model's packets with); ``embedding_net``
puts an embedding head on any of them (:mod:`lorarffi.rffi.models.embedding`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lorarffi.errors import ConfigError

__all__ = ["register_model", "build_model", "effective_hparams", "list_models", "channels_last_batch"]

_REGISTRY: dict[str, Callable[..., Any]] = {}
_DEFAULTS: dict[str, dict[str, Any]] = {}


def register_model(
    name: str, *, defaults: dict[str, Any] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a model builder under ``name``; a second builder of that name is refused.
    ``defaults``: hyper-parameters the name stands for unless given (training stores them in the model
    directory, so a saved model keeps its architecture if the defaults change later)."""

    def deco(builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ConfigError(
                f"model name {name!r} is already registered (by {_REGISTRY[name].__qualname__})"
            )
        _REGISTRY[name] = builder
        _DEFAULTS[name] = dict(defaults or {})
        return builder

    return deco


def effective_hparams(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """``hparams`` with the registered defaults of ``name`` filled in (and of its ``backbone``, for a model
    built on one)."""
    out = {**_DEFAULTS.get(name, {}), **hparams}
    backbone = out.get("backbone")
    if isinstance(backbone, str):
        out = {**_DEFAULTS.get(backbone, {}), **out}
    return out


def build_model(name: str, **hparams: Any):
    """Build the registered model ``name`` with architecture hyper-parameters ``hparams`` (its registered
    defaults filled in)."""
    if name not in _REGISTRY:
        raise ConfigError(f"model={name!r} is not registered; valid are {list_models()}")
    hparams = effective_hparams(name, hparams)
    try:
        return _REGISTRY[name](**hparams)
    except TypeError as exc:
        raise ConfigError(f"model={name!r}: bad hyper-parameters {sorted(hparams)}: {exc}") from None


def channels_last_batch(x):
    """An image batch (N, C, H, W) in channels-last layout, the layout training and inference keep the
    convolution weights in (oneDNN's fast path); other batches (IQ rows (N, 2, L)) pass unchanged."""
    import torch

    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_REGISTRY)


# Families register themselves on import (kept at the end: they need register_model).
from lorarffi.rffi.models import embedding, ensemble, infocom_cnn, rffi_net, tifs_resnet  # noqa: E402, F401
