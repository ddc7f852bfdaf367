"""Open any source from its spec string: :func:`open_source`.

=====================  ============================================================================
spec                   source
=====================  ============================================================================
``soapy:ARGS``         SoapySDR device (``soapy:driver=uhd,serial=30F1``; ``soapy:driver=replay,file=x``)
``file:PATH``          a recording (raw with ``format`` and ``fs_hz``, SigMF, I/Q WAV); a bare path too
``zmq:ENDPOINT``       GNU Radio ZMQ PUB sink (SUB socket), e.g. ``zmq:tcp://127.0.0.1:5555``
``zmq+pull:ENDPOINT``  GNU Radio ZMQ PUSH sink (PULL socket)
``sim``                the built-in virtual radio (simulated devices)
=====================  ============================================================================
"""

from __future__ import annotations

import os
from typing import Any

from lorarffi.capture.base import Source
from lorarffi.errors import ConfigError

__all__ = ["open_source", "SOURCE_KINDS"]

SOURCE_KINDS = ("soapy", "file", "zmq", "zmq+pull", "sim")

_ACCEPTS: dict[str, set[str]] = {
    "soapy": {
        "fs_hz",
        "center_freq_hz",
        "gain_db",
        "antenna",
        "bandwidth_hz",
        "channel",
        "buffer_s",
        "timeout_s",
        "chunk_samples",
    },
    "file": {"format", "fs_hz", "center_freq_hz", "speed", "loop", "chunk_samples", "buffer_s"},
    "zmq": {"fs_hz", "center_freq_hz", "pass_tags", "bind", "idle_timeout_s", "buffer_s", "chunk_samples"},
    "sim": {
        "cfg",
        "n_devices",
        "n_rogues",
        "tuned_rogues",
        "snr_db",
        "mean_interval_s",
        "duration_s",
        "speed",
        "seed",
        "fleet_seed",
        "spread",
        "center_freq_hz",
        "chunk_samples",
        "buffer_s",
        "session",
        "fs_hz",
    },
}


def _split(spec: str) -> tuple[str, str]:
    s = spec.strip()
    if s == "sim" or s.startswith("sim:"):
        return "sim", s[4:]
    for kind in ("zmq+pull", "zmq", "soapy", "file"):
        if s.startswith(kind + ":"):
            return kind, s[len(kind) + 1 :]
    if s and os.path.exists(s):
        return "file", s
    raise ConfigError(
        f"source {spec!r} is not valid: use soapy:ARGS, file:PATH, zmq:tcp://HOST:PORT, "
        "zmq+pull:tcp://HOST:PORT or sim"
    )


def open_source(spec: str, **options: Any) -> Source:
    """Open the source a spec string names.

    Parameters
    ----------
    spec : str
        ``soapy:ARGS``, ``file:PATH`` (or an existing path), ``zmq:ENDPOINT``, ``zmq+pull:ENDPOINT``, ``sim``.
    **options
        Passed to the source (options that are None are ignored): ``fs_hz``, ``center_freq_hz``, ``gain_db``,
        ``antenna``, ``bandwidth_hz`` (soapy); ``format``, ``speed``, ``loop`` (file); ``pass_tags``,
        ``idle_timeout_s`` (zmq); ``cfg``, ``n_devices``, ``n_rogues``, ``snr_db``, ``speed``, ``duration_s``,
        ``seed`` (sim); ``buffer_s``, ``chunk_samples`` (all).

    Returns
    -------
    Source

    Raises
    ------
    ConfigError
        Unknown kind, or an option that does not apply to it (named).
    """
    kind, rest = _split(spec)
    opts = {k: v for k, v in options.items() if v is not None}
    accepted = _ACCEPTS["zmq" if kind == "zmq+pull" else kind]
    wrong = sorted(set(opts) - accepted)
    if wrong:
        raise ConfigError(f"option(s) {wrong} do not apply to a {kind}: source (it takes {sorted(accepted)})")
    if kind == "soapy":
        from lorarffi.capture.soapy import SoapySource

        return SoapySource(rest, **opts)
    if kind == "file":
        if not rest:
            raise ConfigError("source 'file:' names no file: use file:PATH")
        from lorarffi.capture.file_source import FileSource

        return FileSource(rest, **opts)
    if kind in ("zmq", "zmq+pull"):
        if not rest:
            raise ConfigError(f"source {spec!r} names no endpoint: use {kind}:tcp://HOST:PORT")
        from lorarffi.capture.zmq_source import ZmqSource

        return ZmqSource(rest, pattern="pull" if kind == "zmq+pull" else "sub", **opts)
    from lorarffi.capture.sim_source import SimSource
    from lorarffi.dsp.config import LoRaConfig

    fs_hz = opts.pop("fs_hz", None)
    cfg = opts.pop("cfg", None) or LoRaConfig()
    if fs_hz is not None and fs_hz != cfg.fs_hz:
        cfg = cfg.replace(fs_hz=float(fs_hz))
    if rest:
        for part in rest.split(","):
            key, sep, value = part.partition("=")
            if not sep or key.strip() not in ("devices", "rogues", "seed", "snr_db"):
                raise ConfigError(
                    f"sim option {part!r} is not valid: use sim:devices=N,rogues=M,seed=S,snr_db=X"
                )
            name = {"devices": "n_devices", "rogues": "n_rogues"}.get(key.strip(), key.strip())
            try:
                opts[name] = float(value) if name == "snr_db" else int(value)
            except ValueError:
                raise ConfigError(f"sim option {part!r}: {value!r} is not a number") from None
    return SimSource(cfg, **opts)
