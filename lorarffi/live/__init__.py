"""The live runtime: source -> detector -> decision stage -> sinks, one typed decision per packet.

:mod:`~lorarffi.live.decision` (the record), :mod:`~lorarffi.live.stages` (detection only, classifier),
:mod:`~lorarffi.live.pipeline` (the loop), :mod:`~lorarffi.live.summary` (counts, latency, run summary),
:mod:`~lorarffi.live.sinks` (SigMF, preambles, ZeroMQ, JSONL), :mod:`~lorarffi.live.mqtt_sink` (MQTT),
:mod:`~lorarffi.live.console` (console views), :mod:`~lorarffi.live.stopping` (duration limit, Ctrl-C /
SIGTERM).

May use :mod:`lorarffi.rffi`, :mod:`lorarffi.capture` and everything below them; never :mod:`lorarffi.cli`.
"""
