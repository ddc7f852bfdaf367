"""Sources (SoapySDR, file/SigMF replay, ZeroMQ, simulator) and sinks (recorder, ZeroMQ, console).

May use :mod:`lorarffi.dsp` and :mod:`lorarffi.datasets`; never :mod:`lorarffi.rffi`.
"""
