"""``lora-rffi export-onnx MODEL_DIR [--out FILE]``: write the network as ONNX (features -> logits)."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export-onnx", help="export a model directory's network to ONNX", description=__doc__.splitlines()[0]
    )
    p.add_argument("model_dir", help="model directory written by `lora-rffi train`")
    p.add_argument("--out", default=None, help="output file (default MODEL_DIR/model.onnx)")
    p.add_argument("--opset", type=int, default=17)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorarffi.rffi.onnx_export import export_onnx

    print(export_onnx(args.model_dir, args.out, opset=args.opset))
    return 0
