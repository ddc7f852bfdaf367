"""``soapy:ARGS``: a SoapySDR receiver (``driver=uhd,serial=...``, ``driver=replay,file=...``).

The device is configured (sample rate, centre frequency, gain or AGC, antenna, bandwidth) and read in a
dedicated thread: ``CF32`` into ``np.complex64`` buffers of the stream MTU (the bindings pass raw pointers and
check nothing, so the dtype matters), handed to the consumer through a ring buffer sized in seconds. The ring
blocks the reader when full, so a consumer that falls behind makes the *device* overflow, which it reports.

Read results (SoapySDR ``Errors.h``): a count is samples; ``SOAPY_SDR_TIMEOUT`` is counted and retried;
``SOAPY_SDR_OVERFLOW`` means samples were lost before this read: counted, and when the device timestamps its
reads (``SOAPY_SDR_HAS_TIME``) the next read's ``timeNs`` places its samples at their true index, so the gap
is exact; without timestamps the gap size is unknown (counted as ``n_untimed_overflows``, indices run on).
Any other negative code is fatal (:class:`~lorarffi.errors.CaptureError` with ``SoapySDR.errToStr``).
``SOAPY_SDR_END_BURST`` ends the stream (the ``replay`` module sets it at end of file). The stream is
deactivated and closed, and the device released, in a ``finally`` on the reader thread, so Ctrl-C or SIGTERM
(which call :meth:`~lorarffi.capture.base.Source.stop` or close the source) stop cleanly.

The project's SoapySDR module ``replay`` (native/) is found without configuration: before importing SoapySDR,
the repository's ``native/build`` is prepended to ``SOAPY_SDR_PLUGIN_PATH`` when it exists.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
import time
from typing import Any

import numpy as np

from lorarffi.capture.base import ThreadedSource
from lorarffi.errors import CaptureError, ConfigError

__all__ = ["SoapySource", "import_soapysdr", "parse_soapy_args", "native_module_dir"]

log = logging.getLogger(__name__)

# SoapySDR constants (Errors.h, Constants.h), used without importing the bindings.
_TIMEOUT, _OVERFLOW = -1, -4
_RX = 1
_END_BURST, _HAS_TIME = 1 << 1, 1 << 2


def native_module_dir() -> pathlib.Path:
    """Where ``make`` builds the ``replay`` module: ``<repository>/native/build``."""
    return pathlib.Path(__file__).resolve().parents[2] / "native" / "build"


def import_soapysdr() -> Any:
    """Import Debian's SoapySDR bindings, with the repository's module directory on the plugin path.

    Raises
    ------
    CaptureError
        The bindings are not installed (or fail their ABI check), with what to do about it.
    """
    build = native_module_dir()
    if build.is_dir():
        current = os.environ.get("SOAPY_SDR_PLUGIN_PATH", "")
        if str(build) not in current.split(os.pathsep):
            os.environ["SOAPY_SDR_PLUGIN_PATH"] = str(build) + (os.pathsep + current if current else "")
    try:
        import SoapySDR  # noqa: N813 - the module's own name
    except ImportError as exc:
        raise CaptureError(
            f"the SoapySDR Python bindings are not importable ({exc}): install Debian's python3-soapysdr "
            "(make install does, and links them into .venv with tools/link_soapysdr.py)"
        ) from None
    except Exception as exc:  # the bindings raise a bare Exception on an ABI mismatch
        raise CaptureError(f"the SoapySDR Python bindings failed to load: {exc}") from None
    return SoapySDR


def parse_soapy_args(text: str) -> dict[str, str]:
    """``"driver=uhd, serial=30F1"`` -> ``{"driver": "uhd", "serial": "30F1"}`` (SoapySDR markup).

    Raises
    ------
    ConfigError
        A part is not ``key=value``.
    """
    out: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ConfigError(
                f"SoapySDR args {text!r}: {part!r} is not key=value (e.g. driver=uhd,serial=30F1)"
            )
        key, value = part.split("=", 1)
        out[key.strip()] = value.strip()
    return out


class SoapySource(ThreadedSource):
    """Samples from a SoapySDR device, read in a dedicated thread.

    Parameters
    ----------
    args : str or dict
        Device arguments (``"driver=uhd,serial=..."``).
    fs_hz : float, optional
        Sample rate to set in Hz (default: the device's current rate).
    center_freq_hz : float, optional
        Centre frequency to tune in Hz.
    gain_db : float or "agc", optional
        Overall gain in dB, or ``"agc"`` for automatic gain control.
    antenna : str, optional
    bandwidth_hz : float, optional
        Analog filter bandwidth in Hz.
    channel : int
        Receive channel.
    buffer_s : float
        Ring buffer between the reader thread and the consumer, in seconds of signal.
    timeout_s : float, optional
        Per-read timeout (default ``0.1 s + MTU / fs``).
    """

    def __init__(
        self,
        args: str | dict[str, str],
        *,
        fs_hz: float | None = None,
        center_freq_hz: float | None = None,
        gain_db: float | str | None = None,
        antenna: str | None = None,
        bandwidth_hz: float | None = None,
        channel: int = 0,
        buffer_s: float = 2.0,
        timeout_s: float | None = None,
        chunk_samples: int = 1 << 16,
    ) -> None:
        soapy = import_soapysdr()
        kwargs = parse_soapy_args(args) if isinstance(args, str) else dict(args)
        label = ",".join(f"{k}={v}" for k, v in kwargs.items())
        try:
            device = soapy.Device(kwargs)
        except (RuntimeError, ValueError) as exc:
            raise CaptureError(f"soapy:{label}: cannot open the device: {exc}") from None
        try:
            self._configure(soapy, device, channel, fs_hz, center_freq_hz, gain_db, antenna, bandwidth_hz)
            rate = float(device.getSampleRate(_RX, channel))
            freq = float(device.getFrequency(_RX, channel))
            if not rate > 0:
                raise CaptureError(f"soapy:{label}: the device reports sample rate {rate}; set one (-s)")
        except BaseException:
            device.close()
            raise
        super().__init__(
            fs_hz=rate, center_freq_hz=freq, buffer_s=buffer_s, overflow="block", chunk_samples=chunk_samples
        )
        self.name = f"soapy:{label}"
        self.args = kwargs
        self.channel = int(channel)
        self.gain_db = gain_db
        self.antenna = antenna
        self._soapy = soapy
        self._device = device
        self._timeout_s = timeout_s
        self.hardware_key = str(device.getHardwareKey())

    def _configure(
        self,
        soapy: Any,
        dev: Any,
        ch: int,
        fs_hz: float | None,
        center_freq_hz: float | None,
        gain_db: float | str | None,
        antenna: str | None,
        bandwidth_hz: float | None,
    ) -> None:
        steps: list[tuple[str, Any]] = []
        if fs_hz is not None:
            steps.append((f"sample rate {fs_hz:g} Hz", lambda: dev.setSampleRate(_RX, ch, float(fs_hz))))
        if center_freq_hz is not None:
            steps.append(
                (f"frequency {center_freq_hz:g} Hz", lambda: dev.setFrequency(_RX, ch, float(center_freq_hz)))
            )
        if isinstance(gain_db, str) and gain_db.lower() == "agc":
            steps.append(("automatic gain", lambda: dev.setGainMode(_RX, ch, True)))
        elif gain_db is not None:

            def set_gain() -> None:
                if dev.hasGainMode(_RX, ch):
                    dev.setGainMode(_RX, ch, False)
                dev.setGain(_RX, ch, float(gain_db))

            steps.append((f"gain {gain_db} dB", set_gain))
        if antenna is not None:
            steps.append((f"antenna {antenna!r}", lambda: dev.setAntenna(_RX, ch, antenna)))
        if bandwidth_hz is not None:
            steps.append(
                (f"bandwidth {bandwidth_hz:g} Hz", lambda: dev.setBandwidth(_RX, ch, float(bandwidth_hz)))
            )
        for what, step in steps:
            try:
                step()
            except (RuntimeError, ValueError, TypeError) as exc:
                raise CaptureError(f"soapy: setting {what} failed: {exc}") from None
        if fs_hz is not None:
            got = float(dev.getSampleRate(_RX, ch))
            if not math.isclose(got, fs_hz, rel_tol=1e-6):
                raise CaptureError(
                    f"soapy: asked for sample rate {fs_hz:g} Hz, the device runs at {got:g} Hz"
                )

    def _produce(self) -> None:
        soapy, dev = self._soapy, self._device
        stream = None
        try:
            try:
                stream = dev.setupStream(_RX, soapy.SOAPY_SDR_CF32, [self.channel])
            except (RuntimeError, ValueError) as exc:
                raise CaptureError(f"{self.name}: setupStream(CF32) failed: {exc}") from None
            mtu = int(dev.getStreamMTU(stream))
            timeout_us = int(1e6 * (self._timeout_s if self._timeout_s else 0.1 + mtu / self.fs_hz))
            rc = dev.activateStream(stream)
            if rc != 0:
                raise CaptureError(f"{self.name}: activateStream failed: {soapy.errToStr(rc)}")
            self._read_loop(dev, stream, mtu, timeout_us)
        finally:
            if stream is not None:
                try:
                    dev.deactivateStream(stream)
                finally:
                    dev.closeStream(stream)
            dev.close()

    def _read_loop(self, dev: Any, stream: Any, mtu: int, timeout_us: int) -> None:
        state = {"pending_overflows": 0}  # overflows not yet placed by a timestamp
        try:
            self._read_until_end(dev, stream, mtu, timeout_us, state)
        finally:
            if state["pending_overflows"]:  # lost at the very end: no later timestamp can size them
                with self._lock:
                    self.n_untimed_overflows += state["pending_overflows"]

    def _read_until_end(
        self, dev: Any, stream: Any, mtu: int, timeout_us: int, state: dict[str, int]
    ) -> None:
        index = 0  # stream index of the next sample
        t0_ns: int | None = None  # device time of index 0
        buf = np.zeros(mtu, dtype=np.complex64)  # CF32 needs complex64: the bindings check nothing
        while not self.stopping:
            sr = dev.readStream(stream, [buf], mtu, timeoutUs=timeout_us)
            arrival = time.monotonic()
            ret, flags = int(sr.ret), int(sr.flags)
            if ret == _TIMEOUT:
                with self._lock:
                    self.n_timeouts += 1
                continue
            if ret == _OVERFLOW:
                with self._lock:
                    self.n_overflows += 1
                state["pending_overflows"] += 1
                if flags & _END_BURST:
                    return
                continue
            if ret < 0:
                raise CaptureError(f"{self.name}: readStream failed: {self._soapy.errToStr(ret)} ({ret})")
            if ret > 0:
                if flags & _HAS_TIME:
                    time_ns = int(sr.timeNs)
                    if t0_ns is None:
                        t0_ns = time_ns - round(index * 1e9 / self.fs_hz)
                    at = round((time_ns - t0_ns) * self.fs_hz / 1e9)
                    if at > index:
                        index = at  # samples lost (an overflow, or a gap the device reports by its clock)
                    elif state["pending_overflows"] and at < index:
                        log.debug("%s: timestamp %d behind index %d after overflow", self.name, at, index)
                elif state["pending_overflows"]:
                    with self._lock:
                        self.n_untimed_overflows += state["pending_overflows"]
                state["pending_overflows"] = 0
                if not self._emit(index, buf[:ret], arrival):
                    return
                index += ret
            if flags & _END_BURST:
                return

    def _close(self) -> None:
        super()._close()
        if self._thread is None:  # never streamed: release the device here
            self._device.close()
