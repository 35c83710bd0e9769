"""Audit a built corpus: every planned utterance must have a manifest row whose files are readable, finite,
not silent, as long as the row says, and whose labels are in the vocabularies and agree with the plan."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from vivavoce.data.corpus import LABEL_KEYS as LABELS, RATE_16K, read_jsonl
from vivavoce.data.styles import EMOTIONS, PITCH_RANGE, SPEED_RANGE
from vivavoce.data.voices import ASSISTANT, SPLITS, VOICE_BY_NAME
from vivavoce.errors import VivavoceError

SILENCE_PEAK = 3e-4
DURATION_TOLERANCE_S = 0.02


@dataclass
class Report:
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    rows: int = 0
    planned: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, category: str, message: str) -> None:
        self.problems[category].append(message)

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def summary(self) -> dict:
        return {"planned": self.planned, "rows": self.rows, "ok": self.ok,
                "problems": {k: len(v) for k, v in self.problems.items() if v}, "notes": self.notes}  # fmt: skip


def load_corpus(root: Path) -> tuple[dict, list[dict], list[dict], Report]:
    """(corpus.json, planned rows, manifest rows, report with any unreadable-line problems)."""
    root = Path(root)
    report = Report()
    meta_path = root / "corpus.json"
    if not meta_path.is_file():
        raise VivavoceError(f"{root}: not a corpus (no corpus.json); build one with `vivavoce data build`")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as e:
        raise VivavoceError(f"{meta_path}: unreadable ({e})") from None
    planned, rows = [], []
    for kind, pattern, target in (("plan", "plan/*.jsonl", planned), ("manifest", "manifests/*.jsonl", rows)):
        for path in sorted(root.glob(pattern)):
            got, bad = read_jsonl(path)
            target.extend(got)
            if bad:
                report.add("corrupt", f"{path.relative_to(root)}: {bad} unreadable {kind} line(s)")
    return meta, planned, rows, report


def check(root: Path, read_audio_files: bool = True) -> Report:
    root = Path(root)
    meta, planned, rows, report = load_corpus(root)
    report.planned, report.rows = len(planned), len(rows)
    if not planned:
        report.add("missing", "no plan files: the build never got past planning")
    plan = {p["id"]: p for p in planned}
    seen: set[str] = set()
    for row in rows:
        rid = row.get("id")
        if rid in seen:
            report.add("mislabelled", f"{rid}: duplicate manifest row")
            continue
        seen.add(rid)
        if rid not in plan:
            report.add("mislabelled", f"{rid}: manifest row not in any plan")
            continue
        _check_labels(row, plan[rid], report)
        if read_audio_files:
            _check_audio(root, row, report)
    for pid in plan.keys() - seen:
        report.add("missing", f"{pid}: planned, no manifest row")
    _check_disjoint(planned, report)
    for path in sorted(root.glob("rejected-*.jsonl")):
        got, _ = read_jsonl(path)
        if got:
            report.notes.append(f"{len(got)} answers rejected as unspeakable in {path.name} (their dialogues are "
                                f"not planned)")  # fmt: skip
    for path in sorted(root.glob("errors-*.txt")):
        report.notes.append(f"{path.name}: synthesis errors of the last build")
    return report


def _check_labels(row: dict, planned: dict, report: Report) -> None:
    rid = row["id"]
    bad = []
    if row.get("emotion") not in EMOTIONS:
        bad.append(f"emotion {row.get('emotion')!r} not in {EMOTIONS}")
    if row.get("split") not in SPLITS:
        bad.append(f"split {row.get('split')!r} not in {SPLITS}")
    if row.get("turn") not in ("user", "assistant"):
        bad.append(f"turn {row.get('turn')!r}")
    if not _number_in(row.get("intensity"), 0.0, 1.0):
        bad.append(f"intensity {row.get('intensity')!r} outside 0..1")
    if not _number_in(row.get("speed"), *SPEED_RANGE):
        bad.append(f"speed {row.get('speed')!r} outside {SPEED_RANGE}")
    if not _number_in(row.get("pitch_shift"), *PITCH_RANGE):
        bad.append(f"pitch shift {row.get('pitch_shift')!r} outside {PITCH_RANGE}")
    voice = VOICE_BY_NAME.get(row.get("voice"))
    if voice is None:
        bad.append(f"unknown voice {row.get('voice')!r}")
    elif (row.get("turn") == "assistant") != (voice.name == ASSISTANT):
        bad.append(f"{row.get('turn')} turn in voice {voice.name}")
    elif voice.name != ASSISTANT and voice.split != row.get("split"):
        bad.append(f"voice {voice.name} belongs to {voice.split}, row is in {row.get('split')}")
    if not str(row.get("text", "")).strip():
        bad.append("empty text")
    if not str(row.get("phonemes", "")).strip():
        bad.append("no phonemes")
    differ = [k for k in LABELS if row.get(k) != planned.get(k)]
    if differ:
        bad.append("labels differ from the plan: " + ", ".join(differ))
    for b in bad:
        report.add("mislabelled", f"{rid}: {b}")


def _number_in(x, lo: float, hi: float) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) and lo <= x <= hi


def _check_audio(root: Path, row: dict, report: Report) -> None:
    rid = row["id"]
    for key, rate in (("audio_16k", RATE_16K), ("audio_native", row.get("native_rate"))):
        rel = row.get(key)
        path = root / str(rel)
        if not rel or not path.is_file():
            report.add("missing", f"{rid}: {key} file {rel} is missing")
            continue
        try:
            audio, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as e:
            report.add("corrupt", f"{rid}: {rel} unreadable ({str(e).strip().splitlines()[-1:] or e})")
            continue
        if audio.size == 0:
            report.add("corrupt", f"{rid}: {rel} holds no samples")
            continue
        if not np.all(np.isfinite(audio)):
            report.add("corrupt", f"{rid}: {rel} holds NaN or infinite samples")
            continue
        if float(np.max(np.abs(audio))) < SILENCE_PEAK:
            report.add("corrupt", f"{rid}: {rel} is silent")
            continue
        if file_rate != rate:
            report.add("mislabelled", f"{rid}: {rel} is at {file_rate} Hz, expected {rate}")
        seconds = audio.shape[0] / file_rate
        if not isinstance(row.get("duration"), (int, float)) or abs(seconds - row["duration"]) > DURATION_TOLERANCE_S:
            report.add("mislabelled", f"{rid}: {rel} lasts {seconds:.3f} s, the row says {row.get('duration')}")


def _check_disjoint(planned: list[dict], report: Report) -> None:
    for key in ("prompt_id", "voice"):
        splits = defaultdict(set)
        for p in planned:
            if key == "voice" and p.get("voice") == ASSISTANT:
                continue  # the assistant's one voice is in every split by design
            splits[p.get(key)].add(p.get("split"))
        for value, s in sorted(splits.items(), key=lambda kv: str(kv[0])):
            if len(s) > 1:
                report.add("mislabelled", f"{key} {value} is in several splits: {sorted(s)}")


def stats(root: Path) -> dict:
    meta, planned, rows, _ = load_corpus(Path(root))
    out = {"preset": meta.get("preset"), "seed": meta.get("seed"), "planned": len(planned), "built": len(rows),
           "hours": round(sum(r.get("duration", 0) for r in rows) / 3600, 4)}  # fmt: skip
    for key in ("split", "turn", "voice", "emotion", "kind"):
        out[f"per_{key}"] = dict(sorted(Counter(r.get(key) for r in rows).items(), key=lambda kv: str(kv[0])))
    out["hours_per_split"] = {
        s: round(sum(r.get("duration", 0) for r in rows if r.get("split") == s) / 3600, 4) for s in SPLITS
    }
    out["control_turns"] = sum(1 for r in rows if r.get("control") and r.get("turn") == "assistant")
    out["dialogues"] = len({r.get("dialogue") for r in rows})
    return out
