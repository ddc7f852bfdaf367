"""``file:PATH``: a recording (raw cf32/ci16/cu8/ci8, SigMF or I/Q WAV) read back as a sample stream.

Unpaced, the file is read as fast as the consumer takes it (nothing is ever lost). Paced (``speed``), a
producer thread releases the samples at ``speed`` times real time into a ring buffer, as a radio would: a
consumer that cannot keep up loses runs, which are counted like radio overflows. With ``loop`` the file
starts again at its end and the stream indices keep growing.
"""

from __future__ import annotations

import os

from lorarffi.capture.base import Pacer, ThreadedSource
from lorarffi.datasets.recording import Recording, open_recording
from lorarffi.errors import ConfigError

__all__ = ["FileSource"]


class FileSource(ThreadedSource):
    """Samples of a recording, optionally paced in real time and looped.

    Parameters
    ----------
    path : path-like
        The recording (see :func:`lorarffi.datasets.recording.open_recording`).
    format : {"cf32", "ci16", "cu8", "ci8"}, optional
        Sample format of a raw file.
    fs_hz : float, optional
        Sample rate of a raw file in Hz.
    center_freq_hz : float, optional
        Centre frequency when the file does not store one.
    speed : float, optional
        Pace at this multiple of real time (1.0 = as recorded); None: as fast as the consumer reads.
    loop : bool
        Start again at the end (the stream then never ends by itself).
    chunk_samples : int
        Samples per chunk read from the file (and per paced run).
    buffer_s : float
        Ring buffer length in seconds (paced or not).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        format: str | None = None,  # noqa: A002
        fs_hz: float | None = None,
        center_freq_hz: float | None = None,
        speed: float | None = None,
        loop: bool = False,
        chunk_samples: int = 1 << 15,
        buffer_s: float = 2.0,
    ) -> None:
        rec = open_recording(path, format=format, fs_hz=fs_hz, center_freq_hz=center_freq_hz)
        if not rec.n_samples:
            rec.close()
            raise ConfigError(f"{path}: the recording holds no samples")
        self.recording: Recording = rec
        super().__init__(
            fs_hz=rec.fs_hz,
            center_freq_hz=rec.center_freq_hz,
            start_time=rec.start_time,
            buffer_s=buffer_s,
            overflow="drop" if speed else "block",
            chunk_samples=1 << 18,
        )
        self.name = f"file:{path}"
        self.finite = not loop
        self.loop = bool(loop)
        self.read_samples = int(chunk_samples)
        self._pacer_speed = speed

    def _produce(self) -> None:
        pacer = Pacer(self.fs_hz, self._pacer_speed)
        rec = self.recording
        offset = 0
        while not self.stopping:
            for pos, iq in rec.iter_chunks(self.read_samples):
                start = offset + pos
                pacer.wait_until(start + iq.shape[0], self._stop)
                if self.stopping or not self._emit(start, iq):  # arrives now (late if the pace was not kept)
                    return
            if not self.loop:
                return
            offset += rec.n_samples  # type: ignore[operator]

    def _close(self) -> None:
        super()._close()
        self.recording.close()
