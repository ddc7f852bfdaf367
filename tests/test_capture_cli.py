"""``lora-rffi capture`` through the SoapySDR replay module: the SigMF recording equals the source samples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lorarffi.cli import main


@pytest.fixture
def recording(tmp_path):
    rng = np.random.default_rng(3)
    x = (0.3 * (rng.standard_normal(123_457) + 1j * rng.standard_normal(123_457))).astype(np.complex64)
    path = tmp_path / "src.cf32"
    x.tofile(path)
    return path, x


def test_capture_records_exactly_the_source_samples(replay_module, recording, tmp_path, capsys) -> None:
    from lorarffi.datasets.recording import open_recording

    path, x = recording
    out = tmp_path / "cap.sigmf-meta"
    rc = main(
        [
            "capture",
            "--args",
            f"driver=replay,file={path},rate=1e6,mtu=3000",
            "-f",
            "868.1M",
            "-s",
            "1M",
            "-g",
            "20",
            "--antenna",
            "RX",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    assert "123457 samples" in capsys.readouterr().out
    with open_recording(out) as rec:
        assert rec.fs_hz == 1e6 and rec.center_freq_hz == 868.1e6
        np.testing.assert_array_equal(rec.read(0, rec.n_samples), x)
    meta = json.loads(out.read_text())
    assert meta["global"]["core:datatype"] == "cf32_le"


def test_capture_stops_after_duration(replay_module, recording, tmp_path) -> None:
    from lorarffi.datasets.recording import open_recording

    path, x = recording
    out = tmp_path / "short.sigmf-meta"
    rc = main(
        [
            "capture",
            "--args",
            f"driver=replay,file={path},rate=1e6,loop=true",
            "-f",
            "433.92M",
            "-s",
            "1M",
            "--duration-s",
            "0.2",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    with open_recording(out) as rec:
        assert rec.n_samples == 200_000
        np.testing.assert_array_equal(rec.read(0, 200_000), np.tile(x, 2)[:200_000])


def test_capture_zero_fills_overflows_so_positions_stay_true(
    replay_module, recording, tmp_path, capsys
) -> None:
    from lorarffi.datasets.recording import open_recording

    path, x = recording
    out = tmp_path / "ovf.sigmf-meta"
    rc = main(
        [
            "capture",
            "--args",
            f"driver=replay,file={path},rate=1e6,mtu=1000,overflow_every=9",
            "-f",
            "1G",
            "-s",
            "1M",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    assert "overflow" in capsys.readouterr().out
    with open_recording(out) as rec:
        y = rec.read(0, rec.n_samples)
    lost = y == 0
    assert lost.sum() >= 1000
    np.testing.assert_array_equal(y[~lost], x[: y.size][~lost])  # the rest is where it belongs


def test_capture_bad_device_is_one_line_exit_2(replay_module, tmp_path, capsys) -> None:
    rc = main(
        [
            "capture",
            "--args",
            "driver=replay,file=/nonexistent.cf32",
            "-f",
            "868M",
            "-s",
            "1M",
            "-o",
            str(tmp_path / "x.sigmf-meta"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lora-rffi: error:") and "cannot open" in err[0]


@pytest.mark.slow
def test_capture_stops_cleanly_on_sigterm(replay_module, recording, tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from lorarffi.datasets.recording import open_recording

    path, x = recording
    out = tmp_path / "term.sigmf-meta"
    data = tmp_path / "term.sigmf-data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lorarffi",
            "capture",
            "--args",
            f"driver=replay,file={path},rate=1e6,loop=true,realtime=true",
            "-f",
            "868M",
            "-s",
            "1M",
            "-o",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        deadline = time.monotonic() + 60
        while not (data.exists() and data.stat().st_size >= 8 * 200_000):  # 0.2 s of signal recorded
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "capture wrote nothing"
            time.sleep(0.05)  # polling the file system, not waiting for a fixed time
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "samples at 1e+06 Hz" in stdout
    with open_recording(out) as rec:
        n = rec.n_samples
        assert n >= 200_000
        np.testing.assert_array_equal(rec.read(0, n), np.tile(x, n // x.size + 1)[:n])
