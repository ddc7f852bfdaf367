"""Export a model directory's network to ONNX (features in, logits out, any batch size).

The ONNX graph is the network only: input ``features`` float32 of the model's input shape with a dynamic batch
axis (``(N, C, F, T)`` or ``(N, 2, L)``), output ``logits`` ``(N, n_classes)``. The representation, the CFO
gate and the class -> device map stay in ``config.json`` beside it; the export writes them into the ONNX
metadata too.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import warnings

from lorarffi.errors import ModelError
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
    """
    import torch

    model, config = load_model(model_dir, torch_device="cpu")
    model.eval()
    hp = config.model_hparams
    shape = list(hp["input_shape"])
    # Spectrogram models carry in_channels (input (C, F, T)); IQ/FFT models take (2, L) = input_shape.
    sample = [hp["in_channels"], *shape] if "in_channels" in hp else shape
    x = torch.zeros(2, *sample, dtype=torch.float32)
    path = pathlib.Path(out) if out is not None else pathlib.Path(model_dir) / ONNX_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model,
                (x,),
                str(path),
                input_names=["features"],
                output_names=["logits"],
                opset_version=opset,
                dynamic_axes={"features": {0: "batch"}, "logits": {0: "batch"}},
                dynamo=False,
            )
        except Exception as exc:  # the exporter raises many types; all mean the same to the user
            raise ModelError(f"{model_dir}: ONNX export failed: {exc}") from exc
    import onnx

    proto = onnx.load(str(path))
    meta = {"lora_rffi_config": json.dumps(config.to_dict())}
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(path))
    log.info("wrote %s", path)
    return path
