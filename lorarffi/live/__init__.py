"""The live pipeline: source -> detector -> decision stage -> sinks, typed decision records, console, summary.

May use :mod:`lorarffi.rffi`, :mod:`lorarffi.capture` and everything below them; never :mod:`lorarffi.cli`.
"""
