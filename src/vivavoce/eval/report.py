"""Score answers and write the report: per-item metrics, a summary, a printed table, JSON and PNG plots."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vivavoce.audio.io import resample
from vivavoce.eval import intelligibility
from vivavoce.eval.prosody import prosody
from vivavoce.eval.quality import dnsmos
from vivavoce.audio.speaker import speaker_similarity

ASR_RATE = 16000


@dataclass
class ItemResult:
    name: str
    seconds: float
    transcript: str
    reference: str | None = None
    wer: float | None = None
    cer: float | None = None
    transcript_sphinx: str | None = None
    wer_sphinx: float | None = None
    keyword_hit: bool | None = None
    dnsmos: dict = field(default_factory=dict)
    speaker_similarity: float | None = None
    prosody: dict = field(default_factory=dict)
    first_audio_s: float | None = None  # engine runs only
    rtf: float | None = None  # compute seconds per second of answer audio


class Evaluator:
    """Holds the scoring models (ASR, DNSMOS, speaker encoder) once for many items."""

    def __init__(self, sphinx: bool = True, speaker_ref: tuple[np.ndarray, int] | None = None):
        from vivavoce.speechtools.asr import SphinxASR, WhisperASR

        self.whisper = WhisperASR()
        self.sphinx = SphinxASR() if sphinx else None
        self.speaker_ref = speaker_ref

    def score(
        self,
        name: str,
        audio: np.ndarray,
        rate: int,
        reference: str | None = None,
        keywords: tuple[str, ...] = (),
        first_audio_s: float | None = None,
        compute_s: float | None = None,
    ) -> ItemResult:
        audio16 = resample(np.asarray(audio, dtype=np.float32), rate, ASR_RATE)
        seconds = audio.shape[0] / rate
        result = ItemResult(name=name, seconds=round(seconds, 3), transcript=self.whisper.transcribe(audio16))
        if reference is not None:
            result.reference = reference
            result.wer = intelligibility.wer(reference, result.transcript)
            result.cer = intelligibility.cer(reference, result.transcript)
        if self.sphinx is not None:
            result.transcript_sphinx = self.sphinx.transcribe(audio16)
            if reference is not None:
                result.wer_sphinx = intelligibility.wer(reference, result.transcript_sphinx)
        if keywords:
            result.keyword_hit = intelligibility.keyword_hit(list(keywords), result.transcript)
        result.dnsmos = dnsmos(audio, rate)
        if self.speaker_ref is not None:
            result.speaker_similarity = speaker_similarity(audio, rate, *self.speaker_ref)
        result.prosody = prosody(audio, rate, words=len(result.transcript.split()) or None).as_dict()
        result.first_audio_s = first_audio_s
        if compute_s is not None and seconds > 0:
            result.rtf = compute_s / seconds
        return result


def summarize(items: list[ItemResult]) -> dict:
    def mean(values):
        values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
        return float(np.mean(values)) if values else None

    scored = [i for i in items if i.reference is not None]
    summary = {
        "items": len(items),
        "wer": intelligibility.corpus_wer([i.reference for i in scored], [i.transcript for i in scored])
        if scored
        else None,
        "wer_head": intelligibility.head_wer([i.reference for i in scored], [i.transcript for i in scored])
        if scored
        else None,
        "wer_sphinx": intelligibility.corpus_wer([i.reference for i in scored], [i.transcript_sphinx or "" for i in scored])
        if scored and items[0].transcript_sphinx is not None
        else None,
        "cer": mean([i.cer for i in items]),
        "keyword_hit_rate": mean([float(i.keyword_hit) for i in items if i.keyword_hit is not None]),
        "speaker_similarity": mean([i.speaker_similarity for i in items]),
        "first_audio_s": mean([i.first_audio_s for i in items]),
        "rtf": mean([i.rtf for i in items]),
        "seconds": mean([i.seconds for i in items]),
        "f0_mean_hz": mean([i.prosody.get("f0_mean_hz") for i in items]),
        "words_per_s": mean([i.prosody.get("words_per_s") for i in items]),
    }
    for key in ("sig", "bak", "ovrl", "p808"):
        summary[f"dnsmos_{key}"] = mean([i.dnsmos.get(key) for i in items])
    return summary


def format_table(items: list[ItemResult], summary: dict) -> str:
    def f(v, fmt="{:.2f}"):
        return "-" if v is None else (("yes" if v else "no") if isinstance(v, bool) else fmt.format(v))

    head = f"{'item':<22}{'sec':>6}{'WER':>6}{'kw':>5}{'OVRL':>6}{'SIG':>6}{'BAK':>6}{'P808':>6}{'F0':>6}{'w/s':>6}{'TTFA':>6}{'RTF':>6}"
    lines = [head, "-" * len(head)]
    for i in items:
        lines.append(
            f"{i.name[:21]:<22}{f(i.seconds, '{:.1f}'):>6}{f(i.wer):>6}{f(i.keyword_hit):>5}"
            f"{f(i.dnsmos.get('ovrl')):>6}{f(i.dnsmos.get('sig')):>6}{f(i.dnsmos.get('bak')):>6}"
            f"{f(i.dnsmos.get('p808')):>6}{f(i.prosody.get('f0_mean_hz'), '{:.0f}'):>6}"
            f"{f(i.prosody.get('words_per_s'), '{:.1f}'):>6}{f(i.first_audio_s):>6}{f(i.rtf):>6}"
        )
    s = summary
    lines.append("-" * len(head))
    lines.append(
        f"{'ALL (' + str(s['items']) + ')':<22}{f(s['seconds'], '{:.1f}'):>6}{f(s['wer']):>6}"
        f"{f(s['keyword_hit_rate']):>5}{f(s['dnsmos_ovrl']):>6}{f(s['dnsmos_sig']):>6}{f(s['dnsmos_bak']):>6}"
        f"{f(s['dnsmos_p808']):>6}{f(s['f0_mean_hz'], '{:.0f}'):>6}{f(s['words_per_s'], '{:.1f}'):>6}"
        f"{f(s['first_audio_s']):>6}{f(s['rtf']):>6}"
    )
    if s.get("wer_sphinx") is not None:
        lines.append(f"WER by pocketsphinx (second opinion): {s['wer_sphinx']:.3f}")
    if s.get("speaker_similarity") is not None:
        lines.append(f"speaker similarity to reference: {s['speaker_similarity']:.3f}")
    return "\n".join(lines)


def write_json(path: str | Path, items: list[ItemResult], summary: dict, extra: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"summary": summary, "items": [asdict(i) for i in items], **(extra or {})}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=_jsonable))
    tmp.replace(path)
    return path


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.bool_):
        return bool(v)
    raise TypeError(f"not JSON serialisable: {type(v)}")


def plot(audio: np.ndarray, rate: int, path: str | Path, title: str = "") -> Path:
    """Waveform, log spectrogram and F0 track in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vivavoce.eval.prosody import f0_track

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(audio.shape[0]) / rate
    fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
    axes[0].plot(t, audio, lw=0.5)
    axes[0].set_ylabel("amplitude")
    axes[0].set_title(title)
    axes[1].specgram(audio + 1e-9, NFFT=512, Fs=rate, noverlap=384, cmap="magma")
    axes[1].set_ylabel("Hz")
    times, f0 = f0_track(audio, rate)
    axes[2].plot(times, np.where(f0 > 0, f0, np.nan), ".", ms=2)
    axes[2].set_ylabel("F0 (Hz)")
    axes[2].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
