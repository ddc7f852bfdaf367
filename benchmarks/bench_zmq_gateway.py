"""A real GNU Radio flowgraph feeding the gateway pipeline over ZeroMQ at 10 MS/s: decided and lost packets.

Run: ``.venv/bin/python benchmarks/run.py --only zmq_gateway`` (or this file directly: it prints the section).
Needs Debian's ``gnuradio`` for the system ``/usr/bin/python3``; the section says so and skips otherwise.

A 10 MS/s capture centred on 868.3 MHz (cf32 file, 3 s) holds packets on 868.1, 868.3 and 868.5 MHz at SF 7-9
(125 kHz, in-band SNR 5-25 dB, CFO +-15 kHz). GNU Radio 3.10 plays it: ``blocks.file_source ->
blocks.throttle(10e6) -> zeromq.pub_sink`` (raw, then with ``pass_tags``), into
``lora-rffi live --source zmq:tcp://127.0.0.1:PORT -s 10M -f 868.3M --channels 868.1M,868.3M,868.5M --sf 7-9
--json --duration-s 3`` (detection only) started with it; the live run ends by itself after 3 s of signal, or
is stopped with SIGINT 20 s after the flowgraph has played the file (samples never arrived); its decisions and
summary are read from its JSON lines. The flowgraph binds its PUB socket, waits 12 s for the subscriber to
join, then plays: a subscriber joining late misses the start without anything on the wire saying so.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

FS_HZ = 10e6
DURATION_S = 3.0
CENTER_HZ = 868.3e6
CHANNELS_HZ = (868.1e6, 868.3e6, 868.5e6)
SFS = (7, 8, 9)
GR_PYTHON = "/usr/bin/python3"
START_DELAY_S = 12.0  # the flowgraph binds, waits this long for the live run to subscribe, then plays
ROOT = pathlib.Path(__file__).resolve().parent.parent

FLOWGRAPH = '''
import sys
import time
from gnuradio import blocks, gr, zeromq

path, rate, address, tags = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
tb = gr.top_block()
src = blocks.file_source(gr.sizeof_gr_complex, path, False)
thr = blocks.throttle(gr.sizeof_gr_complex, rate, True)
pub = zeromq.pub_sink(gr.sizeof_gr_complex, 1, address, 100, tags, -1, "")
tb.connect(src, thr, pub)
time.sleep(float(sys.argv[5]))  # bound already: the subscriber connects before the first sample is sent
tb.run()
'''


def make_recording(path: pathlib.Path, seed: int = 7) -> list[tuple[int, float, int]]:
    """Write the capture as cf32; returns the truth ``(start, channel_hz, sf)`` of every packet."""
    import numpy as np

    from lorarffi.dsp import LoRaConfig, packet_waveform

    rng = np.random.default_rng(seed)
    n = int(DURATION_S * FS_HZ)
    sigma = math.sqrt(FS_HZ / 125e3 / 2)  # in-band noise power 1
    iq = (sigma * (rng.standard_normal(n, dtype=np.float32)
                   + 1j * rng.standard_normal(n, dtype=np.float32))).astype(np.complex64)
    truth = []
    for ch in CHANNELS_HZ:
        pos = int(rng.uniform(0.02, 0.2) * FS_HZ)
        while True:
            sf = int(rng.choice(SFS))
            cfg = LoRaConfig(sf=sf, bw_hz=125e3, fs_hz=FS_HZ)
            pk = packet_waveform(cfg, rng.integers(0, 2**sf, int(rng.integers(8, 17))),
                                 cfo_hz=float(rng.uniform(-15e3, 15e3)) + ch - CENTER_HZ,
                                 phase_rad=float(rng.uniform(0, 2 * np.pi)))
            if pos + pk.size >= n:
                break
            iq[pos : pos + pk.size] += (10 ** (float(rng.uniform(5, 25)) / 20) * pk).astype(np.complex64)
            truth.append((pos, ch, sf))
            pos += pk.size + int(rng.exponential(0.05) * FS_HZ)
    iq.tofile(path)
    return sorted(truth)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one(path: pathlib.Path, truth: list, tags: bool, env: dict) -> dict:
    port = _free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    live = subprocess.Popen(
        [str(ROOT / ".venv/bin/lora-rffi"), "live", "--source", f"zmq:{endpoint}", "-s", "10M",
         "-f", "868.3M", "--channels", ",".join(f"{c / 1e6:g}M" for c in CHANNELS_HZ),
         "--sf", f"{SFS[0]}-{SFS[-1]}", "--json", "--no-view", "--buffer-s", "2",
         "--duration-s", str(DURATION_S)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    load_before = os.getloadavg()[0]
    gr = subprocess.run([GR_PYTHON, "-c", FLOWGRAPH, str(path), str(FS_HZ), endpoint, "1" if tags else "0",
                         str(START_DELAY_S)], capture_output=True, text=True, timeout=120)
    load_after = os.getloadavg()[0]
    try:  # the run ends by itself after DURATION_S of signal, unless samples never arrived
        out, err = live.communicate(timeout=20)
        stopped = False
    except subprocess.TimeoutExpired:
        live.send_signal(signal.SIGINT)
        out, err = live.communicate(timeout=60)
        stopped = True
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    decisions = [d for d in lines if "verdict" in d]
    summary = next((d.get("summary", d) for d in lines if "summary" in d or "n_samples" in d), {})
    matched = sum(any(abs(d["start"] - s) <= 80 and (d.get("channel_hz"), d.get("sf")) == (c, f)
                      for d in decisions) for s, c, f in truth)
    stats = summary.get("source_stats", {})
    return {
        "tags": tags,
        "gr_rc": gr.returncode,
        "gr_err": gr.stderr[-300:],
        "live_rc": live.returncode,
        "live_err": err[-300:],
        "n_sent": len(truth),
        "n_decisions": len(decisions),
        "n_matched": matched,
        "n_samples": summary.get("n_samples"),
        "n_expected": int(DURATION_S * FS_HZ),
        "n_lost_samples": stats.get("n_lost_samples", summary.get("n_lost_samples")),
        "loss_observable": summary.get("loss_observable"),
        "load": (load_before, load_after),
        "stopped": stopped,
    }


def run() -> str:
    if not shutil.which(GR_PYTHON) or subprocess.run([GR_PYTHON, "-c", "import gnuradio.zeromq"],
                                                       capture_output=True).returncode:
        return "GNU Radio (`gnuradio.zeromq` for /usr/bin/python3) is not installed: not measured.\n"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="lorarffi-zmqgw-") as tmp:
        path = pathlib.Path(tmp) / "gw10.cf32"
        truth = make_recording(path)
        for tags in (False, True):
            rows.append(_one(path, truth, tags, env))
    out = [
        f"GNU Radio 3.10 `file_source -> throttle({FS_HZ / 1e6:g} MS/s) -> zeromq.pub_sink` playing a "
        f"{DURATION_S:g} s capture (3 channels, SF {SFS[0]}-{SFS[-1]}, {rows[0]['n_sent']} packets) into "
        "`lora-rffi live --source zmq:... -s 10M -f 868.3M --channels 868.1M,868.3M,868.5M --sf 7-9 --json` "
        "(detection only, channels decimated by 40 to 250 kS/s). The machine (2 cores) was shared: load "
        "average (1 min) before / after each run in the table.\n",
        "| PUB sink | packets sent / decided / matched (start within 80 samples, right channel and SF) "
        "| samples processed / sent | lost samples counted | loss observable | run ended | load average |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {'pass_tags' if r['tags'] else 'raw'} | {r['n_sent']} / {r['n_decisions']} / "
            f"{r['n_matched']} | {r['n_samples']} / {r['n_expected']} | {r['n_lost_samples']} "
            f"| {r['loss_observable']} "
            f"| {'SIGINT 20 s after the flowgraph' if r['stopped'] else 'by itself'} "
            f"| {r['load'][0]:.1f} / {r['load'][1]:.1f} |"
        )
    bad = [r for r in rows if r["gr_rc"] or r["live_rc"] not in (0, None)]
    for r in bad:
        out.append(f"\nrun {'pass_tags' if r['tags'] else 'raw'}: flowgraph exit {r['gr_rc']} "
                   f"({r['gr_err'].strip()!r}), live exit {r['live_rc']} ({r['live_err'].strip()!r})")
    out.append("\nReproduce: `.venv/bin/python benchmarks/run.py --only zmq_gateway`.\n")
    return "\n".join(out)


if __name__ == "__main__":
    print(run())
    sys.exit(0)
