"""Video decoding: the one I/O boundary for video files (PyAV). Bytes in, keyframes and speech windows out.

* :func:`is_container` / :func:`probe` decide by content: an MP4/MOV ``ftyp`` box, a Matroska/WebM
  EBML header (``1A 45 DF A3``) or an AVI ``RIFF....AVI `` header, then PyAV's demuxer says whether
  the file holds a picture stream (a cover picture does not count): ``"video"``; only sound:
  ``"audio"`` (an ``.m4a`` with an ``isom`` brand, a WebM voice memo), indexed as a recording.
* :func:`load_video` -> :class:`Video`: keyframes chosen by scene change while decoding. Each frame is
  downscaled by the decoder's scaler to :data:`FRAME_SIDE` pixels (longest side) before anything
  else sees it; a 32x32 grey copy is compared with the last keyframe's (mean absolute difference), and
  a frame becomes a keyframe when it differs by :data:`SCENE_DIFF` and the last keyframe is at least
  :data:`KEYFRAME_MIN_S` old, or when the last one is :data:`KEYFRAME_MAX_S` old whatever the
  content. A keyframe covers the time until the next one and carries its JPEG thumbnail.
* The sound track goes through the speech path the audio items use
  (:func:`retrieval.audio_stream.stream_segments`: PyAV decodes, resampled to 16 kHz mono block by
  block, windowed, silent windows skipped), with :data:`SPEECH_WINDOW_S` windows so a speech hit
  says when within a few seconds. No sound track is fine; no picture stream, a truncated or damaged
  file, or one over the limits (:data:`MAX_VIDEO_BYTES`, :data:`MAX_VIDEO_SECONDS`,
  :data:`MAX_FRAME_PIXELS`) raises :class:`~retrieval.decode_errors.DecodeError` with what to do.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .audio_stream import AudioSegment, stream_segments
from .decode_errors import DecodeError
from .decode_errors import check_regular as _regular
from .decode_errors import short_error as _short

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"}
AUDIO_BRANDS = (b"M4A ", b"M4B ", b"M4P ")  # ftyp brands that are sound only, never probed
MAX_VIDEO_BYTES = 20 * (1 << 30)
MAX_VIDEO_SECONDS = 4 * 3600
MAX_FRAME_PIXELS = 40_000_000
MAX_DECODE_SECONDS = 3600.0  # one video's decode may take at most this long (a damaged file crawled through)
FRAME_SIDE = 320  # frames are scaled to this longest side while decoding
THUMB_QUALITY = 80
KEYFRAME_MIN_S = 2.0  # at most one keyframe every 2 s ...
KEYFRAME_MAX_S = 10.0  # ... and at least one every 10 s
SAMPLE_S = 0.25  # frames closer than this to the last one examined are decoded but not looked at
SCENE_DIFF = 0.04  # mean |grey difference| (0..1) on 32x32 thumbnails that counts as a new scene
SPEECH_WINDOW_S = 10.0
SPEECH_OVERLAP_S = 2.0
_FIX = "check that it plays, or re-encode it (e.g. `ffmpeg -i in -c:v libx264 -c:a aac out.mp4`)"


@dataclass(frozen=True)
class Keyframe:
    start: float
    end: float
    image: "object"  # PIL.Image.Image, RGB, longest side <= FRAME_SIDE
    jpeg: bytes


@dataclass
class Video:
    duration: float
    width: int
    height: int
    keyframes: list[Keyframe] = field(default_factory=list)
    speech: list[AudioSegment] = field(default_factory=list)
    has_audio: bool = False


def is_container(head: bytes) -> bool:
    """Whether ``head`` starts a container that may hold video (MP4/MOV, Matroska/WebM, AVI)."""
    if head[4:8] == b"ftyp":
        return head[8:12] not in AUDIO_BRANDS
    return head.startswith(b"\x1a\x45\xdf\xa3") or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")


def _picture_streams(container) -> list:  # noqa: ANN001 - an av container
    return [s for s in container.streams.video if not (s.disposition & 0x0400)]  # AV_DISPOSITION_ATTACHED_PIC


def probe(path: Path) -> str:
    """``"video"`` when the container holds a picture stream, ``"audio"`` when it holds only sound. A file
    the demuxer cannot open, or with neither, is ``"video"``: :func:`load_video` then says what is wrong."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not _picture_streams(container) and container.streams.audio:
                return "audio"
    except Exception:  # damaged or truncated: reported by load_video
        pass
    return "video"


def load_video(path: Path, max_bytes: int = MAX_VIDEO_BYTES, max_seconds: float = MAX_VIDEO_SECONDS,
               max_pixels: int = MAX_FRAME_PIXELS, max_decode_s: float = MAX_DECODE_SECONDS) -> Video:
    """Keyframes (scene change, 2-10 s apart) and speech windows of a video file; see the module docstring."""
    path = Path(path)
    _regular(path)
    size = os.stat(path).st_size
    if size > max_bytes:
        raise DecodeError(f"{path}: video is {size / (1 << 30):.1f} GiB, over the {max_bytes / (1 << 30):g} GiB "
                          f"limit; split it into shorter files")
    try:
        video = _keyframes(path, max_seconds, max_pixels, max_decode_s)
    except DecodeError:
        raise
    except MemoryError:
        raise DecodeError(f"{path}: ran out of memory while decoding the video; {_FIX}") from None
    except Exception as exc:
        raise DecodeError(f"{path}: not a readable video, truncated or damaged ({_short(exc)}); {_FIX}") from None
    if video.has_audio:
        try:
            video.speech = list(stream_segments(path, window=SPEECH_WINDOW_S, overlap=SPEECH_OVERLAP_S,
                                                max_seconds=max_seconds))
        except DecodeError as exc:
            raise DecodeError(f"{path}: the sound track cannot be decoded ({str(exc).split(': ', 1)[-1]})") from None
    return video


def _keyframes(path: Path, max_seconds: float, max_pixels: int, max_decode_s: float) -> Video:
    import av

    deadline = time.monotonic() + max_decode_s
    with av.open(str(path), metadata_errors="ignore") as container:
        streams = _picture_streams(container)
        if not streams:
            raise DecodeError(f"{path}: no video stream found (only sound, or damaged); if it is a recording, "
                              f"save it as audio (e.g. `ffmpeg -i in -vn out.m4a`)")
        stream = streams[0]
        w, h = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if w * h > max_pixels:
            raise DecodeError(f"{path}: frames are {w}x{h} = {w * h:,} pixels, over the {max_pixels:,} limit; "
                              f"downscale it (e.g. `ffmpeg -i in -vf scale=1920:-2 out.mp4`)")
        declared = _declared_seconds(container, stream)
        if declared > max_seconds:
            raise DecodeError(f"{path}: video is {declared / 3600:.1f} h long, over the {max_seconds / 3600:g} h "
                              f"limit; split it into shorter files")
        stream.thread_type = "AUTO"
        scale = min(1.0, FRAME_SIDE / max(w, h, 1))
        sw, sh = max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)
        out = Video(0.0, w, h, has_audio=bool(container.streams.audio))
        chosen: list[tuple[float, object]] = []
        last_grey: np.ndarray | None = None
        last_t = last_seen = -1e9
        end = 0.0
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            t = max(0.0, float(frame.time))
            end = max(end, t + float(frame.duration * frame.time_base if frame.duration and frame.time_base else 0))
            if t > max_seconds:
                raise DecodeError(f"{path}: video is longer than {max_seconds / 3600:g} h; split it into shorter "
                                  f"files")
            if time.monotonic() > deadline:
                raise DecodeError(f"{path}: decoding took longer than {max_decode_s:g} s; the file is probably "
                                  f"damaged: {_FIX}")
            if t - last_seen < SAMPLE_S:
                continue
            last_seen = t
            since = t - last_t
            if since < KEYFRAME_MIN_S:
                continue
            img = frame.to_image(width=sw, height=sh)
            grey = np.asarray(img.convert("L").resize((32, 32)), dtype=np.float32) / 255.0
            if last_grey is None or since >= KEYFRAME_MAX_S or float(np.abs(grey - last_grey).mean()) > SCENE_DIFF:
                chosen.append((t, img))
                last_grey, last_t = grey, t
        if not chosen:
            raise DecodeError(f"{path}: the video stream holds no decodable frame (empty or damaged); {_FIX}")
        out.duration = round(max(end, declared if declared < max_seconds else 0.0, chosen[-1][0]), 3)
        for i, (t, img) in enumerate(chosen):
            until = chosen[i + 1][0] if i + 1 < len(chosen) else max(out.duration, t)
            out.keyframes.append(Keyframe(round(t, 3), round(until, 3), img, _jpeg(img)))
    return out


def _declared_seconds(container, stream) -> float:  # noqa: ANN001 - av objects
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return float(container.duration or 0) / 1_000_000


def _jpeg(img) -> bytes:  # noqa: ANN001 - a PIL image
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=THUMB_QUALITY)
    return buf.getvalue()
