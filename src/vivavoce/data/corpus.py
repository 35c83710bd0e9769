"""Plan and build the synthetic spoken-dialogue corpus: user turn + assistant answer per dialogue, extra
renderings in every emotion, and spoken control commands with the reply rendered as asked.

Layout of a corpus folder:
  corpus.json                          preset, seed, text version, vocabularies, voices
  plan/shard-I-of-N.jsonl              every planned utterance with its labels (what `check` holds rows against)
  manifests/SPLIT-shard-I-of-N.jsonl   one row per finished utterance (written only after both FLACs exist)
  audio/16k/SPLIT/ID.flac, audio/native/SPLIT/ID.flac
  rejected-shard-I-of-N.jsonl          answers that failed the speakable filter (never silently dropped)
A rebuild skips utterances whose row and files exist, so a killed build resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vivavoce.data.prompts import TEXT_VERSION, sample_turns
from vivavoce.data.styles import CONTROL_COMMANDS, EMOTIONS, NEUTRAL, Control, Style
from vivavoce.data.voices import ASSISTANT, SPLITS, VOICES, user_voices
from vivavoce.errors import VivavoceError

CORPUS_FORMAT = 1
RATE_16K = 16000


@dataclass(frozen=True)
class Preset:
    name: str
    n_prompts: int  # dialogues (0: every built-in user turn)
    kinds: tuple[str, ...] = ()  # restrict user turns to these kinds
    max_answer_tokens: int = 64
    max_answer_words: int = 40
    user_renderings: int = 1  # distinct voices saying each user turn
    user_emotion_rate: float = 0.3  # chance a plain user turn is said with a random emotion
    emotion_sets: float = 0.1  # fraction of dialogues whose user turn is said in every emotion
    assistant_emotion_sets: float = 0.05  # fraction whose answer is said in every emotion
    control: float = 0.2  # fraction of dialogues with a spoken-control variant
    split_fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)


PRESETS = {
    # Seconds to build (short factual questions with one-sentence answers); used by the tests.
    "tiny": Preset("tiny", 4, kinds=("capital",), max_answer_tokens=20, emotion_sets=0.25,
                   assistant_emotion_sets=0.25, control=0.5, split_fractions=(0.5, 0.25, 0.25)),
    "small": Preset("small", 60, max_answer_tokens=64, emotion_sets=0.2, assistant_emotion_sets=0.1, control=0.3),
    # Every built-in turn; >= 20 hours of speech (see docs/data.md for the measured estimate).
    "default": Preset("default", 0, max_answer_tokens=64, user_renderings=2, emotion_sets=0.25,
                      assistant_emotion_sets=0.2, control=0.5),
}  # fmt: skip


LABEL_KEYS = ("id", "dialogue", "turn", "prompt_id", "kind", "split", "text", "voice", "emotion", "intensity",
              "speed", "pitch_shift", "control", "vocode")  # fmt: skip


@dataclass
class Utterance:
    id: str
    dialogue: str
    turn: str  # "user" | "assistant"
    prompt_id: str
    kind: str
    split: str
    text: str
    voice: str
    emotion: str = "neutral"
    intensity: float = 0.0
    speed: float = 1.0
    pitch_shift: float = 0.0
    control: dict | None = None  # on control-command turns: the target the user asked for
    vocode: bool = False  # resynthesise by WORLD even if neutral (emotion sets: all members alike)

    def style(self) -> Style:
        if self.control is not None and self.turn == "assistant":
            return Control(**self.control).style()
        return Style(self.emotion, self.intensity)

    def labels(self) -> dict:
        return {k: getattr(self, k) for k in LABEL_KEYS}


def parse_shard(spec: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise VivavoceError(f"--shard {spec!r}: expected I/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise VivavoceError(f"--shard {spec!r}: need 0 <= I < N")
    return i, n


def shard_name(shard: tuple[int, int]) -> str:
    return f"shard-{shard[0]}-of-{shard[1]}"


def assign_splits(prompt_ids: list[str], fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Prompt id -> split, by quota over a seeded order (dev and test get at least one prompt each)."""
    order = sorted(prompt_ids, key=lambda p: random.Random(f"split-{seed}-{p}").random())
    n = len(order)
    n_test = max(1, round(n * fractions[2])) if n >= 3 else 0
    n_dev = max(1, round(n * fractions[1])) if n >= 3 else 0
    split = {}
    for k, pid in enumerate(order):
        split[pid] = "test" if k < n_test else "dev" if k < n_test + n_dev else "train"
    return split


def _pick(rng: random.Random, k: int, total: int) -> set[int]:
    return set(rng.sample(range(total), min(total, k))) if k > 0 else set()


def plan(preset: Preset, seed: int, answers: dict[str, str], turns, shard=(0, 1)) -> list[Utterance]:
    """Every utterance of this shard, deterministic from (preset, seed, answers). `turns` are the preset's user
    turns (all shards'), `answers` the speakable answer per turn text (turns without one are skipped)."""
    splits = assign_splits([t.id for t in turns], preset.split_fractions, seed)
    n = len(turns)
    rng = random.Random(f"plan-{preset.name}-{seed}")
    frac = lambda f: 0 if f <= 0 else max(1, round(f * n))  # noqa: E731
    emo_sets = _pick(rng, frac(preset.emotion_sets), n)
    asst_sets = _pick(rng, frac(preset.assistant_emotion_sets), n)
    control_set = _pick(rng, frac(preset.control), n)
    out: list[Utterance] = []
    for k, turn in enumerate(turns):
        if k % shard[1] != shard[0] or turn.text not in answers:
            continue
        r = random.Random(f"dialogue-{seed}-{turn.id}")  # per dialogue: shards and resumes plan identically
        split = splits[turn.id]
        pool = user_voices(split)
        voices = r.sample(pool, min(len(pool), preset.user_renderings))
        base = dict(dialogue=turn.id, prompt_id=turn.id, kind=turn.kind, split=split)
        answer = answers[turn.text]
        for j, voice in enumerate(voices):
            if j == 0 and k in emo_sets:  # the same sentence, same voice, in every emotion
                for emotion in EMOTIONS:
                    style = Style(emotion, 0.0 if emotion == "neutral" else round(r.uniform(0.7, 1.0), 2))
                    out.append(_utt(f"{turn.id}.u0.{emotion}", "user", turn.text, voice.name, style, base, vocode=True))
                continue
            style = NEUTRAL
            if r.random() < preset.user_emotion_rate:
                style = Style(r.choice(EMOTIONS[1:]), round(r.uniform(0.4, 1.0), 2))
            out.append(_utt(f"{turn.id}.u{j}", "user", turn.text, voice.name, style, base))
        out.append(_utt(f"{turn.id}.a", "assistant", answer, ASSISTANT, NEUTRAL, base))
        if k in asst_sets:
            for emotion in EMOTIONS:
                style = Style(emotion, 0.0 if emotion == "neutral" else round(r.uniform(0.7, 1.0), 2))
                out.append(_utt(f"{turn.id}.a.{emotion}", "assistant", answer, ASSISTANT, style, base, vocode=True))
        if k in control_set:
            phrase, control = r.choice(CONTROL_COMMANDS)
            c = control.to_dict()
            said = f"{phrase} {turn.text}"
            out.append(_utt(f"{turn.id}.cu", "user", said, voices[0].name, NEUTRAL, base, control=c))
            out.append(_utt(f"{turn.id}.ca", "assistant", answer, ASSISTANT, control.style(), base, control=c))
    return out


def _utt(uid, turn, text, voice, style: Style, base: dict, control: dict | None = None, vocode=False) -> Utterance:
    labels = style.labels()
    return Utterance(id=uid, turn=turn, text=text, voice=voice, control=control, vocode=vocode,
                     emotion=labels["emotion"], intensity=labels["intensity"], speed=labels["speed"],
                     pitch_shift=labels["pitch_shift"], **base)  # fmt: skip


# ---- files --------------------------------------------------------------------------------------------------


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_jsonl_atomic(path: Path, rows) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: Path) -> tuple[list[dict], int]:
    """Rows of a JSONL file and the number of unreadable lines (a line cut off by a kill, or garbage)."""
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError
            rows.append(row)
        except ValueError:
            bad += 1
    return rows, bad


def audio_paths(utt_id: str, split: str) -> tuple[str, str]:
    return f"audio/16k/{split}/{utt_id}.flac", f"audio/native/{split}/{utt_id}.flac"


# ---- synthesis (in worker processes) -----------------------------------------------------------------------

_renderer = None


def _worker_init() -> None:
    os.environ.setdefault("VIVAVOCE_TTS_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def synthesize(job: tuple[str, dict], steady_take: bool = False) -> tuple[dict | None, str | None]:
    """(manifest row, None) or (None, error line) for one planned utterance; writes both FLACs atomically.
    `steady_take`: Piper speaks its one most likely take (`PiperSettings.steady`), and the row says `steady`."""
    global _renderer
    import numpy as np

    from vivavoce.audio.io import check_audio, resample, write_audio
    from vivavoce.data.voices import Renderer, get_voice
    from vivavoce.speechtools.tts import espeak_phonemes

    root, labels = job
    try:
        if _renderer is None:
            _renderer = Renderer()
        utt = Utterance(**labels)
        voice = get_voice(utt.voice)
        if steady_take:
            voice = dataclasses.replace(voice, piper=voice.piper.steady())
        base = None
        if utt.vocode and voice.engine != "espeak":  # an emotion set: every member from one Piper rendering
            key = hashlib.sha1(f"{voice.name}|{voice.piper}|{utt.text}".encode()).hexdigest()[:16]
            base = Path(root) / "piper-base" / f"{key}.wav"
        audio, rate, vocoded = _renderer.render(voice, utt.text, utt.style(), utt.vocode, base)
        check_audio(audio, rate, utt.id)
        p16, pnat = audio_paths(utt.id, utt.split)
        write_audio(Path(root) / pnat, audio, rate)
        write_audio(Path(root) / p16, resample(audio, rate, RATE_16K), RATE_16K)
        row = dict(labels)
        row.update(engine=voice.engine, vocoded=vocoded, audio_16k=p16, audio_native=pnat, native_rate=int(rate),
                   duration=round(audio.size / rate, 4), phonemes=espeak_phonemes(utt.text, voice.phoneme_voice),
                   phoneme_voice=voice.phoneme_voice, timings=None,
                   peak=round(float(np.max(np.abs(audio))), 4))  # fmt: skip
        if steady_take:
            row["steady"] = True
        return row, None
    except Exception as e:  # reported and counted by the build, never silently skipped
        return None, f"{labels.get('id')}: {e.__class__.__name__}: {e}"


# ---- build --------------------------------------------------------------------------------------------------


def default_answers_cache() -> Path:
    from vivavoce.model.backbone import cache_root

    return cache_root() / "data" / f"answers-{TEXT_VERSION}.jsonl"


def build(preset: Preset, out: Path, seed: int = 0, workers: int = 2, shard=(0, 1), answers_cache: Path | None = None,
          backbone: str = "smollm2", log=print) -> dict:  # fmt: skip
    from tqdm import tqdm

    from vivavoce.data.answers import AnswerCache, write_answers
    from vivavoce.data.normalize import speakable_answer
    from vivavoce.model.textgen import TextGenConfig

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VivavoceError(f"{out} is a file, not a corpus folder")
    meta_path = out / "corpus.json"
    meta = corpus_meta(preset, seed, backbone)
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if {k: old.get(k) for k in ("preset", "seed", "text_version", "backbone")} != {
            k: meta[k] for k in ("preset", "seed", "text_version", "backbone")
        }:
            raise VivavoceError(f"{out} holds a corpus of another preset/seed/text version; use a new folder")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(meta_path, json.dumps(meta, indent=1))
    sname = shard_name(shard)

    turns = sample_turns(preset.n_prompts, seed, preset.kinds)
    mine = [t for k, t in enumerate(turns) if k % shard[1] == shard[0]]
    config = TextGenConfig(max_new_tokens=preset.max_answer_tokens)
    cache = AnswerCache(answers_cache or default_answers_cache())
    bar = lambda xs: tqdm(xs, desc="answers", unit="answer", file=sys.stderr)  # noqa: E731
    raw = write_answers([t.text for t in mine], cache, config, backbone, progress=bar)
    answers, rejected = {}, []
    for t in mine:
        text, reason = speakable_answer(raw[t.text], preset.max_answer_words)
        if text is None:
            rejected.append({"prompt_id": t.id, "prompt": t.text, "answer": raw[t.text], "reason": reason})
        else:
            answers[t.text] = text
    write_jsonl_atomic(out / f"rejected-{sname}.jsonl", rejected)

    utts = plan(preset, seed, answers, turns, shard)
    write_jsonl_atomic(out / "plan" / f"{sname}.jsonl", [u.labels() for u in utts])

    done = _resume(out, sname, {u.id for u in utts})
    todo = [u for u in utts if u.id not in done]
    log(f"{len(utts)} utterances planned in {sname} ({len(rejected)} answers rejected, see rejected-{sname}.jsonl); "
        f"{len(done)} already built, {len(todo)} to synthesise")  # fmt: skip
    errors: list[str] = []
    files = {}
    jobs = [(str(out), u.labels()) for u in todo]
    try:
        if workers <= 1:
            _worker_init()
            results = map(synthesize, jobs)
            pool = None
        else:
            import multiprocessing as mp

            pool = mp.get_context("spawn").Pool(workers, initializer=_worker_init)
            results = pool.imap_unordered(synthesize, jobs)
        for row, error in tqdm(results, total=len(jobs), desc="synthesis", unit="utt", file=sys.stderr):
            if error:
                errors.append(error)
                continue
            f = files.get(row["split"])
            if f is None:
                (out / "manifests").mkdir(exist_ok=True)
                f = files[row["split"]] = (out / "manifests" / f"{row['split']}-{sname}.jsonl").open("a")
            f.write(json.dumps(row) + "\n")  # one write per row: a kill leaves at most one partial last line
            f.flush()
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        for f in files.values():
            f.close()
        if workers <= 1 and _renderer is not None:
            _renderer.close()
    if errors:
        write_text_atomic(out / f"errors-{sname}.txt", "\n".join(errors) + "\n")
    return {"planned": len(utts), "built": len(utts) - len(todo) + len(jobs) - len(errors), "errors": errors,
            "rejected_answers": len(rejected)}  # fmt: skip


def corpus_meta(preset: Preset, seed: int, backbone: str) -> dict:
    return {
        "format": CORPUS_FORMAT, "preset": preset.name, "preset_config": dataclasses.asdict(preset), "seed": seed,
        "text_version": TEXT_VERSION, "backbone": backbone, "emotions": list(EMOTIONS), "splits": list(SPLITS),
        "rate_16k": RATE_16K,
        "voices": {v.name: {"engine": v.engine, "split": v.split} for v in VOICES},
    }  # fmt: skip


def _resume(out: Path, sname: str, planned: set[str]) -> set[str]:
    """Ids already built (row + both files); manifests rewritten without partial, stale or duplicate rows."""
    done: set[str] = set()
    for path in sorted((out / "manifests").glob(f"*-{sname}.jsonl")):
        rows, _ = read_jsonl(path)
        keep = []
        for row in rows:
            rid = row.get("id")
            files = all((out / str(row.get(k, ""))).is_file() for k in ("audio_16k", "audio_native"))
            if rid in planned and rid not in done and files:
                done.add(rid)
                keep.append(row)
        write_jsonl_atomic(path, keep)
    return done
