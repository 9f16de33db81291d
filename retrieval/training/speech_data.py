"""Spoken captions synthesised with Debian's espeak-ng, flite and festival.

Each clip gets a random voice (every espeak-ng English voice with every variant,
four flite voices, two festival diphone voices), rate and pitch; then, independently,
background noise at 0-30 dB SNR, room reverb, a telephone band (8 kHz, 300-3400 Hz,
mu-law) and a codec round trip (MP3 or Opus), so the speech head meets many more
sounds of one word than its voices make. Output: 16 kHz mono WAV files plus one JSON
row per clip. These tools are only needed to build training data, never at run time.

Reserved for evaluation and never used here: SVOX Pico (``pico2wave``) and MBROLA
voices (espeak-ng's ``mb-*``), and our own held-out voice ``HELD_OUT_VOICE``.
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
ESPEAK_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
                 "en-us-nyc"]  # never the mb-* (MBROLA) ones: reserved for evaluation
ESPEAK_VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
                   "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "Annie", "Andy", "belinda", "john",
                   "linda", "max", "paul", "steph", "steph2", "steph3", "adam", "Alex", "Alicia", "Andrea", "aunty",
                   "benjamin", "boris", "caleb", "david", "Denis", "ed", "edward", "edward2", "Gene", "Gene2",
                   "gustave", "Henrique", "Hugo", "iven", "iven2", "iven3", "iven4", "Jacky", "Lee", "Marco",
                   "Mario", "Michael", "michel", "Mike", "Nguyen", "norbert", "pablo", "quincy", "rob", "robert",
                   "sandro", "shelby", "travis", "victor", "zac", "anika", "grandpa", "grandma", "croak",
                   "whisper", "whisperf", "AnxiousAndy", "RicishayMax", "Storm", "Tweaky"]
FLITE_TRAIN_VOICES = ["kal", "kal16", "awb", "rms"]
FESTIVAL_VOICES = ["kal_diphone", "ked_diphone"]  # festvox-kallpc16k, festvox-kdlpc16k
# probability of each channel effect (independent; several may stack)
EFFECT_P = {"noise": 0.5, "reverb": 0.25, "telephone": 0.15, "codec": 0.15}
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
    if r < 0.85:
        return "flite:" + rng.choice(FLITE_TRAIN_VOICES)
    return "festival:" + rng.choice(FESTIVAL_VOICES)


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
    """Render one clip to 16 kHz mono WAV (``augmented``: noise and channel effects); None if the engine failed."""
    import soundfile as sf
    import torch
    import torchaudio.functional as AF

    clip, root, seed, augmented = job
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
    if augmented:  # evaluation clips (the held-out voice) stay clean
        if rng.random() < EFFECT_P["noise"]:
            audio = _noise(audio, rng, np.random.default_rng(seed))
        audio = channel_effects(audio, rng, np.random.default_rng(seed + 1))
    audio = np.clip(audio, -1, 1).astype(np.float32)
    sf.write(out, audio, SAMPLE_RATE, subtype="PCM_16")
    return clip


def _noise(audio: np.ndarray, rng: random.Random, nrng: np.random.Generator) -> np.ndarray:
    noise = nrng.standard_normal(audio.size).astype(np.float32)
    if rng.random() < 0.5:  # pinkish: integrate white noise a little
        noise = np.convolve(noise, np.ones(8, np.float32) / 8, mode="same")
    snr_db = rng.uniform(0, 30)
    p_sig = float(np.mean(audio**2)) + 1e-12
    noise *= np.sqrt(p_sig / (float(np.mean(noise**2)) + 1e-12) / 10 ** (snr_db / 10))
    return audio + noise


def _reverb(audio: np.ndarray, rng: random.Random, nrng: np.random.Generator) -> np.ndarray:
    """A synthetic room: exponentially decaying noise (RT60 0.15-0.8 s) after a direct path."""
    rt60 = rng.uniform(0.15, 0.8)
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n, dtype=np.float32) / SAMPLE_RATE
    ir = nrng.standard_normal(n).astype(np.float32) * np.exp(-6.9 * t / rt60).astype(np.float32)
    ir[0] = 1.0 / rng.uniform(0.3, 1.0)  # direct-to-reverberant ratio
    ir /= np.sqrt(np.sum(ir**2))
    from scipy.signal import fftconvolve

    wet = fftconvolve(audio, ir)[: audio.size]
    return wet / (np.abs(wet).max() + 1e-9) * np.abs(audio).max()


def _telephone(audio: np.ndarray) -> np.ndarray:
    """8 kHz, 300-3400 Hz band, 8-bit mu-law, back to 16 kHz."""
    import torch
    import torchaudio.functional as AF

    x = AF.resample(torch.from_numpy(audio.astype(np.float32)), SAMPLE_RATE, 8000)
    x = AF.lowpass_biquad(AF.highpass_biquad(x, 8000, 300.0), 8000, 3400.0).clamp(-1, 1)
    x = AF.mu_law_decoding(AF.mu_law_encoding(x, 256), 256)
    return AF.resample(x, 8000, SAMPLE_RATE).numpy()


def _codec(audio: np.ndarray, rng: random.Random) -> np.ndarray:
    """A lossy round trip through MP3 or Opus (libsndfile)."""
    import io

    import soundfile as sf

    fmt, subtype, rate = (("MP3", "MPEG_LAYER_III", SAMPLE_RATE) if rng.random() < 0.5 else ("OGG", "OPUS", 48_000))
    x = audio.astype(np.float32)
    if rate != SAMPLE_RATE:
        x = np.interp(np.arange(0, x.size, SAMPLE_RATE / rate), np.arange(x.size), x).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1, 1), rate, format=fmt, subtype=subtype)
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float32")
    if rate != SAMPLE_RATE:
        y = np.interp(np.arange(0, y.size, rate / SAMPLE_RATE), np.arange(y.size), y).astype(np.float32)
    return y.reshape(-1)


def channel_effects(audio: np.ndarray, rng: random.Random, nrng: np.random.Generator,
                    p: dict[str, float] | None = None) -> np.ndarray:
    """Reverb, telephone band and codec round trip, each with its probability in ``EFFECT_P``."""
    p = EFFECT_P if p is None else p
    if rng.random() < p["reverb"]:
        audio = _reverb(audio, rng, nrng)
    if rng.random() < p["telephone"]:
        audio = _telephone(audio)
    if rng.random() < p["codec"]:
        try:
            audio = _codec(audio, rng)
        except (RuntimeError, ValueError, OSError):  # an encoder this libsndfile lacks: keep the clean clip
            pass
    return audio.astype(np.float32)


def clip_row(c: Clip) -> dict:
    return asdict(c)
