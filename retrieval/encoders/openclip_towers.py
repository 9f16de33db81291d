"""OpenCLIP image and text towers, by ``openclip:<arch>/<pretrained>`` or local files.

Accepted names (after the ``openclip:`` prefix):

* ``ARCH/TAG`` — a pretrained tag open_clip knows (e.g. ``ViT-B-32/laion2b_s34b_b79k``).
  The Hugging Face cache is tried first; otherwise open_clip downloads the weights.
  Offline, that fails with a message naming the model and how to pre-seed the cache.
* ``ARCH/PATH`` — an open_clip architecture with a local checkpoint file.
* ``PATH`` — a local folder holding ``open_clip_config.json`` and
  ``open_clip_model.safetensors`` (or ``open_clip_pytorch_model.bin``), the layout
  open_clip's ``local-dir:`` schema reads.

Speech is not an open_clip modality: the factory pairs these towers with the ASR
cascade into the open_clip text tower.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .base import ModelError, Tower
from .device import torch_device
from .weights import sha256_file

_CHECKPOINT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class OpenClipBundle:
    """A loaded open_clip model with its preprocess transform and tokenizer."""

    def __init__(self, spec: str) -> None:
        import open_clip

        self.spec = spec
        self.device = torch_device()
        local_dir = Path(spec).expanduser()
        if local_dir.is_dir():
            self._load_local_dir(open_clip, local_dir)
        else:
            arch, sep, pretrained = spec.partition("/")
            if not sep or not arch or not pretrained:
                raise ModelError(
                    f"OpenCLIP model 'openclip:{spec}' is not of the form openclip:ARCH/PRETRAINED "
                    f"(e.g. openclip:ViT-B-32/laion2b_s34b_b79k), openclip:ARCH/path/to/checkpoint, "
                    f"or openclip:path/to/open_clip_folder"
                )
            self._load_arch(open_clip, arch, pretrained)
        self.model = self.model.to(self.device).eval()
        embed_dim = getattr(self.model, "embed_dim", None) or self.model.text_projection.shape[-1]
        self.dim = int(embed_dim)

    def _load_local_dir(self, open_clip, folder: Path) -> None:
        if not (folder / "open_clip_config.json").is_file():
            raise ModelError(f"{folder} is not an open_clip folder: open_clip_config.json is missing")
        ckpt = next((folder / n for n in _CHECKPOINT_NAMES if (folder / n).is_file()), None)
        if ckpt is None:
            raise ModelError(f"{folder} has no weights file ({' or '.join(_CHECKPOINT_NAMES)})")
        name = f"local-dir:{folder.resolve()}"
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(name)
        self.tokenizer = open_clip.get_tokenizer(name)
        self.checksums = {f"openclip/{ckpt.name}": sha256_file(ckpt)}

    def _load_arch(self, open_clip, arch: str, pretrained: str) -> None:
        if arch not in open_clip.list_models():
            close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ModelError(f"unknown OpenCLIP architecture '{arch}'.{hint} See open_clip.list_models().")
        path = Path(pretrained).expanduser()
        mean = std = None
        if path.is_file():
            ckpt = path
        else:
            cfg = open_clip.get_pretrained_cfg(arch, pretrained)
            if not cfg:
                tags = open_clip.list_pretrained_tags_by_model(arch)
                raise ModelError(
                    f"'{pretrained}' is neither a pretrained tag of OpenCLIP '{arch}' (known: {', '.join(tags) or 'none'}) "
                    f"nor an existing checkpoint file"
                )
            ckpt = _fetch_pretrained(arch, pretrained, cfg)
            mean, std = cfg.get("mean"), cfg.get("std")
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=str(ckpt), image_mean=mean, image_std=std
            )
        except Exception as exc:
            raise ModelError(
                f"could not load {ckpt} as an OpenCLIP '{arch}' checkpoint ({type(exc).__name__}: {str(exc)[:300]}); "
                f"check that the file was saved from that architecture"
            ) from None
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.checksums = {f"openclip/{Path(ckpt).name}": sha256_file(Path(ckpt))}


def _fetch_pretrained(arch: str, tag: str, cfg: dict) -> Path:
    """Local path of pretrained weights: HF cache first, then open_clip's download."""
    from open_clip.pretrained import download_pretrained

    repo = (cfg.get("hf_hub") or "").rstrip("/")
    if repo:
        from huggingface_hub import hf_hub_download

        for filename in _CHECKPOINT_NAMES:
            try:
                return Path(hf_hub_download(repo, filename, local_files_only=True))
            except Exception:  # not in the cache: try the next name, then the network
                continue
    how = (
        f"On a machine with internet run `python -c \"import open_clip; "
        f"open_clip.create_model_and_transforms('{arch}', pretrained='{tag}')\"` and copy its Hugging Face cache "
        f"(~/.cache/huggingface, or the folder HF_HOME points to) to this machine, or pass a local checkpoint: "
        f"--model openclip:{arch}/path/to/checkpoint.safetensors"
    )
    if _offline_flag():
        raise ModelError(f"OpenCLIP weights for '{arch}/{tag}' are not in the local cache and HF_HUB_OFFLINE is set. {how}")
    host = _download_host(cfg)
    if not _reachable(host):  # else the download retries for about a minute before failing
        raise ModelError(f"OpenCLIP weights for '{arch}/{tag}' are not in the local cache and {host} cannot be "
                         f"reached (offline?). {how}")
    try:
        return Path(download_pretrained(cfg))
    except Exception as exc:
        raise ModelError(f"could not download OpenCLIP weights for '{arch}/{tag}' ({type(exc).__name__}). {how}") from None


PROBE_TIMEOUT_S = 3.0


def _offline_flag() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _download_host(cfg: dict) -> str:
    """The host open_clip would download ``cfg``'s weights from."""
    from urllib.parse import urlparse

    if cfg.get("hf_hub"):
        return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    return urlparse(cfg.get("url") or "").hostname or "huggingface.co"


def _reachable(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds (name lookup included: it runs in a
    thread, since ``getaddrinfo`` has no timeout of its own). A proxy in the environment counts as reachable."""
    import socket
    import threading

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(result and result[0])


class OpenClipImage(Tower):
    modality = "image"

    def __init__(self, bundle: OpenClipBundle, batch_size: int = 64) -> None:
        self.bundle = bundle
        self.dim = bundle.dim
        self.batch_size = batch_size

    @torch.inference_mode()
    def _embed(self, batch: Sequence) -> tuple[np.ndarray, list[None]]:
        out = []
        for start in range(0, len(batch), self.batch_size):
            pixels = torch.stack([self.bundle.preprocess(img) for img in batch[start:start + self.batch_size]])
            out.append(self.bundle.model.encode_image(pixels.to(self.bundle.device)).float().cpu().numpy())
        return np.concatenate(out), [None] * len(batch)


class OpenClipText(Tower):
    modality = "text"

    def __init__(self, bundle: OpenClipBundle, batch_size: int = 128) -> None:
        self.bundle = bundle
        self.dim = bundle.dim
        self.batch_size = batch_size

    @torch.inference_mode()
    def _embed(self, batch: Sequence[str]) -> tuple[np.ndarray, list[None]]:
        out = []
        for start in range(0, len(batch), self.batch_size):
            tokens = self.bundle.tokenizer([str(t) for t in batch[start:start + self.batch_size]])
            out.append(self.bundle.model.encode_text(tokens.to(self.bundle.device)).float().cpu().numpy())
        return np.concatenate(out), [None] * len(batch)
