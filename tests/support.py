"""Helpers shared by several test modules (no tests here): building the C++ SoapySDR ``replay`` module,
writing GNU Radio's gr-zeromq wire format, and reading a CLI run's JSON Lines and its one error line.

The wire-format helpers re-implement ``gr-zeromq``'s ``base_impl.cc`` / ``tag_headers.cc`` and
``pmt::serialize`` (big-endian PMTs, 1-byte type codes): raw complex64 bytes per message, with an optional
pass_tags header in front.
"""

from __future__ import annotations

import fcntl
import json
import pathlib
import shutil
import struct
import subprocess

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NATIVE = REPO / "native"
NATIVE_BUILD = NATIVE / "build"
REPLAY_LIBRARY = NATIVE_BUILD / "libSoapyReplay.so"


# -- CLI output ----------------------------------------------------------------------------------------------
def json_lines(capsys) -> list[dict]:
    """The JSON objects a command printed on stdout, one per line."""
    return [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]


def one_error_line(capsys, *fragments: str) -> None:
    """The command wrote exactly one ``lora-rffi: error:`` line on stderr, holding every fragment."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lora-rffi: error: "), err
    for f in fragments:
        assert f in err[0], err[0]


# -- the C++ SoapySDR replay module --------------------------------------------------------------------------
def build_replay_module(timeout_s: float = 300.0) -> pathlib.Path:
    """Build native/build/libSoapyReplay.so unless it is up to date; skip the test when it cannot be built.

    Safe when several pytest-xdist workers call it at once: ``make`` runs under an exclusive lock on
    ``native/build/.build.lock``, so the first caller compiles and the others find the library up to date.
    SoapySDR only loads the module from ``native/build`` (``lorarffi.capture.soapy.native_module_dir``), so a
    per-worker build directory is not an option.
    """
    if shutil.which("g++") is None or shutil.which("make") is None:
        pytest.skip("g++/make not installed")
    NATIVE_BUILD.mkdir(parents=True, exist_ok=True)
    with open(NATIVE_BUILD / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        res = subprocess.run(
            ["make", "-s", "-C", str(NATIVE)], capture_output=True, text=True, timeout=timeout_s
        )
    if res.returncode != 0:
        pytest.skip(f"cannot build the replay module (libsoapysdr-dev missing?): {res.stderr.strip()[-300:]}")
    return REPLAY_LIBRARY


# -- GNU Radio gr-zeromq wire format -------------------------------------------------------------------------
def pmt_symbol(text: str) -> bytes:
    raw = text.encode()
    return b"\x02" + struct.pack(">H", len(raw)) + raw


def pmt_double(x: float) -> bytes:
    return b"\x04" + struct.pack(">d", x)


def pmt_int(x: int) -> bytes:
    return b"\x03" + struct.pack(">i", x)


def pmt_uint64(x: int) -> bytes:
    return b"\x0b" + struct.pack(">Q", x)


def pmt_tuple(*items: bytes) -> bytes:
    """A PMT tuple, e.g. UHD's rx_time tag: (uint64 full seconds, double fractional seconds)."""
    return b"\x0c" + struct.pack(">I", len(items)) + b"".join(items)


def pmt_dict(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """A PMT dict: nested pairs ending in NIL, each cell's car the (key . value) pair."""
    out = b""
    for k, v in pairs:
        out += b"\x09" + b"\x07" + k + v
    return out + b"\x06"


def pmt_f32vector(values: list[float]) -> bytes:
    return (
        b"\x0a"
        + b"\x08"
        + struct.pack(">I", len(values))
        + b"\x01\x00"
        + struct.pack(f">{len(values)}f", *values)
    )


def gr_message(
    iq: np.ndarray, *, offset: int | None = None, tags: list[tuple[int, bytes, bytes]] = ()
) -> bytes:
    """What a gr-zeromq sink sends for one work() call (with the pass_tags header when ``offset`` is given).

    Parameters
    ----------
    iq : ndarray of complex, shape (n,)
        The items of the call, sent as complex64.
    offset : int, optional
        Absolute index of ``iq[0]`` in the flowgraph's stream.
    tags : list of (offset, key PMT, value PMT)
        Stream tags on the items, each with its absolute offset.
    """
    payload = np.ascontiguousarray(iq, dtype=np.complex64).tobytes()
    if offset is None:
        return payload
    header = struct.pack("<HBQQ", 0x5FF0, 0x01, offset, len(tags))
    for tag_offset, key, value in tags:
        header += struct.pack("<Q", tag_offset) + key + value + pmt_symbol("usrp_source1")
    return header + payload
