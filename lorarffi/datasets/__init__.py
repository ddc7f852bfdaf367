"""Datasets: the public LoRa_RFFI HDF5 layout, our own HDF5 schema, SigMF recordings, the device simulator.

May use :mod:`lorarffi.dsp`; never :mod:`lorarffi.capture` or :mod:`lorarffi.rffi`.
"""
