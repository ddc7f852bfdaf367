"""RF fingerprint identification: models, training, hybrid classifier, registry, authentication, CLI.

Sits on top of :mod:`lorarffi.dsp`, :mod:`lorarffi.datasets` and :mod:`lorarffi.capture`.
"""
