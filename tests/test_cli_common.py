"""The shared CLI pieces: the args -> LoRaConfig builder, the sample-rate flags, the radio flag group, and the
errors the ``live`` and ``capture`` commands give from them."""

from __future__ import annotations

import argparse

import pytest

from lorarffi.cli import main
from lorarffi.cli.common import (
    add_lora_args,
    add_radio_args,
    gain_arg,
    lora_config,
    sample_rate_hz,
    si_float,
)
from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError


def parse(argv: list[str], *, radio: bool | None = False) -> argparse.Namespace:
    p = argparse.ArgumentParser(exit_on_error=False)
    add_lora_args(p)
    if radio is not None:
        add_radio_args(p, radio_only=radio)
    return p.parse_args(argv)


def test_lora_config_applies_the_flags_to_the_base() -> None:
    assert lora_config(parse([])) == LoRaConfig()  # SF7, 125 kHz, 1 MS/s
    base = LoRaConfig(sf=9, bw_hz=250e3, fs_hz=2e6, preamble_symbols=6)
    assert lora_config(parse([]), base) is base
    got = lora_config(parse(["--sf", "8", "--fs-hz", "500k"]), base)
    assert (got.sf, got.bw_hz, got.fs_hz, got.preamble_symbols) == (8, 250e3, 500e3, 6)
    # the rate in use (a recording's, a source's) replaces the flags'; other fields pass through
    got = lora_config(parse(["--fs-hz", "500k"]), fs_hz=2e6, preamble_symbols=4)
    assert (got.fs_hz, got.preamble_symbols) == (2e6, 4)
    assert lora_config(parse(["-s", "2M"])).fs_hz == 2e6  # -s is the radio's name for the same rate
    with pytest.raises(ConfigError, match="sf=13 is not valid"):
        lora_config(parse(["--sf", "13"]))


def test_a_trained_model_fixes_sf_and_bandwidth() -> None:
    model = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    assert lora_config(parse(["--sf", "7", "--bw-hz", "125k"]), model, trained=True) == model  # may repeat
    assert lora_config(parse(["--fs-hz", "2M"]), model, trained=True).fs_hz == 2e6  # the rate is not fixed
    with pytest.raises(ConfigError, match=r"^--sf=8 contradicts the model, trained for sf=7$"):
        lora_config(parse(["--sf", "8"]), model, trained=True)
    with pytest.raises(ConfigError, match=r"^--bw-hz=250000 contradicts the model, trained for bw_hz=125000"):
        lora_config(parse(["--bw-hz", "250k"]), model, trained=True)
    assert lora_config(parse(["--sf", "8"]), model).sf == 8  # a file's parameters may be overridden


def test_the_rate_flags_must_agree() -> None:
    assert sample_rate_hz(parse([])) is None
    assert sample_rate_hz(parse(["--fs-hz", "1M"])) == 1e6
    assert sample_rate_hz(parse(["-s", "1M", "--fs-hz", "1000k"])) == 1e6
    with pytest.raises(ConfigError, match=r"^-s 2e\+06 and --fs-hz 1e\+06 disagree: give one sample rate$"):
        sample_rate_hz(parse(["-s", "2M", "--fs-hz", "1M"]))
    assert sample_rate_hz(parse(["--fs-hz", "1M"], radio=None)) == 1e6  # commands without radio flags


def test_the_radio_flag_group() -> None:
    args = parse(["-f", "868.1M", "-s", "1M", "-g", "AGC", "-a", "RX2"])
    assert (args.center_freq_hz, args.fs_hz, args.gain_db, args.antenna) == (868.1e6, 1e6, "agc", "RX2")
    args = parse(["--freq", "433.92M", "--rate", "250k", "--gain", "30.5", "--antenna", "TX/RX"])
    assert (args.center_freq_hz, args.fs_hz, args.gain_db, args.antenna) == (433.92e6, 250e3, 30.5, "TX/RX")
    assert (args := parse([])).center_freq_hz is None and args.gain_db is None
    with pytest.raises(SystemExit):  # a radio-only command needs the frequency and the rate
        parse(["-f", "868M"], radio=True)
    assert gain_arg(" agc ") == "agc" and gain_arg("2k") == si_float("2k") == 2000.0
    with pytest.raises(argparse.ArgumentTypeError):
        gain_arg("loud")


def test_live_and_capture_report_rate_and_model_errors_in_one_line(tmp_path, capsys) -> None:
    raw = tmp_path / "x.cf32"
    raw.write_bytes(b"\0" * 8 * 1000)
    assert main(["live", "--source", f"file:{raw}", "--format", "cf32", "-s", "2M", "--fs-hz", "1M"]) == 2
    assert main(["capture", "--args", "driver=none", "-f", "868M", "-s", "1M", "--duration-s", "0", "-o",
                 str(tmp_path / "c.sigmf-meta")]) == 2  # fmt: skip
    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        "lora-rffi: error: -s 2e+06 and --fs-hz 1e+06 disagree: give one sample rate",
        "lora-rffi: error: --duration-s=0.0 is not valid: give a positive number of seconds",
    ]


@pytest.mark.parametrize("module", ["lorarffi", "lorarffi.cli"])
def test_python_dash_m_runs_the_command(module: str) -> None:
    """``python -m lorarffi`` and ``python -m lorarffi.cli`` (what ``torchrun -m`` needs) run lora-rffi."""
    import subprocess
    import sys

    from lorarffi import __version__

    command = [sys.executable, "-m", module, "--version"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"lora-rffi {__version__}"
