"""``lora-rffi export-onnx MODEL_DIR [-o FILE]``: write the network as ONNX (features -> logits), checked by
onnxruntime before it is written."""

from __future__ import annotations

import argparse

from lorarffi.cli.common import add_json_arg, check_output, positive_int, print_json

__all__ = ["HELP", "DESCRIPTION", "EPILOG", "add_arguments", "run"]

HELP = "export a model directory's network to ONNX"
DESCRIPTION = (
    "Write the neural network of a trained model as an ONNX file, for inference outside Python (features in, "
    "logits out, any batch size). Only the network is exported: turning IQ samples into features, the CFO "
    "gate and the device ids stay in the model's config.json, copied into the ONNX metadata. The file is "
    "loaded and run by onnxruntime before it gets its name, so an export onnxruntime rejects (an opset too "
    "old for the network, say) leaves nothing behind."
)
EPILOG = "example: lora-rffi export-onnx runs/model -o runs/model.onnx"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="model directory written by `lora-rffi train`")
    p.add_argument("-o", "--out", default=None, help="output file (default MODEL_DIR/model.onnx)")
    p.add_argument(
        "--opset", type=positive_int, default=17, help="ONNX opset version the graph uses (default 17)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse)")
    add_json_arg(p)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lorarffi.rffi.onnx_export import ONNX_FILE, export_onnx

    out = Path(args.out) if args.out is not None else Path(args.model_dir) / ONNX_FILE
    if args.out is not None:  # the default file beside the model is the model's own: re-exported freely
        check_output(out, overwrite=args.overwrite, flag="-o/--out")
    path = export_onnx(args.model_dir, out, opset=args.opset)
    if args.json:
        print_json({"type": "summary", "file": str(path), "opset": args.opset})
    else:
        print(path)
    return 0
