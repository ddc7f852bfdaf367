"""Ring buffer, the Source interface, file replay, the SoapySDR source (replay module), open_source."""

from __future__ import annotations

import pathlib
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorarffi.capture.base import ThreadedSource
from lorarffi.capture.file_source import FileSource
from lorarffi.capture.ring import RingBuffer, RingClosed
from lorarffi.capture.sources import open_source
from lorarffi.errors import CaptureError, ConfigError


def ramp(n: int, start: int = 0) -> np.ndarray:
    k = np.arange(start, start + n, dtype=np.float64)
    return ((k % 4096) + 1j * (k // 4096)).astype(np.complex64)


# -- ring buffer -------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(
    writes=st.lists(st.integers(1, 700), min_size=1, max_size=30),
    reads=st.integers(1, 900),
    capacity=st.integers(700, 2000),
)
def test_ring_returns_every_sample_in_order_whatever_the_sizes(writes, reads, capacity) -> None:
    ring = RingBuffer(capacity, overflow="block")
    x = ramp(sum(writes))
    out = []

    def producer() -> None:
        pos = 0
        for n in writes:
            ring.write(pos, x[pos : pos + n])
            pos += n
        ring.finish()

    t = threading.Thread(target=producer)
    t.start()
    starts = []
    while True:
        try:
            got = ring.read(reads, timeout_s=5.0)
        except EOFError:
            break
        assert got is not None, "reader timed out"
        start, iq, runs = got
        assert iq.size <= reads and runs[0][0] == start
        starts.append(start)
        out.append(iq)
    t.join(5)
    np.testing.assert_array_equal(np.concatenate(out), x)
    assert starts == sorted(starts)


def test_ring_never_reads_across_a_gap_and_drop_policy_counts() -> None:
    ring = RingBuffer(1000, overflow="drop")
    assert ring.write(0, ramp(400)) == 400
    assert ring.write(500, ramp(300, 500)) == 300  # 100 samples lost upstream
    assert ring.write(800, ramp(400, 800)) == 0  # does not fit: dropped and counted
    assert (ring.n_dropped_runs, ring.n_dropped_samples) == (1, 400)
    start, iq, _ = ring.read(10_000, timeout_s=1)
    assert start == 0 and iq.size == 400
    start, iq, _ = ring.read(10_000, timeout_s=1)
    assert start == 500 and iq.size == 300
    np.testing.assert_array_equal(iq, ramp(300, 500))
    assert ring.read(10, timeout_s=0.01) is None


def test_ring_wraps_around_its_array() -> None:
    ring = RingBuffer(1000)
    pos = 0
    for _ in range(7):  # 7 x 300 = 2100 samples through a 1000-sample ring
        ring.write(pos, ramp(300, pos))
        start, iq, _ = ring.read(300, timeout_s=1)
        np.testing.assert_array_equal(iq, ramp(300, pos))
        assert start == pos
        pos += 300


def test_ring_hands_the_producer_error_over_after_the_samples_and_close_wakes_writers() -> None:
    ring = RingBuffer(100)
    ring.write(0, ramp(50))
    ring.finish(CaptureError("device unplugged"))
    assert ring.read(100, timeout_s=1)[1].size == 50
    with pytest.raises(CaptureError, match="unplugged"):
        ring.read(100, timeout_s=1)

    full = RingBuffer(100, overflow="block")
    full.write(0, ramp(100))
    errors = []

    def blocked_writer() -> None:
        try:
            full.write(100, ramp(10))
        except RingClosed:
            errors.append("closed")

    t = threading.Thread(target=blocked_writer)
    t.start()
    full.close()
    t.join(5)
    assert errors == ["closed"]


def test_ring_rejects_bad_sizes() -> None:
    with pytest.raises(ConfigError, match="capacity_samples"):
        RingBuffer(0)
    with pytest.raises(ConfigError, match="buffer_s"):
        RingBuffer.for_duration(-1.0, 1e6)


# -- overflow accounting through the Source interface ------------------------------------------------------
class DroppingSource(ThreadedSource):
    """A producer that outruns a small ring: runs that do not fit are dropped, later ones show the gap."""

    def __init__(self) -> None:
        super().__init__(fs_hz=1000.0, buffer_s=1.0, overflow="drop", chunk_samples=10_000)  # 1000 samples
        self.name = "dropping"
        self.consumer_read = threading.Event()
        self.first_batch_written = threading.Event()

    def _produce(self) -> None:
        for k in range(5):  # runs 0-2 fit (900 samples), 3 and 4 are dropped
            self._emit(300 * k, ramp(300, 300 * k))
        self.first_batch_written.set()
        assert self.consumer_read.wait(10)
        for k in range(5, 8):
            self._emit(300 * k, ramp(300, 300 * k))


def test_source_counts_dropped_runs_and_keeps_indices_true() -> None:
    src = DroppingSource()
    src._start()
    assert src.first_batch_written.wait(10)  # the consumer starts reading only now
    chunks = []
    with src:
        for start, iq in src:
            chunks.append((start, iq))
            src.consumer_read.set()
    for start, iq in chunks:
        np.testing.assert_array_equal(iq, ramp(iq.size, start))
    stats = src.stats()
    assert stats.n_overflows == 2
    assert stats.n_lost_samples == 600 and stats.n_gaps == 1
    assert stats.n_samples == 6 * 300
    assert stats.next_index == 8 * 300


# -- file replay -------------------------------------------------------------------------------------------
@pytest.fixture
def raw_file(tmp_path):
    x = ramp(70_000)
    path = tmp_path / "x.cf32"
    x.tofile(path)
    return path, x


def test_file_source_yields_the_recording_with_absolute_indices(raw_file) -> None:
    path, x = raw_file
    with open_source(f"file:{path}", format="cf32", fs_hz=1e6, chunk_samples=7777) as src:
        chunks = list(src)
        assert src.finite and src.fs_hz == 1e6
    pos = 0
    for start, iq in chunks:
        assert start == pos and iq.dtype == np.complex64
        pos += iq.size
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), x)
    assert src.stats().n_lost_samples == 0


def test_file_source_loops_with_growing_indices(raw_file) -> None:
    path, x = raw_file
    got = []
    with FileSource(path, format="cf32", fs_hz=1e6, loop=True, chunk_samples=20_000) as src:
        for start, iq in src:
            got.append((start, iq))
            if start + iq.size >= 3 * x.size:
                break
    assert not src.finite
    y = np.concatenate([c for _, c in got])[: 3 * x.size]
    np.testing.assert_array_equal(y, np.tile(x, 3))


def test_file_source_paced_runs_no_faster_than_asked(raw_file) -> None:
    path, x = raw_file
    t0 = time.monotonic()
    with FileSource(path, format="cf32", fs_hz=1e6, speed=2.0, chunk_samples=5000) as src:
        n = sum(iq.size for _, iq in src)
    assert n == x.size
    assert time.monotonic() - t0 >= x.size / 1e6 / 2.0 * 0.95  # 35 ms of signal at 2x real time


def test_open_source_parses_specs_and_rejects_misplaced_options(raw_file) -> None:
    path, _ = raw_file
    with pytest.raises(ConfigError, match="not valid"):
        open_source("radio:0")
    with pytest.raises(ConfigError, match="gain_db"):
        open_source(f"file:{path}", format="cf32", fs_hz=1e6, gain_db=20)
    with pytest.raises(ConfigError, match="format"):
        open_source(f"file:{path}")  # raw file without format/fs
    with open_source(str(path), format="cf32", fs_hz=1e6) as src:  # a bare existing path is a file
        assert src.name == f"file:{path}"


# -- SoapySDR through the replay module --------------------------------------------------------------------
def read_soapy(args: str, **kw):
    with open_source(f"soapy:{args}", **kw) as src:
        chunks = [(s, iq.copy()) for s, iq in src]
    return chunks, src


def test_soapy_source_delivers_the_file_through_the_real_api(replay_module, raw_file) -> None:
    path, x = raw_file
    chunks, src = read_soapy(
        f"driver=replay,file={path},rate=1e6,mtu=4096",
        fs_hz=1e6,
        center_freq_hz=868.1e6,
        gain_db=20.0,
        antenna="RX",
        bandwidth_hz=200e3,
    )
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), x)
    assert chunks[0][0] == 0
    assert src.center_freq_hz == 868.1e6 and src.fs_hz == 1e6 and src.hardware_key == "replay"
    assert src.stats().n_overflows == 0


def test_soapy_overflows_are_counted_and_indices_stay_right(replay_module, raw_file) -> None:
    path, x = raw_file
    chunks, src = read_soapy(
        f"driver=replay,file={path},rate=1e6,mtu=1000,overflow_every=7,overflow_samples=1500"
    )
    for start, iq in chunks:  # every delivered sample sits at its true index in the file
        np.testing.assert_array_equal(iq, x[start : start + iq.size])
    stats = src.stats()
    n_reads_with_data = sum(1 for _ in chunks)
    assert n_reads_with_data > 0
    # reads 7, 14, ... each lose 1500 samples; 70 000 samples = 70 reads of 1000 + overflow reads
    n_overflows = stats.n_overflows
    assert n_overflows >= 5
    assert stats.n_lost_samples == 1500 * n_overflows
    assert stats.n_samples + stats.n_lost_samples == x.size
    assert stats.n_gaps == n_overflows and stats.n_untimed_overflows == 0


def test_soapy_without_timestamps_counts_untimed_overflows(replay_module, raw_file) -> None:
    path, x = raw_file
    chunks, src = read_soapy(f"driver=replay,file={path},rate=1e6,mtu=1000,overflow_every=10,time=false")
    stats = src.stats()
    assert stats.n_overflows > 0 and stats.n_untimed_overflows == stats.n_overflows
    assert stats.n_lost_samples == 0  # the gap size is unknown: indices run on
    assert stats.n_samples == x.size - 1000 * stats.n_overflows


def test_soapy_timeouts_are_retried(replay_module, raw_file) -> None:
    path, x = raw_file
    chunks, src = read_soapy(f"driver=replay,file={path},rate=1e6,mtu=5000,timeout_every=3")
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), x)
    assert src.stats().n_timeouts >= 4


def test_soapy_stop_from_another_thread_ends_an_endless_stream(replay_module, raw_file) -> None:
    path, _ = raw_file
    src = open_source(f"soapy:driver=replay,file={path},rate=1e6,loop=true,realtime=true,mtu=2000")
    n = 0
    with src:
        for _start, iq in src:
            n += iq.size
            if n >= 50_000:
                threading.Thread(target=src.stop).start()
    assert src.stopping and n >= 50_000
    assert src._thread is not None and not src._thread.is_alive()  # reader finished: stream closed


def test_soapy_errors_are_clear(replay_module, raw_file) -> None:
    path, _ = raw_file
    with pytest.raises(CaptureError, match="cannot open"):
        open_source("soapy:driver=replay,file=/nonexistent.cf32")
    with pytest.raises(CaptureError, match="sample rate"):
        open_source(f"soapy:driver=replay,file={path},rate=1e6", fs_hz=2e6)
    with pytest.raises(ConfigError, match="key=value"):
        open_source("soapy:driver")


def test_missing_soapysdr_bindings_are_a_clear_capture_error(monkeypatch) -> None:
    import sys

    from lorarffi.capture import soapy

    monkeypatch.setitem(sys.modules, "SoapySDR", None)  # as if python3-soapysdr were not installed
    with pytest.raises(CaptureError, match="python3-soapysdr"):
        soapy.import_soapysdr()


def test_the_replay_module_directory_is_put_on_the_plugin_path(monkeypatch) -> None:
    import os

    from lorarffi.capture import soapy

    monkeypatch.setenv("SOAPY_SDR_PLUGIN_PATH", "/opt/other")
    monkeypatch.setattr(soapy, "native_module_dir", lambda: pathlib.Path(__file__).parent)  # an existing dir
    try:
        soapy.import_soapysdr()
    except CaptureError:
        pass  # the bindings may be absent here; the path is set before importing them
    assert os.environ["SOAPY_SDR_PLUGIN_PATH"].split(os.pathsep) == [
        str(pathlib.Path(__file__).parent),
        "/opt/other",
    ]
