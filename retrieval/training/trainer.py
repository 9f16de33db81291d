"""Contrastive training of the bundled model against the locked MiniLM text tower.

Each step samples ``batch`` training concepts (``emoji_share`` of them emoji concepts,
the rest icon concepts, so the many icon sets do not crowd out the emoji that most
clips and the demo are about) and, for each, two images (two drawing sets when
several drew it, else two augmentations; ``styles``: each restyled like another
vendor by ``augment.vendor_style``), one caption and one spoken clip. Losses, all
symmetric InfoNCE with learnable temperatures unless said:

- image -> training captions (multi-positive: the batch concepts' own captions and ``CAPTION_SAMPLE``
  random others each step; text embeddings are fixed, so
  scoring every caption each step is cheap) and in-batch image <-> caption;
- image <-> image across vendors (style invariance);
- speech -> all training captions, in-batch speech <-> caption, speech <-> image;
- ``ctc`` > 0: a CTC loss on the speech head's frame features against the clip's
  characters (the seeds' speech-recognition objective), so the frames the head pools
  carry the sound of the words and new words land near their spelling;
- optionally (``soft_targets`` > 0) image/speech -> all training captions against
  soft targets: the locked text tower's own similarity of the concept's captions to
  every caption, so related concepts are near misses rather than plain negatives
  and the towers copy the text space's structure (meant to help unseen concepts).

Validation every epoch: text -> image R@10 on held-out concepts (zero-shot) and a
sample of seen ones; speech -> label R@1 on unseen clips of seen concepts and on
held-out concepts. Checkpoints every epoch; an interrupted run resumes.
After training, the speech fusion gate is fitted and the three speech variants
(cascade, head, fused) are compared; the best becomes the model's default.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..encoders.image_cnn import ImageCNN
from ..encoders.speech_head import AttentionPoolHead, pad_frames
from .augment import augment, plain
from .common import HEAD_ARCH, IMAGE_ARCH, text_embedder
from .fusion_fit import fit as fit_fusion
from .run_io import export_towers, fold_concepts, warm_start

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: Path
    out: Path
    minutes: float = 30.0
    epochs: int = 0
    batch: int = 128
    lr: float = 2e-3
    soft_targets: float = 0.0
    seed: int = 0
    device: str = "auto"
    export: Path | None = None
    register: str = "triad-mini"
    resume: bool = True
    steps_per_epoch: int = 40
    fold: float = 0.0  # cross-fitting for the re-ranker: also keep this fraction of training concepts out
    styles: bool = True  # vendor-style augmentation of the pictures
    emoji_share: float = 0.5  # share of each batch drawn from emoji (not icon) concepts
    ctc: float = 0.3  # weight of the auxiliary CTC loss on the speech head's frames
    init: str | None = None  # a registered bundled model whose image tower and speech head this run starts from
    speech_from: str | None = None  # ship this registered model's speech head and gate unchanged: train the image tower only


CTC_CHARS = "abcdefghijklmnopqrstuvwxyz '"  # 0 is the CTC blank
CAPTION_SAMPLE = 12_000  # caption negatives per step, besides the batch concepts' own captions
MAX_TRAIN_FRAMES = 200  # 4 s of encoder frames per training clip: longer ones (5%) are cropped, without CTC


def ctc_target(text: str) -> list[int]:
    """A transcript's characters as CTC label ids (1..28); anything else is dropped, runs of spaces merged."""
    out: list[int] = []
    for ch in text.lower():
        if ch in CTC_CHARS and not (ch == " " and (not out or out[-1] == CTC_CHARS.index(" ") + 1)):
            out.append(CTC_CHARS.index(ch) + 1)
    return out or [CTC_CHARS.index(" ") + 1]


class Dataset:
    """Everything training needs, in memory: images, caption embeddings, speech frames."""

    def __init__(self, root: Path, text_embed, exclude: frozenset[str] = frozenset(), speech: bool = True) -> None:  # noqa: ANN001
        from PIL import Image

        if not (root / "concepts.json").is_file():
            raise FileNotFoundError(f"no training data in {root}; run `python -m retrieval build-data --out {root}` first")
        self.concepts = json.loads((root / "concepts.json").read_text())
        for c in self.concepts:  # a cross-fitting fold: neither trained on nor validated on
            if c["key"] in exclude:
                c["split"] = "fold"
        self.train = [c for c in self.concepts if c["split"] == "train"]
        self.held = [c for c in self.concepts if c["split"] == "heldout"]
        paths: list[str] = []
        self.images: list[dict[str, list[int]]] = []  # per concept (all): vendor -> image rows
        for c in self.concepts:
            per = {}
            for vendor, rel in c["images"].items():
                per[vendor] = list(range(len(paths), len(paths) + len(rel)))
                paths += rel
            self.images.append(per)
        arr = np.stack([np.asarray(Image.open(root / p).convert("RGBA").resize((64, 64))) for p in tqdm(paths, desc="load images")])
        self.pixels = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()  # (N, 4, 64, 64) uint8
        self.index = {c["key"]: i for i, c in enumerate(self.concepts)}
        # captions: every training concept's captions (the "all captions" targets) + labels of all concepts
        self.cap_text, self.cap_owner = [], []
        for i, c in enumerate(self.concepts):
            if c["split"] == "train":
                for t in c["captions"]:
                    self.cap_text.append(t)
                    self.cap_owner.append(i)
        self.cap_emb = torch.from_numpy(text_embed(self.cap_text))
        self.cap_owner_t = torch.tensor(self.cap_owner)
        # each training concept's mean caption direction (zero for held-out concepts, which have no captions here)
        self.concept_text = torch.zeros(len(self.concepts), self.cap_emb.shape[1])
        self.concept_text.index_add_(0, self.cap_owner_t, self.cap_emb)
        self.concept_text = F.normalize(self.concept_text, dim=-1)
        self.caps_of: dict[int, list[int]] = {}
        for j, i in enumerate(self.cap_owner):
            self.caps_of.setdefault(i, []).append(j)
        from ..training.emoji_data import label_text

        self.label_emb = torch.from_numpy(text_embed([label_text(c["label"]) for c in self.concepts]))
        # speech frames (none for an image-only run)
        meta = json.loads((root / "frames.json").read_text()) if speech else {"ids": [], "offsets": []}
        frames = np.load(root / "frames.npy", mmap_mode="r") if speech else None
        clips = {json.loads(line)["id"]: json.loads(line) for line in (root / "clips.jsonl").read_text().splitlines()
                 if line} if speech else {}
        self.frames: list[torch.Tensor] = []
        self.clip_text: list[list[int]] = []
        self.clip_concept: list[int] = []
        self.clip_split: list[str] = []
        for cid, (a, b) in zip(meta["ids"], meta["offsets"]):
            self.frames.append(torch.from_numpy(np.array(frames[a:b])))
            self.clip_concept.append(self.index[clips[cid]["concept"]])
            self.clip_text.append(ctc_target(clips[cid]["text"]))
            self.clip_split.append(clips[cid]["split"])
        self.train_clips: dict[int, list[int]] = {}
        for k, (ci, sp) in enumerate(zip(self.clip_concept, self.clip_split)):
            if sp == "train":
                self.train_clips.setdefault(ci, []).append(k)
        self.train_idx = [self.index[c["key"]] for c in self.train]
        self.train_emoji = [i for i in self.train_idx if not self.concepts[i]["key"].startswith("icon:")]
        self.train_icons = [i for i in self.train_idx if self.concepts[i]["key"].startswith("icon:")]


def _multi_pos_ce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """-log(sum over positives of softmax) per row; ``positive`` is a bool mask like ``logits``."""
    return (torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~positive, -1e9), 1)).mean()


SOFT_TEMPERATURE = 0.05  # targets and student logits alike: ~95% of a row's mass on its own captions


def _soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a target distribution per row."""
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


def _sym_ce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    logits = scale * a @ b.T
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class Joint(torch.nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.image = ImageCNN(dim, **IMAGE_ARCH).to(memory_format=torch.channels_last)
        self.speech = AttentionPoolHead(dim, **HEAD_ARCH)
        self.ctc = torch.nn.Linear(self.speech.norm.normalized_shape[0], len(CTC_CHARS) + 1)  # training only
        self.logit_scale = torch.nn.Parameter(torch.full((3,), math.log(1 / 0.05)))  # image-text, speech-text, cross


def _recall(sim: torch.Tensor, query_label: list[int], gallery_label: list[int], k: int) -> float:
    top = sim.topk(min(k, sim.shape[1]), dim=1).indices
    gl = torch.tensor(gallery_label)
    hits = (gl[top] == torch.tensor(query_label)[:, None]).any(1)
    return float(hits.float().mean())


@torch.no_grad()
def validate(model: Joint, ds: Dataset, device: str) -> dict[str, float]:
    model.eval()
    out: dict[str, float] = {}
    for name, concepts in (("heldout", ds.held), ("seen", ds.train[:300])):
        rows, labels = [], []
        for c in concepts:
            ci = ds.index[c["key"]]
            for vendor_rows in ds.images[ci].values():
                rows.append(vendor_rows[0])
                labels.append(ci)
        emb = torch.cat([F.normalize(model.image(plain(ds.pixels[rows[i:i + 256]]).to(device)), dim=-1)
                         for i in range(0, len(rows), 256)]).cpu()
        q = [ds.index[c["key"]] for c in concepts]
        out[f"text->image R@10 {name}"] = _recall(ds.label_emb[q] @ emb.T, q, labels, 10)
    for name, split in (("val", "val"), ("heldout", "heldout-concept")):
        ks = [k for k, s in enumerate(ds.clip_split) if s == split]
        if not ks:
            continue
        embs = []
        for i in range(0, len(ks), 128):
            x, m = pad_frames([ds.frames[k] for k in ks[i:i + 128]])
            embs.append(F.normalize(model.speech(x.to(device), m.to(device)), dim=-1).cpu())
        q = [ds.clip_concept[k] for k in ks]
        out[f"speech->label R@1 {name}"] = _recall(torch.cat(embs) @ ds.label_emb.T, q, list(range(len(ds.concepts))), 1)
    model.train()
    return {k: round(v, 4) for k, v in out.items()}


def _step_batch(ds: Dataset, rng: random.Random, batch: int, emoji_share: float = 0.5) -> dict[str, Any]:
    n_emoji = min(len(ds.train_emoji), round(batch * emoji_share)) if ds.train_icons else batch
    concepts = rng.sample(ds.train_emoji, n_emoji) + rng.sample(ds.train_icons, min(len(ds.train_icons), batch - n_emoji))
    if len(concepts) < batch:  # a small dataset: fill from all training concepts
        taken = set(concepts)
        concepts += rng.sample([i for i in ds.train_idx if i not in taken], batch - len(concepts))
    v1, v2, caps, clips = [], [], [], []
    for ci in concepts:
        per = ds.images[ci]
        vendors = list(per)
        a = rng.choice(vendors)
        b = rng.choice([v for v in vendors if v != a] or vendors)
        v1.append(rng.choice(per[a]))
        v2.append(rng.choice(per[b]))
        caps.append(rng.choice(ds.caps_of[ci]))
        clips.append(rng.choice(ds.train_clips[ci]) if ci in ds.train_clips else None)
    return {"concepts": concepts, "v1": v1, "v2": v2, "caps": caps, "clips": clips}


def _speech_loss(model: Joint, ds: Dataset, b: dict[str, Any], have: list[int], cfg: TrainConfig, device: str,
                 caps: torch.Tensor, pos: torch.Tensor, t: torch.Tensor, e1: torch.Tensor, s_st: torch.Tensor,
                 s_x: torch.Tensor, cap_emb: torch.Tensor, soft: torch.Tensor | None) -> torch.Tensor:
    """The speech losses of one step, for the batch rows ``have`` that have a training clip (``soft``: the
    step's soft caption targets, computed once for images and speech)."""
    clip_frames = [ds.frames[b["clips"][i]] for i in have]
    whole = [len(f) <= MAX_TRAIN_FRAMES for f in clip_frames]  # longer ones: cropped, and no CTC
    x, m = pad_frames([f[:MAX_TRAIN_FRAMES] for f in clip_frames])
    x, m = x.to(device), m.to(device)
    feats = model.speech.frame_features(x, m)
    s = F.normalize(model.speech.pool(feats, m), dim=-1)
    sel = torch.tensor(have, device=device)
    loss_sp = _multi_pos_ce(s_st * s @ caps.T, pos[sel]) + _sym_ce(s, t[sel], s_st) + 0.5 * _sym_ce(s, e1[sel], s_x)
    if cfg.ctc > 0 and any(whole):
        keep = torch.tensor([j for j, w in enumerate(whole) if w], device=device)
        texts = [ds.clip_text[b["clips"][have[j]]] for j in keep.tolist()]
        logp = model.ctc(feats[keep]).log_softmax(-1).transpose(0, 1)  # (T, B, C)
        loss_ctc = F.ctc_loss(logp, torch.tensor([c for t_ in texts for c in t_], device=device),
                              (~m[keep]).sum(1), torch.tensor([len(t_) for t_ in texts], device=device),
                              zero_infinity=True)
        loss_sp = loss_sp + cfg.ctc * loss_ctc
    if soft is not None:
        loss_sp = loss_sp + cfg.soft_targets * _soft_ce(s @ cap_emb.T / SOFT_TEMPERATURE, soft[sel])
    return loss_sp


def train(cfg: TrainConfig) -> dict[str, Any]:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    cfg.out.mkdir(parents=True, exist_ok=True)
    fold = fold_concepts(cfg.data, cfg.fold, cfg.seed) if cfg.fold > 0 else frozenset()
    if fold:
        (cfg.out / "fold.json").write_text(json.dumps(sorted(fold)))
    ds = Dataset(cfg.data, text_embedder(), fold, speech=cfg.speech_from is None)
    dim = ds.cap_emb.shape[1]
    model = Joint(dim).to(device)
    if cfg.init and not (cfg.resume and (cfg.out / "checkpoint.pt").is_file()):
        warm_start(model, cfg.init)
    scale_lr = 10.0  # temperatures: no weight decay (it would pull them towards 1) and a faster learning rate
    opt = torch.optim.AdamW([
        {"params": [p for n, p in model.named_parameters() if n != "logit_scale"], "weight_decay": 0.05, "lr_mult": 1.0},
        {"params": [model.logit_scale], "weight_decay": 0.0, "lr_mult": scale_lr},
    ], lr=cfg.lr)
    state = {"epoch": 0, "step": 0, "elapsed": 0.0, "history": []}
    ckpt = cfg.out / "checkpoint.pt"
    if cfg.resume and ckpt.is_file():
        saved = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        state = saved["state"]
        random.setstate(saved["py_rng"])
        torch.set_rng_state(saved["torch_rng"])
        log.warning("resumed from %s at epoch %d", ckpt, state["epoch"])
    (cfg.out / "config.json").write_text(json.dumps({k: str(v) for k, v in asdict(cfg).items()}, indent=1))
    budget = cfg.minutes * 60
    planned = cfg.epochs or 10_000
    total_steps = planned * cfg.steps_per_epoch
    g = torch.Generator().manual_seed(cfg.seed + state["step"])
    rng = random.Random(cfg.seed + state["step"])
    cap_emb, cap_owner, concept_text = ds.cap_emb.to(device), ds.cap_owner_t.to(device), ds.concept_text.to(device)
    caps_of_t = {c: torch.tensor(js) for c, js in ds.caps_of.items()}
    pool = ds.pixels
    warm = 100
    while state["epoch"] < planned and state["elapsed"] < budget:
        t0 = time.perf_counter()
        bar = tqdm(range(cfg.steps_per_epoch), desc=f"epoch {state['epoch'] + 1}", leave=False)
        for _ in bar:
            # cosine over whichever ends first: the planned epochs or the time budget
            frac = max(state["step"] / total_steps if cfg.epochs else 0.0, state["elapsed"] / budget)
            lr = cfg.lr * min(1.0, (state["step"] + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
            for group in opt.param_groups:
                group["lr"] = lr * group["lr_mult"]
            b = _step_batch(ds, rng, cfg.batch, cfg.emoji_share)
            imgs = augment(torch.cat([pool[b["v1"]], pool[b["v2"]]]), pool, g, styles=cfg.styles).to(
                device, memory_format=torch.channels_last)
            emb = F.normalize(model.image(imgs), dim=-1)
            e1, e2 = emb[: cfg.batch], emb[cfg.batch:]
            concepts = torch.tensor(b["concepts"], device=device)
            t = cap_emb[torch.tensor(b["caps"], device=device)]
            s_it, s_st, s_x = model.logit_scale.clamp(max=math.log(100)).exp()
            # "all training captions": every caption of the batch's concepts plus a random sample of the rest
            # (all 67k of them cost ~2.4 s a step on 2 cores, the sample a quarter of it)
            caps = cap_emb
            if len(cap_emb) > CAPTION_SAMPLE:
                own = torch.cat([caps_of_t[c] for c in b["concepts"]]).to(device)
                sub = torch.unique(torch.cat([own, torch.randint(0, len(cap_emb), (CAPTION_SAMPLE,), generator=g).to(device)]))
                caps = cap_emb[sub]
            owner = cap_owner if caps is cap_emb else cap_owner[sub]
            pos = owner[None, :] == concepts[:, None]
            loss_img = (_multi_pos_ce(s_it * e1 @ caps.T, pos) + _multi_pos_ce(s_it * e2 @ caps.T, pos)) / 2
            loss_img = loss_img + _sym_ce(e1, t, s_it) + _sym_ce(e1, e2, s_x)
            soft = None
            if cfg.soft_targets > 0:
                soft = torch.softmax(concept_text[concepts] @ cap_emb.T / SOFT_TEMPERATURE, dim=1)
                loss_img = loss_img + cfg.soft_targets * (_soft_ce(e1 @ cap_emb.T / SOFT_TEMPERATURE, soft)
                                                          + _soft_ce(e2 @ cap_emb.T / SOFT_TEMPERATURE, soft)) / 2
            have = [i for i, k in enumerate(b["clips"]) if k is not None]
            loss = loss_img + (_speech_loss(model, ds, b, have, cfg, device, caps, pos, t, e1, s_st, s_x, cap_emb, soft)
                               if have else 0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state["step"] += 1
            bar.set_postfix(loss=f"{loss.item():.3f}", img=f"{loss_img.item():.2f}", T=f"{1 / s_it.item():.3f}")
        state["elapsed"] += time.perf_counter() - t0
        state["epoch"] += 1
        metrics = validate(model, ds, device)
        metrics.update(epoch=state["epoch"], step=state["step"], minutes=round(state["elapsed"] / 60, 2),
                       loss=round(loss.item(), 4), temperature=round(1 / s_it.item(), 4))
        state["history"].append(metrics)
        tqdm.write(json.dumps(metrics))
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state,
                    "py_rng": random.getstate(), "torch_rng": torch.get_rng_state()}, ckpt.with_suffix(".tmp"))
        ckpt.with_suffix(".tmp").replace(ckpt)
    export_dir = cfg.out / "export"
    export_towers(model.image, model.speech, export_dir, cfg.speech_from)
    if cfg.speech_from:
        fusion = {"kept": f"speech head and gate of {cfg.speech_from}, unchanged (image-only run)"}
    else:
        fusion = fit_fusion(cfg.data, export_dir) if not fold else {"skipped": "cross-fitting fold run"}
    summary = {"config": {k: str(v) for k, v in asdict(cfg).items()}, "epochs": state["epoch"], "steps": state["step"],
               "minutes": round(state["elapsed"] / 60, 2), "final": state["history"][-1] if state["history"] else {},
               "speech": fusion, "history": state["history"]}
    (export_dir / "training_summary.json").write_text(json.dumps(summary, indent=1))  # shipped with the weights
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=1))
    if cfg.export:  # the committed copy, and the registry config pointing at it
        from .register import register

        cfg.export.mkdir(parents=True, exist_ok=True)
        for f in export_dir.iterdir():
            (cfg.export / f.name).write_bytes(f.read_bytes())
        summary["registered"] = str(register(cfg.register, cfg.export))
    return summary
