"""Enroll devices: embed their packets with a trained extractor and store the embeddings and CFO statistics in
a device registry. The network is only run, never trained: its weights are not touched.

>>> emb = load_embedder("runs/extractor")                                         # doctest: +SKIP
>>> reg = Registry.create("fleet.db", model_fingerprint=emb.fingerprint, embedding_dim=emb.dim,
...                       exist_ok=True)                                          # doctest: +SKIP
>>> pre = emb.preprocess(stored_iq)                                               # doctest: +SKIP
>>> enroll(emb, reg, pre.iq, device_ids, cfo_hz=pre.cfo_hz)                       # doctest: +SKIP

Each device is enrolled in its own transaction (its row and all its reference embeddings, replacing an
earlier enrollment), so an interrupted call leaves every device fully enrolled or as it was. The operating
threshold is chosen again by the next authentication (:func:`~lorarffi.rffi.authenticate.current_threshold`):
a threshold set before an enrollment no longer describes the fleet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt

from lorarffi.errors import ConfigError, ModelError
from lorarffi.rffi.embedding import Embedder
from lorarffi.rffi.registry import PACKET_INPUTS, DeviceRecord, Registry

__all__ = ["enroll", "check_bound"]

log = logging.getLogger(__name__)


def check_bound(embedder: Embedder, registry: Registry) -> None:
    """Refuse, in one line, a registry enrolled with another model or embedding length than ``embedder``'s.

    Raises
    ------
    ModelError
    """
    if not embedder.fingerprint:
        raise ModelError(
            f"{embedder.model_dir}: its config.json records no weights hash; save the model again to enroll"
        )
    if embedder.fingerprint != registry.model_fingerprint:
        raise ModelError(
            f"{registry.label}: registry was enrolled with model {registry.model_fingerprint}, not "
            f"{embedder.fingerprint}; use that model, or enroll the devices again into a new registry"
        )
    if embedder.dim != registry.embedding_dim:
        raise ModelError(
            f"{registry.label}: registry holds {registry.embedding_dim}-d embeddings, the model makes "
            f"{embedder.dim}-d ones"
        )


def enroll(
    embedder: Embedder,
    registry: Registry,
    preambles: npt.ArrayLike,
    device_ids: npt.ArrayLike,
    *,
    names: Mapping[int, str] | None = None,
    cfo_hz: npt.ArrayLike | None = None,
    carrier_hz: float | None = None,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
    packet_input: str = "preamble",
) -> list[DeviceRecord]:
    """Enroll (or enroll again) the devices of ``preambles``.

    Parameters
    ----------
    embedder : Embedder
        The model the registry is bound to (:func:`~lorarffi.rffi.embedding.load_embedder`).
    registry : Registry
        Where the devices go.
    preambles : array_like of complex64, shape (N, L)
        Enrollment packets in the model's view: ``embedder.preprocess(iq).iq`` of stored preambles,
        ``embedder.packet_preambles(packets)`` of detected ones.
    device_ids : array_like of int, shape (N,)
        The device of every packet.
    names : mapping of int to str, optional
        Names for people, by device id (a device without one keeps its earlier name).
    cfo_hz : array_like of float, shape (N,), optional
        CFO estimate of every packet, Hz: each device's CFO statistics (mean, spread, range), which the CFO
        gate of authentication uses. NaN entries (rows that are not preambles) are left out, of these and of
        the IQ image and carrier leakage statistics the IQ gate uses (measured on every packet,
        :meth:`~lorarffi.rffi.embedding.Embedder.tx_impairments`).
    carrier_hz : float, optional
        Carrier the devices were enrolled on, Hz (default: the model's training carrier when its gate
        knows it).
    batch_size : int
        Packets per network call.
    progress : callable, optional
        Called with the number of packets each network call has embedded (a progress bar's advance).
    packet_input : {"preamble", "whole_packets"}
        How ``preambles`` were read (``"whole_packets"``: ``packet_symbols=True`` of the preprocessing),
        noted in the registry so that authenticating packets read the other way is warned about.

    Returns
    -------
    list of DeviceRecord
        The devices as stored, in ascending id order.
    """
    check_bound(embedder, registry)
    if packet_input not in PACKET_INPUTS:
        raise ConfigError(f"packet_input={packet_input!r} is not valid: use one of {PACKET_INPUTS}")
    ids = np.asarray(device_ids, dtype=np.int64).reshape(-1)
    x = np.asarray(preambles)
    if x.ndim != 2 or x.shape[0] != ids.size:
        raise ConfigError(f"{ids.size} device ids for preambles of shape {x.shape}: give one id per packet")
    if ids.size == 0:
        raise ConfigError("no packets to enroll")
    cfo = None if cfo_hz is None else np.asarray(cfo_hz, dtype=np.float64).reshape(-1)
    if cfo is not None and cfo.size != ids.size:
        raise ConfigError(f"cfo_hz has {cfo.size} entries for {ids.size} packets")
    if carrier_hz is None and embedder.gate is not None:
        carrier_hz = embedder.gate.params.carrier_hz
    emb = embedder.embed(x, batch_size=batch_size, progress=progress)
    iq = embedder.tx_impairments(x, cfo)
    names = dict(names or {})
    records = []
    for d in np.unique(ids):
        rows = ids == d
        dev_cfo = None if cfo is None else cfo[rows][np.isfinite(cfo[rows])]
        records.append(
            registry.enroll_device(
                int(d),
                emb[rows],
                name=names.get(int(d)),
                cfo_hz=dev_cfo,
                carrier_hz=carrier_hz,
                n_packets=int(rows.sum()),
                iq=iq.take(rows),
            )
        )
        log.info("enrolled device %d from %d packets in %s", int(d), int(rows.sum()), registry.label)
    if registry.record_packet_input(packet_input) == "mixed":
        log.warning("%s: holds devices enrolled from preambles alone and from whole packets; authenticate "
                    "each the way it was enrolled, or enroll them all again one way", registry.label)
    return records
