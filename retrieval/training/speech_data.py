"""Spoken captions synthesised with Debian's espeak-ng, flite and festival.

Each clip gets a random voice, rate and pitch, and half of them background noise
at 5-30 dB SNR. Output: 16 kHz mono WAV files plus one JSON row per clip. These
tools are only needed to build training data, never at run time.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
ESPEAK_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029"]
ESPEAK_VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                   "klatt", "klatt2", "klatt4", "Annie", "Andy", "belinda", "john", "linda", "max", "paul", "steph"]
FLITE_TRAIN_VOICES = ["kal", "kal16", "awb", "rms"]
HELD_OUT_VOICE = "flite:slt"  # never used in training: the held-out voice for evaluation and the demo


@dataclass
class Clip:
    id: str
    concept: str
    text: str
    voice: str
    path: str  # relative to the speech folder
    split: str  # train | val | heldout-concept | heldout-voice


def required_tools() -> list[str]:
    return [t for t in ("espeak-ng", "flite", "text2wave") if shutil.which(t) is None]


def train_voice(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.6:
        v = rng.choice(ESPEAK_VOICES)
        var = rng.choice(ESPEAK_VARIANTS)
        return f"espeak:{v}+{var}" if var else f"espeak:{v}"
    if r < 0.9:
        return "flite:" + rng.choice(FLITE_TRAIN_VOICES)
    return "festival:kal_diphone"


def _synth_raw(voice: str, text: str, out: Path, rate: float, pitch: float) -> None:
    engine, name = voice.split(":", 1)
    if engine == "espeak":
        cmd = ["espeak-ng", "-v", name, "-s", str(int(160 * rate)), "-p", str(int(50 * pitch)), "-w", str(out), text]
        subprocess.run(cmd, check=True, capture_output=True)
    elif engine == "flite":
        cmd = ["flite", "-voice", name, "--setf", f"duration_stretch={1 / rate:.3f}",
               "--setf", f"int_f0_target_mean={int((110 if name != 'slt' else 160) * pitch)}", "-t", text, "-o", str(out)]
        subprocess.run(cmd, check=True, capture_output=True)
    elif engine == "festival":
        scm = f"(voice_{name}) (Parameter.set 'Duration_Stretch {1 / rate:.3f})"
        subprocess.run(["text2wave", "-eval", scm, "-o", str(out)], input=text.encode(), check=True, capture_output=True)
    else:
        raise ValueError(f"unknown voice {voice}")


def synthesise(job: tuple[Clip, str, int, bool]) -> Clip | None:
    """Render one clip to 16 kHz mono WAV with optional noise; None if the engine failed."""
    import soundfile as sf
    import torch
    import torchaudio.functional as AF

    clip, root, seed, noisy = job
    rng = random.Random(seed)
    rate, pitch = rng.uniform(0.8, 1.25), rng.uniform(0.8, 1.25)
    out = Path(root) / clip.path
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        try:
            _synth_raw(clip.voice, clip.text, Path(tmp.name), rate, pitch)
            audio, sr = sf.read(tmp.name, dtype="float32", always_2d=True)
        except (subprocess.CalledProcessError, RuntimeError):
            return None
    audio = audio.mean(axis=1)
    if sr != SAMPLE_RATE:
        audio = AF.resample(torch.from_numpy(audio), sr, SAMPLE_RATE).numpy()
    if audio.size == 0 or float(np.abs(audio).max()) == 0.0:
        return None
    audio = audio / float(np.abs(audio).max()) * rng.uniform(0.3, 0.95)
    lead = np.zeros(int(rng.uniform(0.0, 0.4) * SAMPLE_RATE), np.float32)
    audio = np.concatenate([lead, audio, np.zeros(int(0.1 * SAMPLE_RATE), np.float32)])
    if noisy:
        nrng = np.random.default_rng(seed)
        noise = nrng.standard_normal(audio.size).astype(np.float32)
        if rng.random() < 0.5:  # pinkish: integrate white noise a little
            noise = np.convolve(noise, np.ones(8, np.float32) / 8, mode="same")
        snr_db = rng.uniform(5, 30)
        p_sig = float(np.mean(audio**2)) + 1e-12
        noise *= np.sqrt(p_sig / (float(np.mean(noise**2)) + 1e-12) / 10 ** (snr_db / 10))
        audio = audio + noise
    audio = np.clip(audio, -1, 1).astype(np.float32)
    sf.write(out, audio, SAMPLE_RATE, subtype="PCM_16")
    return clip


def clip_row(c: Clip) -> dict:
    return asdict(c)
