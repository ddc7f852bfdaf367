"""The C++ SoapySDR module ``replay`` (native/), through SoapySDRUtil and the real Python bindings."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest


def ramp(n: int) -> np.ndarray:
    k = np.arange(n, dtype=np.float32)
    return ((k % 1000) / 1000 + 1j * ((k // 1000) % 1000) / 1000).astype(np.complex64)


def read_all(replay_module, args: str, *, fmt: str = "CF32", max_reads: int = 10_000):
    """(ret, flags, timeNs, samples) of every read until END_BURST, then one more read."""
    dev = replay_module.Device(args)
    rx = dev.setupStream(replay_module.SOAPY_SDR_RX, fmt)
    assert dev.activateStream(rx) == 0
    mtu = dev.getStreamMTU(rx)
    buf = (
        np.zeros(mtu, np.complex64 if fmt == "CF32" else np.int16)
        if fmt == "CF32"
        else np.zeros(2 * mtu, np.int16)
    )
    reads = []
    for _ in range(max_reads):
        sr = dev.readStream(rx, [buf], mtu, timeoutUs=20_000)
        reads.append(
            (sr.ret, sr.flags, sr.timeNs, buf[: max(sr.ret, 0) * (1 if fmt == "CF32" else 2)].copy())
        )
        if sr.flags & replay_module.SOAPY_SDR_END_BURST:
            break
    after = dev.readStream(rx, [buf], mtu, timeoutUs=1000)
    dev.deactivateStream(rx)
    dev.closeStream(rx)
    dev.close()
    return reads, after


def test_soapysdrutil_finds_the_replay_driver_on_the_plugin_path(replay_library) -> None:
    util = shutil.which("SoapySDRUtil")
    if util is None:
        pytest.skip("SoapySDRUtil not installed")
    env = dict(os.environ, SOAPY_SDR_PLUGIN_PATH=str(replay_library.parent))
    res = subprocess.run([util, "--find=driver=replay"], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0
    assert "driver = replay" in res.stdout
    env_without = {k: v for k, v in os.environ.items() if k != "SOAPY_SDR_PLUGIN_PATH"}
    res = subprocess.run(
        [util, "--find=driver=replay"], capture_output=True, text=True, env=env_without, timeout=60
    )
    assert "driver = replay" not in res.stdout  # negative control: found only through the path


def test_replay_streams_the_file_with_honest_timestamps_and_ends_the_burst(replay_module, tmp_path) -> None:
    x = ramp(50_000)
    path = tmp_path / "ramp.cf32"
    x.tofile(path)
    reads, after = read_all(replay_module, f"driver=replay,file={path},rate=250e3,mtu=4096")
    got = np.concatenate([r[3] for r in reads])
    np.testing.assert_array_equal(got, x)
    index = 0
    for ret, flags, time_ns, _ in reads:
        assert flags & replay_module.SOAPY_SDR_HAS_TIME
        assert time_ns == round(index / 250e3 * 1e9)
        index += ret
    assert reads[-1][1] & replay_module.SOAPY_SDR_END_BURST
    assert not any(r[1] & replay_module.SOAPY_SDR_END_BURST for r in reads[:-1])
    assert after.ret == replay_module.SOAPY_SDR_TIMEOUT


@pytest.mark.parametrize("fmt", ["ci16", "cu8"])
def test_replay_converts_integer_formats_like_the_recording_reader(replay_module, tmp_path, fmt) -> None:
    from lorarffi.datasets.recording import open_recording

    rng = np.random.default_rng(2)
    raw = (
        rng.integers(-32768, 32767, 2 * 3000).astype(np.int16)
        if fmt == "ci16"
        else rng.integers(0, 256, 2 * 3000).astype(np.uint8)
    )
    path = tmp_path / f"x.{fmt}"
    raw.tofile(path)
    reads, _ = read_all(replay_module, f"driver=replay,file={path},rate=1e6")
    got = np.concatenate([r[3] for r in reads])
    with open_recording(path, format=fmt, fs_hz=1e6) as rec:
        want = rec.read(0, rec.n_samples)
    # both are the float32 nearest to (q - offset) * scale: C++ divides in float32 (one correctly rounded
    # operation), the reader rounds a float64 product; they could differ only at a rounding tie, by half an
    # ulp of |v| <= 1 (6e-8)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)


def test_replay_reads_sigmf_metadata_and_offers_cs16(replay_module, tmp_path) -> None:
    x = (ramp(5000) * 0.5).astype(np.complex64)
    base = tmp_path / "rec"
    x.tofile(str(base) + ".sigmf-data")
    meta = {
        "global": {"core:datatype": "cf32_le", "core:sample_rate": 2e6, "core:version": "1.0.0"},
        "captures": [{"core:sample_start": 0, "core:frequency": 868.1e6}],
        "annotations": [],
    }
    pathlib.Path(str(base) + ".sigmf-meta").write_text(json.dumps(meta))
    dev = replay_module.Device(f"driver=replay,file={base}.sigmf-meta")
    assert dev.getSampleRate(replay_module.SOAPY_SDR_RX, 0) == 2e6
    assert dev.getFrequency(replay_module.SOAPY_SDR_RX, 0) == 868.1e6
    assert set(dev.getStreamFormats(replay_module.SOAPY_SDR_RX, 0)) == {"CF32", "CS16"}
    dev.setFrequency(replay_module.SOAPY_SDR_RX, 0, 433.92e6)
    dev.setGain(replay_module.SOAPY_SDR_RX, 0, 31.5)
    dev.setAntenna(replay_module.SOAPY_SDR_RX, 0, "LNAW")
    dev.setBandwidth(replay_module.SOAPY_SDR_RX, 0, 1.5e6)
    assert dev.getFrequency(replay_module.SOAPY_SDR_RX, 0) == 433.92e6
    assert dev.getGain(replay_module.SOAPY_SDR_RX, 0) == 31.5
    assert dev.getAntenna(replay_module.SOAPY_SDR_RX, 0) == "LNAW"
    assert dev.getBandwidth(replay_module.SOAPY_SDR_RX, 0) == 1.5e6
    dev.setSampleRate(replay_module.SOAPY_SDR_RX, 0, 2e6)  # its own rate is fine
    with pytest.raises(RuntimeError, match="replays at its own sample rate"):
        dev.setSampleRate(replay_module.SOAPY_SDR_RX, 0, 1e6)
    dev.close()
    reads, _ = read_all(replay_module, f"driver=replay,file={base}.sigmf-meta", fmt="CS16")
    iq = np.concatenate([r[3] for r in reads]).astype(np.float32).reshape(-1, 2)
    # lround of the same float32 product the reference computes here: at most half a count from it
    np.testing.assert_allclose(iq[:, 0], x.real * 32767, atol=0.5 + 1e-3)
    np.testing.assert_allclose(iq[:, 1], x.imag * 32767, atol=0.5 + 1e-3)


def test_replay_loops_with_device_time_running_on(replay_module, tmp_path) -> None:
    x = ramp(3000)
    path = tmp_path / "short.cf32"
    x.tofile(path)
    dev = replay_module.Device(f"driver=replay,file={path},rate=1e6,loop=true,mtu=1000")
    rx = dev.setupStream(replay_module.SOAPY_SDR_RX, "CF32")
    dev.activateStream(rx)
    buf = np.zeros(1000, np.complex64)
    got, times = [], []
    for _ in range(10):
        sr = dev.readStream(rx, [buf], 1000)
        assert sr.ret == 1000 and not sr.flags & replay_module.SOAPY_SDR_END_BURST
        got.append(buf.copy())
        times.append(sr.timeNs)
    dev.deactivateStream(rx)
    dev.closeStream(rx)
    dev.close()
    np.testing.assert_array_equal(np.concatenate(got), np.tile(x, 4)[:10_000])
    assert times == [k * 1_000_000 for k in range(10)]


def test_replay_fault_injection_drops_whole_blocks_and_reports_overflow(replay_module, tmp_path) -> None:
    x = ramp(20_000)
    path = tmp_path / "x.cf32"
    x.tofile(path)
    reads, _ = read_all(replay_module, f"driver=replay,file={path},rate=1e6,mtu=1000,overflow_every=4")
    overflows = [r for r in reads if r[0] == replay_module.SOAPY_SDR_OVERFLOW]
    assert len(overflows) == 5  # reads 4, 8, ... each lose 1000 samples
    delivered = 0
    for ret, _flags, time_ns, samples in reads:
        if ret > 0:
            at = round(time_ns * 1e6 / 1e9)
            np.testing.assert_array_equal(samples, x[at : at + ret])  # timestamps place samples exactly
            delivered += ret
    assert delivered == 20_000 - 5 * 1000


def test_replay_without_file_argument_is_a_clear_error(replay_module) -> None:
    with pytest.raises(RuntimeError, match="file=PATH"):
        replay_module.Device("driver=replay")
    with pytest.raises(RuntimeError, match="cannot open"):
        replay_module.Device("driver=replay,file=/nonexistent/x.cf32")
