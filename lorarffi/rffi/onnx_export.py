"""Export a model directory's network to ONNX (features in, logits out, any batch size), checked by
onnxruntime before it is written.

The ONNX graph is the network only: input ``features`` float32 of the model's input shape with a dynamic batch
axis (``(N, C, F, T)`` or ``(N, 2, L)``), output ``logits`` ``(N, n_classes)``. The representation, the CFO
gate and the class -> device map stay in ``config.json`` beside it; the export writes them into the ONNX
metadata too. The file is written under a temporary name, loaded and run by onnxruntime, and only then
renamed to its name: a graph onnxruntime rejects (e.g. an opset too old for the network) is never left behind.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import warnings

from lorarffi.datasets.atomic import atomic_path
from lorarffi.errors import ConfigError, ModelError
from lorarffi.rffi.checkpoint import load_model

__all__ = ["export_onnx", "ONNX_FILE"]

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"


def export_onnx(
    model_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, opset: int = 17
) -> pathlib.Path:
    """Write ``model_dir``'s network as ONNX (default ``MODEL_DIR/model.onnx``); returns the path.

    Parameters
    ----------
    model_dir : path-like
        A model directory.
    out : path-like, optional
        Output file.
    opset : int
        ONNX opset version.

    Raises
    ------
    ModelError
        The exporter fails, or onnxruntime does not load or run the graph it made.
    """
    import torch

    if opset < 1:
        raise ConfigError(f"opset={opset} is not valid: use an ONNX opset version such as 17")

    model, config = load_model(model_dir, torch_device="cpu")
    model.eval()
    hp = config.model_hparams.get("member_hparams", config.model_hparams)  # an ensemble's input: a member's
    shape = list(hp["input_shape"])
    # Spectrogram models carry in_channels (input (C, F, T)); IQ/FFT models take (2, L) = input_shape.
    sample = [hp["in_channels"], *shape] if "in_channels" in hp else shape
    x = torch.zeros(2, *sample, dtype=torch.float32)
    with torch.no_grad():
        shape = tuple(model(x).shape)
    path = pathlib.Path(out) if out is not None else pathlib.Path(model_dir) / ONNX_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(
                    model,
                    (x,),
                    str(tmp),
                    input_names=["features"],
                    output_names=["logits"],
                    opset_version=opset,
                    dynamic_axes={"features": {0: "batch"}, "logits": {0: "batch"}},
                    dynamo=False,
                )
            except Exception as exc:  # the exporter raises many types; all mean the same to the user
                raise ModelError(f"{model_dir}: ONNX export at opset {opset} failed: {exc}") from None
        import onnx

        proto = onnx.load(str(tmp))
        meta = {"lora_rffi_config": json.dumps(config.to_dict())}
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(proto, str(tmp))
        _check_runs(tmp, x.numpy(), shape, f"{model_dir}: the ONNX graph at opset {opset}")
    log.info("wrote %s", path)
    return path


def _check_runs(path: pathlib.Path, features, shape: tuple[int, ...], what: str) -> None:
    """Load ``path`` in onnxruntime and run it on ``features``: outputs of ``shape``, else ModelError."""
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(
            f"{what} cannot be checked: onnxruntime is not installed (pip install 'lora-rffi[onnx]')"
        ) from None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (logits,) = session.run(["logits"], {"features": features})
    except Exception as exc:  # onnxruntime raises its own types for load and run failures
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{what} does not run in onnxruntime ({first}); nothing written: use a recent opset, e.g. 17"
        ) from None
    if tuple(logits.shape) != tuple(shape):
        raise ModelError(f"{what} gives outputs of shape {tuple(logits.shape)}, the network {tuple(shape)}")
