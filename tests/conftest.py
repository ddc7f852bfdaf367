"""Fixtures shared across test modules: the C++ SoapySDR replay module, built once per session, and the
simulated stream that several modules check the live path against, made once and handed out read-only.

Session fixtures run once per pytest-xdist worker; the replay module's build is guarded by a file lock
(:func:`support.build_replay_module`), so two workers never compile it at the same time.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest
from support import build_replay_module

from lorarffi.dsp.config import LoRaConfig


@pytest.fixture(scope="session")
def replay_library() -> pathlib.Path:
    """native/build/libSoapyReplay.so, built (or found up to date) once per session; skips without g++."""
    return build_replay_module()


@pytest.fixture(scope="session")
def replay_module(replay_library: pathlib.Path):
    """The SoapySDR Python bindings, with the replay module on the plugin path; skips without the bindings."""
    from lorarffi.capture.soapy import import_soapysdr
    from lorarffi.errors import CaptureError

    try:
        return import_soapysdr()
    except CaptureError as exc:
        pytest.skip(str(exc))


@dataclasses.dataclass(frozen=True)
class SimulatedStream:
    """A simulated capture with its ground truth.

    Attributes
    ----------
    cfg : LoRaConfig
        Modulation and sample rate of the capture.
    iq : ndarray of complex64, shape (n_samples,)
        The samples, read-only.
    path : pathlib.Path
        The same samples as a raw cf32 file.
    events : tuple of TransmissionEvent
        The packets that lie wholly inside ``iq``, in time order.
    """

    cfg: LoRaConfig
    iq: np.ndarray
    path: pathlib.Path
    events: tuple


@pytest.fixture(scope="session")
def sim_stream(tmp_path_factory) -> SimulatedStream:
    """2.5 s at 1 MS/s (SF7, 125 kHz) of a 3-device fleet (fleet seed 0, stream seed 4, SNR 20-30 dB, a
    packet every 0.15 s on average): the live tests' capture, from a file, ZeroMQ or SoapySDR."""
    from lorarffi.sim import StreamSimulator, make_fleet

    cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    sim = StreamSimulator(make_fleet(3, seed=0), cfg, seed=4, snr_db=(20.0, 30.0), mean_interval_s=0.15)
    _, iq = sim.read(2_500_000)
    iq.setflags(write=False)  # shared by every test of the session: none may change it
    path = tmp_path_factory.mktemp("sim_stream") / "stream.cf32"
    iq.tofile(path)
    path.chmod(0o444)
    events = tuple(e for e in sim.events if e.start + e.n_samples <= iq.size)
    return SimulatedStream(cfg=cfg, iq=iq, path=path, events=events)
