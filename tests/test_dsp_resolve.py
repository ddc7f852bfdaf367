"""The resolution stages of lorarffi.dsp.resolve, one by one, on synthesised packets with known start, CFO,
sync word and SNR (lorarffi.dsp.chirp.packet_waveform).

Conventions of the truth: a packet whose first preamble sample lies at ``start`` (fractional, full-rate
samples) has its sync word at ``x_sync = start + n_pre * L`` and its SFD at ``x_sync + 2 L``; at the chip rate
(``osr`` samples summed per chip) the preamble symbols start at chips ``delta + j N`` with
``delta = start / osr mod N``. A CFO of ``cfo_hz`` is ``cfo_hz / (bw / N)`` bins of the dechirped spectrum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorarffi.dsp import LoRaConfig, packet_waveform
from lorarffi.dsp.resolve import (
    MIN_PREAMBLE,
    ChirpReferences,
    align_upchirps,
    aligned_windows,
    cfo_free_downchirp,
    cfo_rotation,
    change_point,
    coarse_cfo_and_timing,
    count_from_head,
    count_preamble,
    estimate_snr_db,
    find_sfd,
    fine_cfo,
    fine_timing,
    read_sync_word,
    settle_bin_ambiguity,
    sfd_boundary,
    sfd_is_weak,
    symbol_amplitudes,
    upchirp_peak,
)
from lorarffi.dsp.sample_store import SampleStore

CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
REFS = ChirpReferences.from_config(CFG)
N, OSR, L = REFS.n_chips, REFS.osr, REFS.n_samples
BIN_HZ = CFG.bw_hz / N  # one bin of the dechirped spectrum (= fs / L)


@dataclass
class Truth:
    iq: np.ndarray  # full rate, a multiple of L samples
    start: float  # first preamble sample
    n_pre: int
    cfo_hz: float
    sync_word: int

    @property
    def x_sync(self) -> float:
        return self.start + self.n_pre * L

    @property
    def cfo_bins(self) -> float:
        return self.cfo_hz / BIN_HZ

    @property
    def delta_chips(self) -> float:
        return (self.start / OSR) % N

    @property
    def chips(self) -> np.ndarray:
        return self.iq.reshape(-1, OSR).sum(axis=1)


def synth(*, start: float = 10 * L + 37.25, n_pre: int = 8, cfo_hz: float = 4321.0, sync_word: int = 0x12,
          snr_db: float | None = 30.0, seed: int = 0) -> Truth:
    """One packet (12 payload symbols) at ``start`` in AWGN at an in-band SNR, 10 symbols of room after it."""
    rng = np.random.default_rng(seed)
    pk = packet_waveform(CFG, rng.integers(0, N, 12), n_preamble=n_pre, sync_word=sync_word, cfo_hz=cfo_hz,
                         phase_rad=rng.uniform(0, 2 * np.pi), t0_s=-(start % 1) / CFG.fs_hz)
    n = (int(start) + pk.size) // L * L + 10 * L
    iq = np.zeros(n, np.complex64)
    iq[int(start) : int(start) + pk.size] = pk
    if snr_db is not None:
        var = 10 ** (-snr_db / 10) * CFG.fs_hz / CFG.bw_hz  # in-band noise power 10**(-snr/10)
        iq += (np.sqrt(var / 2) * (rng.standard_normal(n) + 1j * rng.standard_normal(n))).astype(np.complex64)
    return Truth(iq, start, n_pre, cfo_hz, sync_word)


def circ(a: float, b: float, n: float = N) -> float:
    """Circular distance of two chip bins."""
    d = (a - b) % n
    return min(d, n - d)


@pytest.fixture(scope="module")
def pkt() -> Truth:
    return synth()


# -- small kernels -------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(flags=st.lists(st.booleans(), min_size=1, max_size=40))
def test_change_point_is_the_argmax_of_the_cumulative_score(flags):
    score = np.cumsum(np.where(flags, 1, -1))
    n, best, last = change_point(flags)
    assert best == score.max() and last == score[-1]
    assert n == (int(np.argmax(score)) + 1 if score.max() > 0 else 0)


def test_change_point_of_a_preamble_run():
    assert change_point([True] * 8 + [False] * 5) == (8, 8, 3)
    assert change_point([True, False] + [True] * 6 + [False] * 4) == (8, 6, 2)  # one miss inside the run
    assert change_point([False] * 4)[0] == 0


@settings(max_examples=40, deadline=None)
@given(first=st.integers(-300, 900), step=st.sampled_from([-64, 64, 50, 100]), k=st.integers(1, 12))
def test_aligned_windows_read_absolute_positions_with_zeros_outside(first, step, k):
    x = (np.arange(700) + 1j * np.arange(700) ** 0.5).astype(np.complex64)
    off = 100  # x[0] is sample 100
    starts = first + step * np.arange(k)
    expect = np.zeros((k, 64), np.complex64)
    for i, s in enumerate(starts):
        for j in range(64):
            if off <= s + j < off + x.size:
                expect[i, j] = x[s + j - off]
    store = SampleStore()
    store.append(np.zeros(off, np.complex64), owned=True)
    store.append(x, owned=True)
    np.testing.assert_array_equal(aligned_windows((x, off), starts, 64), expect)
    np.testing.assert_array_equal(aligned_windows(store, starts, 64), expect)  # zeros before 100, or 0


def test_sample_store_view_shares_a_block_and_copies_across_blocks():
    a = np.arange(10, dtype=np.complex64)
    b = np.arange(10, 20, dtype=np.complex64)
    store = SampleStore()
    store.append(a, owned=True)
    store.append(b, owned=True)
    inside = store.view(12, 17)
    assert np.shares_memory(inside, b) and not inside.flags.writeable
    np.testing.assert_array_equal(inside, np.arange(12, 17))
    across = store.view(8, 13)  # two blocks: a new array, as get() gives
    assert not np.shares_memory(across, a) and not np.shares_memory(across, b)
    np.testing.assert_array_equal(across, np.arange(8, 13))
    np.testing.assert_array_equal(store.view(18, 23), [18, 19, 0, 0, 0])  # past the end: zeros


def test_cfo_rotation_matches_the_analytic_phasor():
    """float32 cos/sin of a phase reduced in float64: |error| <= the phase's float32 rounding (2 pi 2**-24,
    3.7e-7) plus 1 ulp each for cos, sin and the complex product of the symbol and step phasors (< 1e-6)."""
    n = 8 * L + 123
    for cfo_hz in (0.0, 3e3, -17_777.7):
        exact = np.exp(-2j * np.pi * cfo_hz * np.arange(n) / CFG.fs_hz)
        rot = cfo_rotation(cfo_hz, CFG.fs_hz, n, REFS)
        assert rot.dtype == np.complex64 and rot.shape == (n,)
        assert np.max(np.abs(rot - exact)) < 1e-6
    other = cfo_rotation(3.1e3, CFG.fs_hz, n, REFS)  # negative control: 100 Hz more, 0.8 cycles at the end
    assert np.max(np.abs(cfo_rotation(3e3, CFG.fs_hz, n, REFS) - other)) > 0.1


def test_symbol_amplitude_of_an_upchirp_is_its_energy_at_the_cfo_tone():
    """A unit up-chirp with a CFO of c bins, dechirped with c removed: amplitude L at tone 0, energy L, and
    nothing at tone 1 (one bin off), in exact arithmetic. In float32 an L-term sum of unit terms is within
    gamma_L * L = L * u * L of its value (Higham, Thm 3.1), and the phasors and products add a few u each;
    the energy is a sum of 2 L squares: within 2 L u relative."""
    cfo_bins = 2.3
    x = (np.tile(REFS.up_full, 3) * np.exp(2j * np.pi * cfo_bins * np.arange(3 * L) / L)).astype(np.complex64)
    amp, energy = symbol_amplitudes((x, 0), np.arange(3) * L, 0.0, REFS, cfo_bins=cfo_bins)
    bound = (L + 8) * 2.0**-24 * L
    np.testing.assert_allclose(amp, L, rtol=0, atol=bound)
    np.testing.assert_allclose(energy, L, rtol=(2 * L + 2) * 2.0**-24)
    off, _ = symbol_amplitudes((x, 0), np.arange(3) * L, 1.0, REFS, cfo_bins=cfo_bins)
    assert np.all(np.abs(off) <= bound)
    assert np.all(np.abs(amp) > 100 * bound)  # the bound is far below the signal: the comparison can fail


# -- stages 1-4 ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("start", "cfo_hz"), [(10 * L + 37.25, 4321.0), (9 * L + 700.6, -25_000.0),
                                               (11 * L + 3.0, 0.0)])
def test_upchirp_and_sfd_peaks_are_cfo_minus_and_plus_timing(start, cfo_hz):
    """Within one bin (chip): at the chip rate a window holds the ends of two symbols whose dechirped tones
    meet with a phase jump unless the timing is a whole number of chips, which moves the peaks by up to about
    0.7 bins; the full-rate stages that follow absorb that (timing within 1.5 chips; the SFD settles a CFO and
    timing one bin and one chip off together)."""
    t = synth(start=start, cfo_hz=cfo_hz)
    win = t.chips.reshape(-1, N)
    w_first = int(np.ceil(t.start / L))  # first window inside the preamble
    k_up = upchirp_peak(win[w_first : w_first + 5], int(round(t.cfo_bins - t.delta_chips)) % N, REFS).bins
    assert circ(k_up, t.cfo_bins - t.delta_chips) < 1.0
    sfd_chip = t.x_sync / OSR + 2 * N
    w_sfd = int(sfd_chip // N)
    sfd = find_sfd(win[w_sfd - 4 : w_sfd + 5], REFS)
    assert sfd.found and circ(sfd.bins, t.cfo_bins + t.delta_chips) < 1.0
    # the first pair that stands out: the SFD starts in its second window, or in its first
    assert w_sfd - 4 + sfd.index in (w_sfd - 1, w_sfd)
    cfo_b, delta = coarse_cfo_and_timing(k_up, sfd.bins, N)
    assert abs(cfo_b - t.cfo_bins) < 1.0 and circ(delta, t.delta_chips) < 1.0
    # stage 4 on the boundary estimate: the SFD's first chip, to the coarse timing's accuracy
    up = upchirp_peak(win[w_first : w_first + 5], int(round(t.cfo_bins - t.delta_chips)) % N, REFS)
    p_sfd = sfd_boundary((t.chips, 0), delta, w_sfd - 4 + sfd.index, cfo_b, REFS, min_power=0.25 * up.power)
    assert abs(p_sfd - sfd_chip) < 1.0


def test_upchirp_peak_ignores_windows_weaker_than_half_the_strongest():
    """Windows at the edges of the candidate (a partial symbol, another signal) do not pull the peak: four
    windows holding a tone one bin up at 0.45 of the preamble's peak power leave the estimate as it was (up
    to float32 rounding of the kept windows' 128-term sums: far below 1e-4 bins); averaged in, they would
    move it by more than a bin."""
    t = synth(start=10 * L + 8 * 37, cfo_hz=4321.0)
    win = t.chips.reshape(-1, N)
    w_first = int(np.ceil(t.start / L))
    pre = win[w_first : w_first + 5]
    b = int(round(t.cfo_bins - t.delta_chips)) % N
    tone = (REFS.up_chip * np.exp(2j * np.pi * (b + 1) * np.arange(N) / N)).astype(np.complex64)

    def peak_power(w: np.ndarray) -> float:
        return float(np.max(np.abs(np.fft.fft(w * REFS.down_chip, axis=-1)) ** 2))

    tone *= np.float32(np.sqrt(0.45 * max(peak_power(w) for w in pre) / peak_power(tone)))
    alone = upchirp_peak(pre, b, REFS).bins
    assert abs(upchirp_peak(np.concatenate([pre, np.tile(tone, (4, 1))]), b, REFS).bins - alone) < 1e-4


def test_no_sfd_in_noise_or_in_a_preamble():
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal((9, N)) + 1j * rng.standard_normal((9, N))).astype(np.complex64)
    assert not find_sfd(noise, REFS).found
    t = synth(n_pre=40)
    win = t.chips.reshape(-1, N)
    w_first = int(np.ceil(t.start / L))
    assert not find_sfd(win[w_first + 2 : w_first + 11], REFS).found  # up-chirps only


@settings(max_examples=60, deadline=None)
@given(cfo_bins=st.floats(-N / 4, N / 4 - 1e-6), delta=st.floats(0, N - 1e-6))
def test_coarse_cfo_and_timing_split_the_two_peaks(cfo_bins, delta):
    got_cfo, got_delta = coarse_cfo_and_timing((cfo_bins - delta) % N, (cfo_bins + delta) % N, N)
    # a few float64 operations on numbers below N = 128: a few ulps of 128 (3e-14 each)
    assert abs(got_cfo - cfo_bins) < 1e-12 and circ(got_delta, delta) < 1e-12


@pytest.mark.parametrize("window_error", [-1, 0, 1, 2])
def test_sfd_boundary_picks_the_symbol_boundary_with_the_down_chirps(pkt, window_error):
    """The SFD starts in the second window of find_sfd's pair or in its first, or (noise) one later or
    earlier still."""
    sfd_chip = pkt.x_sync / OSR + 2 * N
    win = pkt.chips.reshape(-1, N)
    w_first = int(np.ceil(pkt.start / L))
    up = upchirp_peak(win[w_first : w_first + 5], int(round(pkt.cfo_bins - pkt.delta_chips)) % N, REFS)
    got = sfd_boundary((pkt.chips, 0), pkt.delta_chips, int(sfd_chip // N) + window_error, pkt.cfo_bins, REFS,
                       min_power=0.25 * up.power)
    assert got == pytest.approx(sfd_chip, abs=1e-9)  # the truth itself: float64 sums of whole symbols


def test_sfd_boundary_is_settled_by_the_two_full_down_chirps(pkt):
    """With the windows that have arrived: the first boundary whose two windows both hold a down-chirp is
    given as soon as they are in (the SFD's last quarter is not needed) and never before, and later windows
    do not change it; without such a pair the strongest is given once every window is in."""
    sfd_chip = pkt.x_sync / OSR + 2 * N
    w = int(sfd_chip // N)  # the SFD starts inside window w
    p_in = round(sfd_chip) + 2 * N  # the second full down-chirp's end
    src = (pkt.chips, 0)
    win = pkt.chips.reshape(-1, N)
    w_first = int(np.ceil(pkt.start / L))
    up = upchirp_peak(win[w_first : w_first + 5], int(round(pkt.cfo_bins - pkt.delta_chips)) % N, REFS)
    for w_sfd in (w - 1, w, w + 1):  # the boundaries tried start two, one or no symbol before the SFD
        args = (src, pkt.delta_chips, w_sfd, pkt.cfo_bins, REFS)
        for arrived in (p_in, p_in + 3 * N, None):
            got = sfd_boundary(*args, min_power=0.25 * up.power, arrived=arrived)
            assert got == pytest.approx(sfd_chip, abs=1e-9)
        assert sfd_boundary(*args, min_power=0.25 * up.power, arrived=p_in - 1) is None
    # a down-chirp window holds about an up-chirp's power (the same scale): twice that is never reached
    args = (src, pkt.delta_chips, w, pkt.cfo_bins, REFS)
    assert sfd_boundary(*args, min_power=2.0 * up.power, arrived=p_in) is None
    assert sfd_boundary(*args, min_power=2.0 * up.power) == pytest.approx(sfd_chip, abs=1e-9)


# -- stage 5 -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("timing_error", "cfo_error_bins"), [(0.0, 0.0), (3.0, 0.3), (-3.5, -0.4)])
def test_align_upchirps_finds_the_sync_word_to_the_sample(pkt, timing_error, cfo_error_bins):
    cfo0 = pkt.cfo_bins - cfo_error_bins
    x_sync, r_b = align_upchirps((pkt.iq, 0), pkt.x_sync + timing_error, cfo0, REFS)
    assert abs(x_sync - pkt.x_sync) < 0.5  # to the sample (the fine timing comes later)
    assert abs(r_b - cfo_error_bins) < 0.02  # the CFO left after cfo0, to 20 Hz (fine CFO later: 1 Hz)


@pytest.mark.parametrize("m", [-1, 1])
def test_the_sfd_settles_the_one_bin_one_chip_ambiguity(pkt, m):
    """Timing m chips off with the CFO m bins off leaves the up-chirps' tone unchanged: only the SFD tells."""
    cfo0 = round(pkt.cfo_bins)
    r_true = pkt.cfo_bins - cfo0
    x_sync, r_b, _ = settle_bin_ambiguity((pkt.iq, 0), pkt.x_sync + m * OSR, r_true + m, cfo0, REFS)
    assert x_sync == pytest.approx(pkt.x_sync) and r_b == pytest.approx(r_true)
    x_sync, r_b, _ = settle_bin_ambiguity((pkt.iq, 0), pkt.x_sync, r_true, cfo0, REFS)  # already right
    assert x_sync == pkt.x_sync and r_b == r_true


def test_settle_bin_ambiguity_reads_a_strided_array_as_a_contiguous_one(pkt):
    """The six SFD windows are strided views of one span: a source that is itself a strided view must give
    the same hypothesis and SFD power (float32 sums in another order: relative 1e-4)."""
    cfo0 = round(pkt.cfo_bins)
    holder = np.zeros(2 * pkt.iq.size, np.complex64)
    holder[::2] = pkt.iq
    strided = settle_bin_ambiguity((holder[::2], 0), pkt.x_sync, pkt.cfo_bins - cfo0, cfo0, REFS)
    contiguous = settle_bin_ambiguity((pkt.iq, 0), pkt.x_sync, pkt.cfo_bins - cfo0, cfo0, REFS)
    assert strided.x_sync == contiguous.x_sync and strided.r_bins == contiguous.r_bins
    assert strided.sfd_power == pytest.approx(contiguous.sfd_power, rel=1e-4)


# -- stage 6 -------------------------------------------------------------------------------------------------
def _count(t: Truth, local_from: int = 0):
    s_up = int(round(t.x_sync))
    e = (s_up - t.x_sync) / OSR
    local = (t.iq[local_from:], local_from)
    return count_preamble(local, s_up, e, t.cfo_bins, REFS), local, s_up, e


@pytest.mark.parametrize(("n_pre", "snr_db"), [(8, 30.0), (12, 0.0), (6, 10.0), (20, -5.0), (8, None)])
def test_count_preamble_counts_the_upchirps_before_the_sync_word(n_pre, snr_db):
    t = synth(n_pre=n_pre, snr_db=snr_db, seed=n_pre)
    count, local, s_up, e = _count(t)
    assert count.n_symbols == n_pre
    assert count.amp.size == s_up // L and len(count.flags) == count.amp.size
    assert sum(count.flags[:n_pre]) >= n_pre - 1 and sum(count.flags[n_pre:]) <= 1
    sfd_power = settle_bin_ambiguity(local, t.x_sync, 0.0, t.cfo_bins, REFS).sfd_power
    assert not sfd_is_weak(sfd_power, count.e_ref)


def test_count_preamble_needs_room_and_a_weak_sfd_is_seen():
    t = synth(n_pre=8)
    assert _count(t, local_from=int(t.x_sync) - (MIN_PREAMBLE - 1) * L)[0] is None
    count, local, s_up, e = _count(t)
    no_sfd = t.iq.copy()
    no_sfd[s_up + 2 * L : s_up + 4 * L] = 0  # the two SFD down-chirps removed (noise-free zeros)
    settled = settle_bin_ambiguity((no_sfd, 0), t.x_sync, 0.0, t.cfo_bins, REFS)
    assert sfd_is_weak(settled.sfd_power, count.e_ref)


@pytest.mark.parametrize("n_pre", [60, 300])
def test_count_from_head_counts_a_long_preamble_from_its_beginning(n_pre):
    t = synth(n_pre=n_pre, start=12 * L + 301.5, snr_db=5.0, seed=n_pre)
    head_start = int(t.start) - 6 * L  # as the detector's snapshot: windows before the first and a few in it
    head = t.iq[head_start : head_start + 14 * L]
    assert count_from_head(head, head_start, t.x_sync, t.cfo_hz, CFG.fs_hz, REFS) == n_pre
    noise_only = t.iq[: 10 * L]  # negative control: no up-chirp in the head
    assert count_from_head(noise_only, 0, t.x_sync, t.cfo_hz, CFG.fs_hz, REFS) is None


# -- stage 7 -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n_pre", "snr_db"), [(8, 30.0), (20, 0.0)])
def test_fine_cfo_recovers_the_offset_left_by_the_coarse_one(n_pre, snr_db):
    """At 0 dB over 19 symbol pairs the Cramer-Rao bound is about 1 Hz; 5 Hz leaves room for the phase of
    the sub-sample timing error."""
    t = synth(n_pre=n_pre, snr_db=snr_db, cfo_hz=-7_654.3, seed=3)
    cfo0 = round(t.cfo_bins) + 0.2  # the coarse estimate, 0.2 bins (195 Hz) off
    s_up = int(round(t.x_sync))
    e = (s_up - t.x_sync) / OSR
    count = count_preamble((t.iq, 0), s_up, (t.cfo_bins - cfo0) + e, cfo0, REFS)
    r_bins, n_coherent = fine_cfo(count, 0.0, long_preamble=False)
    assert abs((cfo0 + r_bins) * BIN_HZ - t.cfo_hz) < 5.0
    assert n_coherent == n_pre
    wrong, _ = fine_cfo(count._replace(amp=count.amp * np.exp(0.3j * np.arange(count.amp.size))), 0.0,
                        long_preamble=False)  # negative control: a phase ramp of 0.3 rad per symbol
    assert abs((wrong - r_bins) - (-0.3 / (2 * np.pi))) < 0.01


@pytest.mark.parametrize("timing_error", [0.4, -0.45, 0.0])
def test_fine_timing_places_the_sync_word_to_a_fraction_of_a_sample(pkt, timing_error):
    """The tone of the averaged symbols is read on a 1/8-bin grid with a parabolic peak: the interpolation
    bias is a few per cent of a grid step (1/8 chip = 1 sample at 8x), so within 0.1 sample."""
    down_comp = cfo_free_downchirp(pkt.cfo_bins, REFS)
    got = fine_timing((pkt.iq, 0), pkt.x_sync + timing_error, pkt.cfo_bins, 7, down_comp, REFS)
    assert abs(got - pkt.x_sync) < 0.1


# -- stage 8 -------------------------------------------------------------------------------------------------
def _dechirped(t: Truth, k: int) -> np.ndarray:
    i_sync = int(round(t.x_sync))
    return aligned_windows((t.iq, 0), i_sync + L * np.arange(-k, 2), L) * cfo_free_downchirp(t.cfo_bins, REFS)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_snr_estimate_is_the_in_band_snr(snr_db):
    """Noise bins: about 16,000 periodogram values, so the floor is known to 1%; the peak is 21 dB above the
    in-band SNR (N = 128 chips). Within 0.5 dB; 10 dB less signal reads 10 dB less (negative control)."""
    t = synth(snr_db=snr_db, n_pre=16, start=10 * L + 37.0, seed=int(snr_db))
    got = estimate_snr_db(_dechirped(t, 15)[:15], REFS)
    assert got == pytest.approx(snr_db, abs=0.5)


@pytest.mark.parametrize("sync_word", [0x12, 0x34, 0xF1, 0x2B])
def test_sync_word_is_read_from_the_two_symbols_after_the_preamble(sync_word):
    t = synth(sync_word=sync_word, snr_db=0.0, seed=sync_word)
    assert read_sync_word(_dechirped(t, 1)[1:], REFS) == sync_word


def test_references_match_the_configuration():
    assert (N, OSR, L) == (128, 8, 1024)
    np.testing.assert_array_equal(REFS.down_full, np.conj(REFS.up_full))
    assert np.allclose(np.abs(REFS.up_chip), 1.0, atol=1e-6)
    assert REFS.fine_dtft(np.arange(3)).shape == (N, 3) and REFS.time_dtft.shape == (25, L)
    assert REFS.edge_dtft.shape == (L, 5)
    assert math.isclose(float(np.angle(REFS.fine_dtft(np.array([N]))[1, 0])), -np.pi / 2, abs_tol=1e-6)
