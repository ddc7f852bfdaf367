"""Model directories: ``weights.safetensors``, ``config.json`` (+ ``hybrid_state.json`` once drift is
tracked).

``config.json`` holds everything inference needs, in plain JSON::

    {"format": "lora-rffi-model", "format_version": 1, "software_version": "0.1.0",
     "model": {"name": "infocom_cnn", "hparams": {...}},
     "representation": {"name": "channel_independent_spectrogram", "params": {...}},
     "cfo_compensation": true, "lora": {"sf": 7, ...}, "device_ids": [1, 2, ...],
     "hybrid": {CFO statistics and gate parameters, see CfoGate.to_dict}, "training": {...},
     "data_fingerprint": "sha256:...", "weights_sha256": "..."}

Class ``i`` of the network is device ``device_ids[i]``. Weights are read with safetensors only: nothing is
ever unpickled. ``hybrid_state.json`` (written by drift tracking) overrides the ``hybrid`` entry, so the
training statistics in ``config.json`` stay as trained.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from lorarffi import __version__
from lorarffi.datasets.atomic import atomic_path, write_atomic
from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError, InputDataError, ModelError

__all__ = [
    "canonical_safetensors",
    "check_weights_sha256",
    "ModelDirConfig",
    "save_model_dir",
    "load_model",
    "read_config",
    "save_hybrid_state",
    "fingerprint_arrays",
    "WEIGHTS_FILE",
    "CONFIG_FILE",
    "HYBRID_STATE_FILE",
]

FORMAT = "lora-rffi-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
HYBRID_STATE_FILE = "hybrid_state.json"


@dataclass(frozen=True)
class ModelDirConfig:
    """What a model directory's ``config.json`` says (see the module docstring)."""

    model_name: str
    model_hparams: dict[str, Any]
    representation: dict[str, Any]
    lora: LoRaConfig
    device_ids: tuple[int, ...]
    cfo_compensation: bool = True
    hybrid: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    software_version: str = __version__

    def __post_init__(self) -> None:
        if len(set(self.device_ids)) != len(self.device_ids) or len(self.device_ids) < 2:
            raise ConfigError(f"device_ids={list(self.device_ids)} must hold at least 2 distinct device ids")
        if "name" not in self.representation:
            raise ConfigError(f"representation={self.representation!r} has no 'name'")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "software_version": self.software_version,
            "model": {"name": self.model_name, "hparams": _jsonable(self.model_hparams)},
            "representation": _jsonable(self.representation),
            "cfo_compensation": bool(self.cfo_compensation),
            "lora": self.lora.to_dict(),
            "device_ids": [int(d) for d in self.device_ids],
            "hybrid": self.hybrid,
            "training": _jsonable(self.training),
            "data_fingerprint": self.data_fingerprint,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: object = "config.json") -> ModelDirConfig:
        if d.get("format") != FORMAT:
            raise ModelError(f"{source}: not a lora-rffi model config (format={d.get('format')!r})")
        if d.get("format_version", 0) > FORMAT_VERSION:
            raise ModelError(
                f"{source}: format_version {d['format_version']} is newer than this software reads "
                f"({FORMAT_VERSION}); upgrade lora-rffi"
            )
        try:
            return cls(
                model_name=d["model"]["name"],
                model_hparams=dict(d["model"]["hparams"]),
                representation=dict(d["representation"]),
                lora=LoRaConfig.from_dict(d["lora"]),
                device_ids=tuple(int(x) for x in d["device_ids"]),
                cfo_compensation=bool(d.get("cfo_compensation", True)),
                hybrid=d.get("hybrid"),
                training=dict(d.get("training", {})),
                data_fingerprint=str(d.get("data_fingerprint", "")),
                software_version=str(d.get("software_version", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: model config is incomplete or malformed: {exc!r}") from None


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def _write_json_atomic(path: pathlib.Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def fingerprint_arrays(*arrays: npt.ArrayLike, extra: dict[str, Any] | None = None) -> str:
    """``"sha256:<hex>"`` of the arrays' dtypes, shapes, bytes and ``extra`` (JSON): the data's identity."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a.reshape(-1).view(np.uint8)))
    if extra:
        h.update(json.dumps(_jsonable(extra), sort_keys=True).encode())
    return "sha256:" + h.hexdigest()


def canonical_safetensors(data: bytes) -> bytes:
    """``data`` (a safetensors file) with its JSON header's keys sorted, so that equal weights and metadata
    give equal bytes: the writer lays out the metadata map in an order that changes from call to call, and
    the weights' hash is the model's identity (``weights_sha256``). The header keeps its length (its
    entries are only reordered) and the tensor bytes are untouched."""
    n = int.from_bytes(data[:8], "little")
    text = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    size = n if len(text) <= n else -(-len(text) // 8) * 8  # longer never for a reordering; stay valid
    return size.to_bytes(8, "little") + text.ljust(size, b" ") + data[8 + n :]


def save_model_dir(path: str | os.PathLike, model, config: ModelDirConfig) -> pathlib.Path:
    """Write ``model``'s weights (safetensors) and ``config`` (JSON) into directory ``path`` (created).

    A stale ``hybrid_state.json`` from an earlier model in the same directory is removed.
    """
    from safetensors.torch import save

    out = pathlib.Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    data = canonical_safetensors(save(state, metadata={"format": FORMAT, "model": config.model_name}))
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        tmp.write_bytes(data)
    d = config.to_dict()
    d["weights_sha256"] = hashlib.sha256(data).hexdigest()
    _write_json_atomic(out / CONFIG_FILE, d)
    (out / HYBRID_STATE_FILE).unlink(missing_ok=True)
    return out


def read_config(path: str | os.PathLike) -> ModelDirConfig:
    """Read a model directory's config (with the tracked hybrid state when present)."""
    p = pathlib.Path(path)
    cfg_path = p / CONFIG_FILE
    if not cfg_path.is_file():
        raise ModelError(f"{p}: not a model directory (no {CONFIG_FILE}); train one with `lora-rffi train`")
    try:
        d = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputDataError(cfg_path, f"cannot read model config: {exc}") from None
    config = ModelDirConfig.from_dict(d, cfg_path)
    state_path = p / HYBRID_STATE_FILE
    if state_path.is_file():
        try:
            hybrid = json.loads(state_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputDataError(state_path, f"cannot read hybrid state: {exc}") from None
        config = ModelDirConfig(**{**config.__dict__, "hybrid": hybrid})
    return config


def save_hybrid_state(path: str | os.PathLike, hybrid: dict[str, Any]) -> None:
    """Persist a (drift-tracked) CFO gate state beside the model (``hybrid_state.json``)."""
    p = pathlib.Path(path)
    if not (p / CONFIG_FILE).is_file():
        raise ModelError(f"{p}: not a model directory (no {CONFIG_FILE})")
    _write_json_atomic(p / HYBRID_STATE_FILE, _jsonable(hybrid))


def check_weights_sha256(path: str | os.PathLike, weights: bytes) -> None:
    """Refuse weights whose SHA-256 is not the one the model directory's ``config.json`` records (a model
    saved before the hash was recorded is accepted).

    Raises
    ------
    ModelError
        The weights were changed or damaged after the model was saved.
    """
    p = pathlib.Path(path)
    try:
        stored = json.loads((p / CONFIG_FILE).read_text()).get("weights_sha256")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise InputDataError(p / CONFIG_FILE, f"cannot read model config: {exc}") from None
    if stored and hashlib.sha256(weights).hexdigest() != stored:
        raise ModelError(
            f"{p / WEIGHTS_FILE}: the weights are not the ones {CONFIG_FILE} records (SHA-256 differs): the "
            "file was changed or damaged after training; restore it or train the model again"
        )


def load_model(path: str | os.PathLike, torch_device=None):
    """Load a model directory: ``(model, config)``, the model in eval mode on ``torch_device``.

    Parameters
    ----------
    path : path-like
        Model directory written by :func:`save_model_dir`.
    torch_device : torch.device or str, optional
        Where to put the network; default CUDA when available, else CPU.

    Returns
    -------
    model : torch.nn.Module
    config : ModelDirConfig
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load

    from lorarffi.rffi.models import build_model

    p = pathlib.Path(path)
    config = read_config(p)
    wpath = p / WEIGHTS_FILE
    if not wpath.is_file():
        raise ModelError(f"{p}: no {WEIGHTS_FILE}")
    if torch_device is None:
        torch_device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        data = wpath.read_bytes()
    except OSError as exc:
        raise InputDataError(wpath, f"cannot read weights: {exc.strerror or exc}") from None
    check_weights_sha256(p, data)
    try:
        state = load(data)
    except (SafetensorError, OSError) as exc:
        raise InputDataError(wpath, f"cannot read weights: {exc}") from None
    model = build_model(config.model_name, **config.model_hparams)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{wpath}: weights do not fit model {config.model_name!r}: {exc}") from None
    model.eval()
    return model.to(torch_device), config
