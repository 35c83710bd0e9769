"""Training items from a manifest (JSONL: audio, text, phonemes, speaker), with per-utterance features cached.

The cache (one .npz per utterance, keyed by the audio path) holds the 16 kHz audio, its log-mel, the Resemblyzer
d-vector, the mean log-F0 of voiced frames and the RMS level, so every trainer reads the same features and the
corpus only needs to provide the manifest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vivavoce.audio.io import AudioLimits, read_audio
from vivavoce.errors import VivavoceError


@dataclass
class Item:
    id: str
    text: str
    phonemes: str
    speaker: str
    audio: np.ndarray  # 16 kHz float32
    mel: np.ndarray  # (80, frames) float32
    dvector: np.ndarray  # (256,)
    log_f0: float  # mean over voiced frames (nan if none)
    rms_db: float


def read_manifest(path: str | Path) -> list[dict]:
    """Rows with audio, text, phonemes, speaker, id. Also reads the corpus's manifests (`vivavoce data`), whose
    rows name `audio_16k` and `voice`, with paths relative to the corpus folder (the manifest's parent's parent)."""
    path = Path(path)
    if not path.is_file():
        raise VivavoceError(f"{path}: no such manifest (make one with `python -m vivavoce.train.codec_data`)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise VivavoceError(f"{path}:{n}: not JSON ({e})") from None
        row.setdefault("audio", row.get("audio_16k"))
        row.setdefault("speaker", row.get("voice"))
        missing = sorted(k for k in ("audio", "text", "phonemes", "speaker") if not row.get(k))
        if missing:
            raise VivavoceError(f"{path}:{n}: missing keys {missing}")
        for key in ("audio", "audio_native"):  # audio_native: the corpus's audio at its engine's own rate
            if row.get(key):
                audio = Path(row[key])
                if not audio.is_absolute():
                    near, corpus = path.parent / audio, path.parent.parent / audio
                    audio = corpus if not near.exists() and corpus.exists() else near
                row[key] = str(audio)
        row["id"] = str(row.get("id") or Path(row["audio"]).stem)
        rows.append(row)
    if not rows:
        raise VivavoceError(f"{path}: empty manifest")
    return rows


def mean_log_f0(audio: np.ndarray) -> float:
    import parselmouth

    f0 = parselmouth.Sound(audio.astype(np.float64), 16000).to_pitch(time_step=0.01).selected_array["frequency"]
    voiced = f0[f0 > 0]
    return float(np.log(voiced).mean()) if voiced.size else float("nan")


def load_items(manifest: str | Path, cache_dir: str | Path, progress: bool = True, speaker: bool = True) -> list[Item]:
    """`speaker=False` skips the d-vector and F0 (the tokenizer and vocoder do not need them) when not cached."""
    from vivavoce.codec.mel import log_mel
    from vivavoce.audio.speaker import speaker_embedding

    cache = Path(cache_dir) / "features"
    cache.mkdir(parents=True, exist_ok=True)
    items = []
    for row in tqdm(read_manifest(manifest), desc="features", disable=not progress, leave=False):
        key = hashlib.sha1(row["audio"].encode()).hexdigest()[:16]
        f = cache / f"{row['id']}-{key}.npz"
        z = dict(np.load(f)) if f.is_file() else {}
        changed = not z
        if not z:
            z["audio"] = read_audio(row["audio"], 16000, AudioLimits(max_seconds=30.0))
            z["mel"] = log_mel(z["audio"]).numpy()
            z["rms_db"] = np.float32(20 * np.log10(np.sqrt(np.mean(z["audio"] ** 2)) + 1e-8))
        if speaker and "dvector" not in z:
            z["dvector"] = speaker_embedding(z["audio"])
            z["log_f0"] = np.float32(mean_log_f0(z["audio"]))
            changed = True
        if changed:
            tmp = f.with_suffix(".tmp.npz")
            np.savez(tmp, **z)
            tmp.replace(f)
        dvec = z.get("dvector", np.zeros(256, dtype=np.float32))
        items.append(Item(row["id"], row["text"], row["phonemes"], row["speaker"], z["audio"], z["mel"], dvec,
                          float(z.get("log_f0", np.nan)), float(z["rms_db"])))  # fmt: skip
    return items
