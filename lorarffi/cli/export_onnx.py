"""``lora-rffi export-onnx MODEL_DIR [--out FILE]``: write the network as ONNX (features -> logits)."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = "export a model directory's network to ONNX"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="model directory written by `lora-rffi train`")
    p.add_argument("--out", default=None, help="output file (default MODEL_DIR/model.onnx)")
    p.add_argument("--opset", type=int, default=17)


def run(args: argparse.Namespace) -> int:
    from lorarffi.rffi.onnx_export import export_onnx

    print(export_onnx(args.model_dir, args.out, opset=args.opset))
    return 0
