"""RF fingerprint identification: models, preprocessing, training, inference, the CFO-gated hybrid classifier,
evaluation, model directories and ONNX export.

Uses :mod:`lorarffi.dsp`, :mod:`lorarffi.datasets` and :mod:`lorarffi.sim`; :mod:`lorarffi.live` and
:mod:`lorarffi.cli` sit on top of it.
"""
