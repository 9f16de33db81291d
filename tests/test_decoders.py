"""Decoders: formats by content, EXIF, bomb guard, resampling, segments, encodings, bad files."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from retrieval import decoders
from retrieval.decoders import DecodeError

FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff"}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_image_formats_decode_to_rgb(tmp_path, fmt):
    path = tmp_path / f"x{FORMATS[fmt]}"
    Image.new("RGB", (20, 10), (200, 30, 30)).save(path, format=fmt)
    assert decoders.sniff(path) == "image"
    img = decoders.load_image(path)
    assert img.mode == "RGB" and img.size == (20, 10)
    assert img.getpixel((5, 5))[0] > 150


def test_content_decides_not_extension(tmp_path):
    jpeg_named_png = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), "blue").save(jpeg_named_png, format="JPEG")
    assert decoders.sniff(jpeg_named_png) == "image"
    assert decoders.load_image(jpeg_named_png).size == (8, 8)
    wav_named_txt = tmp_path / "clip.txt"
    sf.write(wav_named_txt, np.zeros(1600, np.float32), 16000, format="WAV")
    assert decoders.sniff(wav_named_txt) == "audio"
    assert decoders.sniff(tmp_path / "missing.bin") is None
    (tmp_path / "archive.zip").write_bytes(b"PK\x03\x04" + b"\x00" * 60)
    assert decoders.sniff(tmp_path / "archive.zip") is None  # not ours: ignored, not an error


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (64, 32), "red")
    img.paste((0, 0, 255), (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes())
    out = decoders.load_image(path)
    assert out.size == (32, 64)
    top, bottom = out.getpixel((16, 5)), out.getpixel((16, 58))
    assert top[0] > 150 and bottom[2] > 150  # left half (red) is now on top


def test_transparent_png_composited_on_white(tmp_path):
    path = tmp_path / "emoji.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(path)
    assert decoders.load_image(path).getpixel((1, 1)) == (255, 255, 255)


def test_decompression_bomb_refused(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (3000, 3000)).save(path)
    with pytest.raises(DecodeError, match="over the 1,000,000 limit"):
        decoders.load_image(path, max_pixels=1_000_000)


def test_truncated_and_empty_images(tmp_path):
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, format="PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "zero.jpg").write_bytes(b"")
    for name in ("cut.png", "zero.jpg"):
        with pytest.raises(DecodeError, match=name):
            decoders.load_image(tmp_path / name)


def test_audio_resampled_to_16k_mono(tmp_path):
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1).astype(np.float32) * 0.5
    for fmt, ext in (("WAV", ".wav"), ("FLAC", ".flac"), ("OGG", ".ogg")):
        path = tmp_path / f"tone{ext}"
        sf.write(path, stereo, 44100, format=fmt)
        assert decoders.sniff(path) == "audio"
        audio = decoders.load_audio(path)
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert abs(len(audio) - 16000) < 400, (fmt, len(audio))
        assert 0.3 < np.abs(audio).max() <= 1.0


def test_bad_audio_is_a_decode_error(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000, format="WAV")
    (tmp_path / "random.mp3").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DecodeError, match="empty.wav"):
        decoders.load_audio(empty)
    with pytest.raises(DecodeError, match="random.mp3"):
        decoders.load_audio(tmp_path / "random.mp3")


def test_long_audio_split_into_overlapping_segments():
    audio = np.zeros(16000 * 70, np.float32)
    segs = decoders.split_segments(audio)
    assert [(s.start, s.end) for s in segs] == [(0.0, 30.0), (25.0, 55.0), (50.0, 70.0)]
    assert all(len(s.samples) == int((s.end - s.start) * 16000) for s in segs)
    assert len(decoders.split_segments(np.zeros(16000 * 12, np.float32))) == 1


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1251"])
def test_text_encodings_detected(tmp_path, encoding):
    text = "Привет, как дела? Это тест кодировки." if encoding == "cp1251" else "Café crème brûlée à la française, naïve façade."
    path = tmp_path / "note.txt"
    path.write_bytes(text.encode(encoding))
    assert decoders.sniff(path) == "text"
    assert decoders.load_text(path) == text


def test_empty_or_binary_text_is_a_decode_error(tmp_path):
    (tmp_path / "empty.md").write_text("  \n")
    (tmp_path / "bin.txt").write_bytes(b"abc\x00\x01\x02" * 10)
    with pytest.raises(DecodeError, match="empty"):
        decoders.load_text(tmp_path / "empty.md")
    with pytest.raises(DecodeError, match="binary"):
        decoders.load_text(tmp_path / "bin.txt")


FORMATS_DIR = __import__("conftest").FIXTURES / "formats"


@pytest.mark.parametrize("name", ["dog_park.flac", "dog_park.mp3", "dog_park.ogg", "dog_park.m4a"])
def test_committed_audio_formats_decode_alike(name):
    """FLAC, MP3, Opus and AAC (44.1/48 kHz stereo) all become the same ~16 kHz mono clip."""
    path = FORMATS_DIR / name
    assert decoders.sniff(path) == "audio"
    audio = decoders.load_audio(path)
    reference = decoders.load_audio(FORMATS_DIR / "dog_park.flac")
    assert abs(len(audio) - len(reference)) < 0.1 * 16000  # codec padding differs by a few ms
    assert np.abs(audio).max() > 0.1


def test_committed_images_and_utf16_note():
    rotated = decoders.load_image(FORMATS_DIR / "photo_rotated.jpg")
    assert rotated.size == (32, 64)
    for name in ("sample.png", "sample.webp", "sample.gif", "sample.bmp", "sample.tiff", "jpeg_named.png"):
        assert decoders.sniff(FORMATS_DIR / name) == "image"
        assert decoders.load_image(FORMATS_DIR / name).mode == "RGB"
    text = decoders.load_text(FORMATS_DIR / "notes_utf16.txt")
    assert text and "\x00" not in text


def test_long_notes_split_into_overlapping_passages():
    text = " ".join(f"w{i}" for i in range(400))
    passages = decoders.split_passages(text, words=160, overlap=40)
    assert [p.text.split()[0] for p in passages] == ["w0", "w120", "w240"]
    assert passages[-1].text.split()[-1] == "w399"
    assert all(text[p.start:p.end] == p.text for p in passages)
    assert decoders.split_passages("short note") == [decoders.Passage(0, 10, "short note")]


def test_overlong_recording_is_refused(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(16000 * 5, np.float32), 16000, format="WAV")
    with pytest.raises(DecodeError, match="longer than .* split it"):
        decoders.load_audio(path, max_seconds=2)
    assert len(decoders.load_audio(path, max_seconds=10)) == 16000 * 5


# ---------------------------------------------------------------- sample rates and budgets (issue 13, item 1)
_DECODE_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))  # a runaway allocation fails here, not the machine
from retrieval import decoders
audio = decoders.load_audio(sys.argv[1])
print(len(audio))
"""


def test_sample_rate_coprime_with_16k_decodes_in_bounded_memory(tmp_path):
    """96,001 Hz shares no factor with 16 kHz: torchaudio's exact kernel would be 16,000 x 96,000 (~6 GB)."""
    import resource
    import subprocess
    import sys

    from conftest import REPO

    path = tmp_path / "odd.wav"
    sf.write(path, (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32), 96001,
             subtype="PCM_16")  # 32 KB
    assert path.stat().st_size < 40_000
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run([sys.executable, "-c", _DECODE_CHILD, str(path)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert abs(int(proc.stdout.strip()) - 16000 * 16000 / 96001) < 2
    assert peak_mb < 1500 or before / 1024 >= 1500, f"peak RSS {peak_mb:.0f} MB decoding a 32 KB file"
    kernel = decoders._BlockResampler(96001, 16000)
    assert kernel.p * kernel.q <= decoders.MAX_RESAMPLE_KERNEL


@pytest.mark.parametrize("rate", [44100, 22050, 11025, 48000])
def test_block_resampling_equals_whole_signal_resampling(tmp_path, rate):
    import torch
    import torchaudio.functional as AF

    x = (np.random.default_rng(rate).standard_normal(rate * 47) * 0.1).astype(np.float32)  # several blocks
    sf.write(tmp_path / "x.wav", x, rate, subtype="FLOAT")
    got = decoders.load_audio(tmp_path / "x.wav")
    want = np.clip(AF.resample(torch.from_numpy(x), rate, 16000).numpy(), -1, 1)
    assert len(got) == len(want)
    assert np.abs(got - want).max() < 1e-4


@pytest.mark.parametrize("rate", [1, 1000, 3999])
def test_absurd_sample_rates_are_refused_with_a_fix(tmp_path, rate):
    path = tmp_path / f"r{rate}.wav"
    sf.write(path, np.zeros(100, np.float32), rate, subtype="PCM_16")
    with pytest.raises(DecodeError, match=r"sample rate .* Hz is outside .* re-encode it"):
        decoders.load_audio(path)


def test_decode_time_budget(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, np.zeros(16000 * 3, np.float32), 16000)
    with pytest.raises(DecodeError, match="took longer than"):
        list(decoders.stream_audio(path, max_decode_s=0))


def test_a_thumbnail_decodes_a_large_jpeg_at_reduced_scale(tmp_path):
    """Thumbnails ask for ~size pixels a side: a 4000x3000 JPEG is decoded at 1/8 scale, not in full
    (48 MB of pixels per request before), and still covers the thumbnail size."""
    from PIL import Image

    from retrieval.decoders import load_image
    from webui.thumbnails import render

    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((3000, 4000, 3)) * 255).astype(np.uint8)).save(tmp_path / "big.jpg", quality=80)
    assert load_image(tmp_path / "big.jpg").size == (4000, 3000)
    small = load_image(tmp_path / "big.jpg", target=256)
    assert small.size == (500, 375) and min(small.size) >= 256
    with Image.open(io.BytesIO(render(tmp_path / "big.jpg", 256))) as thumb:
        assert thumb.size == (256, 192)
