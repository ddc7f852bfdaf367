# %% [markdown]
# # The lora-rffi signal path
#
# From a stream of IQ samples to aligned, CFO-compensated preambles and their channel-independent
# spectrograms, on the built-in simulated radio: a few look-alike SX1276 devices transmitting through a
# multipath channel at random times.

# %%
import matplotlib.pyplot as plt
import numpy as np

from lorarffi.sim import Session, make_fleet, simulate_stream
from lorarffi.dsp import LoRaConfig, channel_independent_spectrogram, detect

cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
fleet = make_fleet(4, seed=1)
iq, events = simulate_stream(fleet, cfg, duration_s=3.0, session=Session(day=1, minutes_since_power_on=30),
                             snr_db=(10, 25), seed=2)
print(f"{iq.size} samples, {len(events)} packets sent")

# %% [markdown]
# ## Detect, align, estimate the CFO
# `detect` finds every packet, aligns its preamble to the sample and estimates the CFO; compare with the
# simulator's ground truth.

# %%
packets = detect(iq, cfg)
for ev, p in zip(events, packets):
    print(f"device {ev.device_id}: start {p.start} (true {ev.start}), CFO {p.cfo_hz:8.1f} Hz "
          f"(true {ev.cfo_hz:8.1f}), SNR {p.snr_db:5.1f} dB")

# %% [markdown]
# ## Channel-independent spectrograms
# The ratio of adjacent STFT columns cancels a slowly varying channel (Shen et al., TIFS 2022).

# %%
specs = channel_independent_spectrogram(np.stack([p.preamble for p in packets]))
fig, axes = plt.subplots(1, min(4, len(packets)), figsize=(12, 3), squeeze=False)
for ax, spec, ev in zip(axes[0], specs, events):
    ax.imshow(spec, aspect="auto", origin="lower", cmap="viridis")
    ax.set_title(f"device {ev.device_id}")
    ax.set_xlabel("STFT column")
axes[0][0].set_ylabel("frequency bin (cropped)")
fig.tight_layout()

# %% [markdown]
# ## What each simulated impairment does to a preamble

# %%
from lorarffi.sim.gallery import impairment_gallery

impairment_gallery(cfg, seed=0)
