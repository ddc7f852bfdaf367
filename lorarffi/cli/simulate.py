"""``lora-rffi simulate``: synthetic devices as aligned preamble sets (HDF5) or a recording with truth.

- ``lora-rffi simulate --n-devices N --packets M -o FILE.h5 [--seed S] [--snr-db A:B] [--multipath]
  [--session K] [--first-device D] [--spread X]``: each device's packets in our preamble schema.
- ``lora-rffi simulate --stream OUT.sigmf-meta --n-devices N --duration-s T [--rogues R]``: a SigMF recording
  whose annotations are the ground truth (``core:sample_start`` = first preamble sample, ``core:label`` =
  device id or ``rogue``, ``lorarffi:cfo_hz``/``lorarffi:snr_db``). With ``--channels F1,F2,...`` and
  ``--sf 7-12`` a gateway recording around ``-f``: each device on its own channel at its own SF
  (``lorarffi:channel_hz``/``lorarffi:sf`` in each annotation).

The same ``--seed`` gives the same devices in every file, so ``--session 1`` (day 1, cold start, place 1) and
``--session 2`` (day 2, place 2) make a train and a test set of one fleet.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lorarffi.cli.common import (
    add_channel_plan_args,
    add_json_arg,
    add_lora_args,
    add_n_devices_arg,
    check_output,
    lora_config,
    nonnegative_int,
    print_json,
    si_float,
    snr_range_db,
)
from lorarffi.cli.progress import add_progress_arg
from lorarffi.errors import ConfigError

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run"]

log = logging.getLogger(__name__)

_EPOCH_S = 1735689600.0  # 2025-01-01T00:00:00Z: day 1 of simulated captures (capture_time_s is Unix time)


HELP = "make synthetic LoRa devices' preamble sets or a recording with ground truth"
DESCRIPTION = (
    "Make a fleet of look-alike LoRa transmitters that each keep their own hardware flaws (oscillator offset "
    "and drift, IQ imbalance, PLL and filter quirks, power amplifier) and send their packets through a "
    "noisy radio channel. Write either every device's aligned preambles to an HDF5 file (-o), ready for "
    "train and evaluate, or a continuous SigMF recording of packets in noise whose annotations say who sent "
    "each packet (--stream), ready for detect and live. The same --seed gives the same devices in every "
    "file: --session 1 and --session 2 make a training day and a test day of one fleet. The file appears "
    "only when complete (an interrupted run leaves nothing)."
)
EPILOG = (
    "example: lora-rffi simulate --n-devices 4 --packets 50 -o fleet_day1.h5\n"
    "         lora-rffi simulate --n-devices 4 --packets 50 --session 2 -o fleet_day2.h5\n"
    "         lora-rffi simulate --stream rec.sigmf-meta --n-devices 3 --rogues 1 --duration-s 5"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--out", type=Path, help="write aligned preamble sets to this HDF5 file")
    out.add_argument(
        "--stream", type=Path, help="write a SigMF recording (NAME.sigmf-meta) of packets in noise"
    )
    add_n_devices_arg(p, required=True, help="number of devices in the fleet")
    p.add_argument("--packets", type=int, default=None, help="packets per device (--out)")
    p.add_argument("--duration-s", type=float, default=None, help="recording length in s (--stream)")
    p.add_argument("--rogues", type=int, default=0, help="extra devices outside the fleet (--stream)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fleet and the packets (default 0)")
    p.add_argument(
        "--snr-db",
        type=snr_range_db,
        default=(10.0, 25.0),
        help="in-band SNR range in dB, low:high (default 10:25; negative: --snr-db=-5:5)",
    )
    p.add_argument(
        "--multipath",
        action="store_true",
        help="pass packets through each device's multipath channel at the session's place",
    )
    p.add_argument(
        "--doppler-hz",
        type=float,
        default=0.2,
        help="maximum Doppler of the multipath channels in Hz (default 0.2)",
    )
    p.add_argument(
        "--session",
        type=int,
        default=1,
        help="session K: day K at place K (default 1); the devices stay the same",
    )
    p.add_argument(
        "--minutes-since-power-on",
        type=float,
        default=0.0,
        help="time from the devices' power-on to the first packet, minutes (default 0: warm-up "
        "drift included)",
    )
    p.add_argument("--first-device", type=int, default=1, help="id of the first device (default 1)")
    p.add_argument(
        "--spread",
        type=float,
        default=1.0,
        help="scale of the per-device hardware differences (default 1.0; 0 = identical hardware)",
    )
    p.add_argument(
        "--chip", choices=["sx1276", "sx1272", "sx1261"], default="sx1276", help="transceiver chip model"
    )
    p.add_argument(
        "--packet-interval-s",
        type=float,
        default=0.3,
        help="time between a device's packets in s (--out, default 0.3)",
    )
    p.add_argument(
        "--mean-interval-s",
        type=float,
        default=0.3,
        help="mean idle time between packets in s (--stream, default 0.3)",
    )
    p.add_argument(
        "-f",
        "--center-freq-hz",
        type=si_float,
        default=868.1e6,
        help="carrier frequency in Hz (default 868.1M)",
    )
    p.add_argument(
        "--payload-symbols",
        type=nonnegative_int,
        default=0,
        help="--out: rows go on past the preamble with the sync word, the SFD and this many header/payload "
        "symbols (random values), for commands that use whole packets (default 0: the preamble alone)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    add_json_arg(p)
    add_lora_args(p)
    add_channel_plan_args(p)
    add_progress_arg(p)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from lorarffi.sim import Session, make_fleet

    if args.devices < 1:
        raise ConfigError(f"--n-devices {args.devices} is not valid: use 1 or more")
    if args.session < 0:
        raise ConfigError(f"--session {args.session} is not valid: use 0 or more")
    from lorarffi.live.gateway import parse_sfs

    sfs = parse_sfs(args.sf) if args.sf is not None else ()
    args.sf = sfs[0] if sfs else None  # the recording's own SF; a gateway stream spreads devices over all
    if (args.channels is not None or len(sfs) > 1) and args.out is not None:
        raise ConfigError("--channels and several --sf make a gateway recording: use them with --stream")
    cfg = lora_config(args)
    fleet = make_fleet(
        args.devices,
        seed=args.seed,
        chip=args.chip,
        spread=args.spread,
        first_device=args.first_device,
        carrier_freq_hz=args.center_freq_hz,
    )
    session = Session(
        day=args.session, minutes_since_power_on=args.minutes_since_power_on, place=args.session
    )
    provenance = {
        "command": "lora-rffi simulate",
        "seed": args.seed,
        "devices": args.devices,
        "first_device": args.first_device,
        "spread": args.spread,
        "chip": args.chip,
        "session": {
            "day": session.day,
            "minutes_since_power_on": session.minutes_since_power_on,
            "place": session.place,
        },
        "snr_db": list(args.snr_db),
        "multipath": args.multipath,
        "doppler_hz": args.doppler_hz,
        "devices_profiles": [d.to_dict() for d in fleet],
    }
    if args.out is not None:
        if args.packets is None or args.packets < 1:
            raise ConfigError("--out needs --packets M (1 or more packets per device)")
        return _run_set(args, cfg, fleet, session, provenance, np)
    if args.duration_s is None or not args.duration_s > 0:
        raise ConfigError("--stream needs --duration-s T (> 0)")
    if args.rogues < 0:
        raise ConfigError(f"--rogues {args.rogues} is not valid: use 0 or more")
    plan: dict = {}
    if args.channels is not None or len(sfs) > 1:
        try:
            channels = [si_float(v.strip()) for v in (args.channels or "").split(",") if v.strip()]
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"--channels={args.channels!r}: {exc}") from None
        plan = {"channels_hz": channels or [args.center_freq_hz], "sfs": list(sfs) or [cfg.sf],
                "center_freq_hz": args.center_freq_hz}
    return _run_stream(args, cfg, fleet, session, provenance, plan)


def _run_set(args, cfg, fleet, session, provenance, np) -> int:
    from lorarffi.cli.progress import progress_bar, progress_enabled
    from lorarffi.datasets.atomic import atomic_path
    from lorarffi.datasets.native import PreambleWriter
    from lorarffi.sim import simulate_preamble_set

    provenance = {
        **provenance,
        "packets_per_device": args.packets,
        "packet_interval_s": args.packet_interval_s,
        "payload_symbols": args.payload_symbols,
    }
    source = f"simulate seed={args.seed} session={args.session}"
    check_output(args.out, overwrite=args.overwrite, flag="-o/--out")
    bar = progress_bar("simulate", len(fleet) * args.packets, enabled=progress_enabled(args))
    writing = atomic_path(args.out)
    with writing as tmp, PreambleWriter(tmp, cfg, source=source, provenance=provenance) as w, bar as advance:
        for dev in fleet:
            rng = np.random.default_rng([args.seed, args.session, dev.device_id])
            ps = simulate_preamble_set(
                [dev],
                cfg,
                args.packets,
                session=session,
                rng=rng,
                snr_db=args.snr_db,
                multipath=args.multipath,
                doppler_hz=args.doppler_hz,
                packet_interval_s=args.packet_interval_s,
                payload_symbols=args.payload_symbols,
            )
            w.append(
                ps.preambles,
                ps.device_ids,
                cfo_hz=ps.cfo_hz,
                snr_db=ps.snr_db,
                start=ps.start,
                capture_time_s=_EPOCH_S + (session.day - 1) * 86400.0 + ps.capture_time_s,
            )
            log.info("device %d: %d packets", dev.device_id, len(ps))
            advance(len(ps))
    if args.json:
        print_json(
            {
                "type": "summary",
                "file": str(args.out),
                "n_packets": args.devices * args.packets,
                "n_devices": args.devices,
                "device_ids": [d.device_id for d in fleet],
                "session": args.session,
            }
        )
        return 0
    print(
        f"{args.out}: {args.devices * args.packets} packets of {args.devices} devices "
        f"(ids {fleet[0].device_id}-{fleet[-1].device_id}), session {args.session}"
    )
    return 0


def _run_stream(args, cfg, fleet, session, provenance, plan: dict) -> int:
    from lorarffi.datasets.sigmf_io import make_annotation, write_sigmf
    from lorarffi.sim import simulate_stream

    iq, events = simulate_stream(
        fleet,
        cfg,
        duration_s=args.duration_s,
        session=session,
        rogues=args.rogues,
        snr_db=args.snr_db,
        mean_interval_s=args.mean_interval_s,
        seed=args.seed,
        multipath=args.multipath,
        doppler_hz=args.doppler_hz,
        spread=args.spread,
        **plan,
    )
    annotations = [
        make_annotation(
            ev.start,
            min(ev.n_samples, iq.size - ev.start),
            label="rogue" if ev.is_rogue else str(ev.device_id),
            device_id=ev.device_id,
            cfo_hz=ev.cfo_hz,
            snr_db=ev.snr_db,
            is_rogue=ev.is_rogue,
            n_preamble=ev.n_preamble,
            sync_word=ev.sync_word,
            n_payload_symbols=ev.n_payload_symbols,
            **({"channel_hz": ev.channel_hz, "sf": ev.sf} if plan else {}),
        )
        for ev in events
    ]
    peak = float(max(abs(iq.real).max(), abs(iq.imag).max())) if iq.size else 0.0
    if peak > 1.0:
        log.warning("samples reach %.2f: beyond full scale of integer SigMF types", peak)
    path = write_sigmf(
        args.stream,
        iq,
        cfg.fs_hz,
        center_freq_hz=args.center_freq_hz,
        annotations=annotations,
        description=f"lora-rffi simulate: {args.devices} devices, {args.rogues} rogues, seed "
        f"{args.seed}, session {args.session}",
        cfg=cfg,
        overwrite=args.overwrite,
        datetime=_EPOCH_S + (session.day - 1) * 86400.0,
    )
    n_rogue = sum(ev.is_rogue for ev in events)
    if args.json:
        print_json(
            {
                "type": "summary",
                "file": str(path),
                "duration_s": args.duration_s,
                "n_packets": len(events),
                "n_rogue_packets": int(n_rogue),
                "n_devices": args.devices,
            }
        )
        return 0
    print(
        f"{path}: {args.duration_s:g} s, {len(events)} packets ({n_rogue} from rogues) of "
        f"{args.devices} devices"
    )
    return 0
