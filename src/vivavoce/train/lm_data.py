"""Speech-LM training data: every utterance's codec tokens and text tokens, cached once; task examples from them.

    python -m vivavoce.train.lm_data render --preset small --out corpus/joe-align --limit 800
    python -m vivavoce.train.lm_data tokenize corpus/small corpus/joe-align --out cache/lm/tokens.jsonl

`render` speaks extra sentences in the assistant's voice (Piper joe) into a corpus-shaped folder: the built-in
user turns whose prompts are not in the dialogue corpus's dev/test splits. They are cheap alignment data
(text <-> joe speech) beside the small dialogue corpus. `--user-voices` says them as user turns in the train users'
voices; `--answers` speaks the frozen LLM's answers to them (`answers`) in joe's voice, which makes reading data of
the kind guided mode must read and, paired with every user rendering of the question, spoken dialogues. With
both, the answers are said as user turns in the users' voices: asr over text far more varied than the templates.
`tokenize` runs the shipped codec over every utterance's 16 kHz audio and the backbone tokenizer over its text,
appending one JSONL row per utterance (ids only, never pickle), so a killed run resumes and training never
touches audio. Examples (`build_examples`) are plain conversations: the model's processor lays them out.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from vivavoce.errors import VivavoceError
from vivavoce.model.processor import ChatTurn

ALIGN_SHARD = "align"  # manifest name: manifests/train-align.jsonl
ANSWER_PREFIX = "turn-ans-"  # ids of the spoken LLM answers (`render --answers`)
META_KEYS = ("id", "dialogue", "turn", "split", "voice", "emotion", "control", "text", "prompt_id")


# ---- manifests --------------------------------------------------------------------------------------------------


def corpus_rows(corpus: str | Path) -> list[dict]:
    """All manifest rows of a corpus folder (`vivavoce data` layout), audio paths made absolute."""
    from vivavoce.train.features import read_manifest

    root = Path(corpus)
    paths = sorted((root / "manifests").glob("*.jsonl"))
    if not paths:
        raise VivavoceError(f"{root}: no manifests/*.jsonl (build one with `vivavoce data build`)")
    rows = []
    for path in paths:
        for row in read_manifest(path):
            for key in ("dialogue", "turn", "split", "text"):
                if not row.get(key):
                    raise VivavoceError(f"{path}: row {row['id']} has no {key!r}")
            if row["turn"] not in ("user", "assistant"):
                raise VivavoceError(f"{path}: row {row['id']} has turn {row['turn']!r} (user|assistant)")
            rows.append(row)
    return rows


# ---- extra joe renderings (alignment data) ---------------------------------------------------------------------


def alignment_texts(preset: str, limit: int, seed: int = 0, takes: int = 1) -> list[tuple[str, str]]:
    """(id, text) to speak in joe's voice: built-in user turns, except those the dialogue corpus of `preset` and
    `seed` puts in dev or test (held-out questions stay unseen, even as text). Its answers are spoken already.
    `takes` > 1 speaks each text that many times (ids `turn-X`, `turn-X.t1`, ...): Piper samples rhythm and
    intonation afresh each time, so every take aligns the same text with other durations."""
    from vivavoce.data.corpus import PRESETS, assign_splits
    from vivavoce.data.prompts import sample_turns, user_turns

    if preset not in PRESETS:
        raise VivavoceError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    p = PRESETS[preset]
    planned = sample_turns(p.n_prompts, seed, p.kinds)
    splits = assign_splits([t.id for t in planned], p.split_fractions, seed)
    held_out = {pid for pid, split in splits.items() if split != "train"}
    turns = [t for t in user_turns() if t.id not in held_out]
    random.Random(f"align-{seed}").shuffle(turns)
    turns = turns[:limit] if limit > 0 else turns
    return [(f"turn-{t.id}" + (f".t{k}" if k else ""), t.text) for k in range(takes) for t in turns]


def user_voice_texts(texts: list[tuple[str, str]], seed: int = 0, takes: int = 1) -> list[tuple[str, str, str]]:
    """(id, text, voice): each text `takes` times, each time in another of the train users' voices (taken in
    turn, shuffled by `seed`), so the alignment sentences also teach speech -> text (asr) across voices."""
    from vivavoce.data.voices import user_voices

    names = [v.name for v in user_voices("train")]
    random.Random(f"voices-{seed}").shuffle(names)
    step = max(1, len(names) // max(1, takes))  # takes of one text fall on different voices
    voiced = [(uid, text, names[(i + k * step) % len(names)]) for k in range(takes) for i, (uid, text) in enumerate(texts)]
    return [(f"{uid}.{voice}", text, voice) for uid, text, voice in voiced]


def drill_texts(limit: int = 0, seed: int = 0) -> list[tuple[str, str]]:
    """(id, text) of the hearing drills (`prompts.drill_texts`), shuffled by `seed`, the first `limit` (0: all).
    Ids `drill-...`: not built-in questions, so no s2t targets are wanted for them."""
    import hashlib

    from vivavoce.data.prompts import drill_texts as texts

    out = [(f"drill-{hashlib.sha1(t.encode()).hexdigest()[:10]}", t) for t in texts()]
    random.Random(f"drill-{seed}").shuffle(out)
    return out[:limit] if limit > 0 else out


def answer_texts(answers: str | Path, limit: int = 0) -> list[tuple[str, str]]:
    """(id, text) for each distinct speakable answer in an `answers` file, to be spoken in joe's voice as a reply.
    The ids hash the text, so a rerun (or another answers file) finds what is already spoken."""
    import hashlib

    texts = sorted({r["answer"] for r in _answer_rows(answers) if r.get("answer")})  # sampled ones too
    random.Random("answers").shuffle(texts)  # a --limit takes a sample, not the alphabet's start
    texts = texts[:limit] if limit > 0 else texts
    return [(ANSWER_PREFIX + hashlib.sha1(t.encode()).hexdigest()[:12], t) for t in texts]


def render_alignment(texts: list[tuple[str, str]] | list[tuple[str, str, str]], out: str | Path, log=print,
                     shard: str = ALIGN_SHARD, steady: bool = False) -> int:
    """Speak each text into corpus folder `out` (resumable: finished rows are kept): in the assistant voice as
    its reply, or, for (id, text, voice) triples, in that user voice as a user turn. `steady`: Piper's one most
    likely take instead of a sampled one. Two sampled takes of a text share only ~0.42 of their codes
    (benchmarks/codec_takes.py), so a reader trained on steady takes has one target per text (round 16)."""
    from vivavoce.data.corpus import _resume, _worker_init, read_jsonl, synthesize
    from vivavoce.data.voices import ASSISTANT

    out = Path(out)
    manifest = out / "manifests" / f"train-{shard}.jsonl"
    # read here and again by _resume: this check must come before _resume rewrites the manifest, so that a folder
    # of the other kind is refused untouched
    if manifest.is_file() and any(bool(r.get("steady")) != steady for r in read_jsonl(manifest)[0]):
        kind = "steady" if steady else "sampled"
        raise VivavoceError(f"{out} holds takes of the other kind; render {kind} takes into a folder of their own")
    manifest.parent.mkdir(parents=True, exist_ok=True)
    texts = [(t[0], t[1], t[2] if len(t) > 2 else ASSISTANT) for t in texts]
    done = _resume(out, shard, {t[0] for t in texts})
    todo = [t for t in texts if t[0] not in done]
    log(f"{len(texts)} sentences, {len(done)} already spoken, {len(todo)} to speak")
    _worker_init()
    errors = 0
    with manifest.open("a") as f:
        for n, (uid, text, voice) in enumerate(todo, 1):
            turn = "assistant" if voice == ASSISTANT else "user"
            labels = dict(id=uid, dialogue=uid, turn=turn, prompt_id=uid, kind="align", split="train",
                          text=text, voice=voice, emotion="neutral", intensity=0.0, speed=1.0, pitch_shift=0.0,
                          control=None, vocode=False)  # fmt: skip
            row, error = synthesize((str(out), labels), steady_take=steady)
            if error:
                errors += 1
                log(f"  error: {error}")
                continue
            f.write(json.dumps(row) + "\n")
            f.flush()
            if n % 50 == 0:
                log(f"  {n}/{len(todo)} spoken")
    return errors


# ---- the frozen LLM's answers to the renderings' questions ------------------------------------------------------


def rendering_questions(rows: list[dict]) -> list[str]:
    """Distinct texts of the alignment renderings (single sentences, ids `turn-...`): built-in user questions, not
    the spoken answers (`turn-ans-...`)."""
    return sorted({r["text"] for r in rows if str(r["dialogue"]).startswith("turn-") and r["split"] == "train"
                   and not str(r["dialogue"]).startswith(ANSWER_PREFIX)})  # fmt: skip


def said_answer_texts(rows: list[dict]) -> list[str]:
    """Distinct texts of the LLM's answers said as user turns (`render --answers --user-voices`): varied user
    speech whose own replies (`answers --said`) make s2t targets beyond the templated questions."""
    return sorted({r["text"] for r in rows if str(r["dialogue"]).startswith(ANSWER_PREFIX) and r["turn"] == "user"
                   and r["split"] == "train"})  # fmt: skip


def preset_questions(preset: str, seed: int = 0) -> list[str]:
    """The distinct questions that `render --preset` speaks (all of them, sorted): what `rendering_questions` finds
    in their token cache, known before anything is spoken, so the answers need not wait for the renderings."""
    return sorted({text for _, text in alignment_texts(preset, 0, seed)})


def write_rendering_answers(questions: list[str], out: str | Path, backbone: str = "smollm2", device: str = "cpu",
                            batch_size: int = 64, max_new_tokens: int = 64, max_words: int = 40, log=print) -> int:
    """JSONL `out`, one row per question (`rendering_questions` or `preset_questions`): {"text", "answer"} with the
    frozen LLM's own greedy answer (the corpus's system prompt and settings) made speakable as the corpus makes
    its answers, or answer null and the reason it was rejected. These are s2t targets for every rendering of the
    question, in any voice (`LMTrainConfig.answers`). Raw answers go through the corpus's answer cache, so none is
    written twice."""
    from vivavoce.data.answers import AnswerCache, write_answers
    from vivavoce.data.corpus import default_answers_cache, write_jsonl_atomic
    from vivavoce.data.normalize import speakable_answer
    from vivavoce.model.textgen import TextGenConfig

    raw = write_answers(questions, AnswerCache(default_answers_cache()), TextGenConfig(max_new_tokens=max_new_tokens),
                        backbone, batch_size=batch_size, device=device)  # fmt: skip
    rows = []
    for q in questions:
        text, reason = speakable_answer(raw[q], max_words)
        rows.append({"text": q, "answer": text, "raw": raw[q], **({"rejected": reason} if text is None else {})})
    write_jsonl_atomic(Path(out), rows)
    kept = sum(r["answer"] is not None for r in rows)
    log(f"{kept} speakable answers of {len(rows)} questions")
    return kept


def write_sampled_answers(questions: list[str], out: str | Path, samples: int, temperature: float = 0.7,
                          seed: int = 0, backbone: str = "smollm2", device: str = "cpu", batch_size: int = 64,
                          max_new_tokens: int = 64, max_words: int = 40, log=print) -> int:  # fmt: skip
    """More answers of the frozen LLM to the renderings' questions: `samples` sampled ones per question (rows
    {"text", "answer", "sample": k}), made speakable as the greedy ones. Reading data in the LLM's own words and
    vocabulary (`render --answers`), where the greedy answers give one text per question. Appends to `out` batch by
    batch and resumes; sample k of a question is the same in every run (seeded by `seed`, k and the batch)."""
    import torch

    from vivavoce.data.normalize import speakable_answer
    from vivavoce.model.backbone import BackboneConfig, load_backbone
    from vivavoce.model.textgen import TextGenConfig, answer_batch

    if samples < 1 or temperature <= 0:
        raise VivavoceError("sampled answers need --samples >= 1 and --temperature > 0")
    out = Path(out)
    done = {(r["text"], r["sample"]) for r in _answer_rows(out)} if out.is_file() else set()
    bb = load_backbone(BackboneConfig(source=backbone))
    bb.model.to(device)
    kept = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    for k in range(1, samples + 1):
        for b in range(0, len(questions), batch_size):
            batch = questions[b : b + batch_size]
            if all((q, k) in done for q in batch):
                continue
            gen = torch.Generator().manual_seed(seed * 1_000_003 + k * 10_007 + b)
            raw = answer_batch(bb, batch, TextGenConfig(max_new_tokens=max_new_tokens), batch_size=batch_size,
                               temperature=temperature, generator=gen)  # fmt: skip
            with out.open("a") as f:
                for q, a in zip(batch, raw):
                    if (q, k) in done:  # the batch is redone whole, so that every sample keeps its seed
                        continue
                    text, reason = speakable_answer(a, max_words)
                    kept += text is not None
                    row = {"text": q, "answer": text, "sample": k, "raw": a}
                    f.write(json.dumps({**row, **({"rejected": reason} if text is None else {})}) + "\n")
            log(f"sample {k}: {min(b + batch_size, len(questions))}/{len(questions)} questions")
    log(f"{kept} new speakable sampled answers")
    return kept


def _answer_rows(path: str | Path) -> list[dict]:
    """The rows of an answers file (`lm_data answers`, greedy or sampled)."""
    from vivavoce.data.corpus import read_jsonl

    if not Path(path).is_file():
        raise VivavoceError(f"{path}: no answers file (write it with `python -m vivavoce.train.lm_data answers`)")
    return read_jsonl(Path(path))[0]


def load_answers(path: str | Path) -> dict[str, str]:
    """Question -> the LLM's greedy answer (s2t targets); sampled answers in the file are left out."""
    return {r["text"]: r["answer"] for r in _answer_rows(path) if r.get("answer") and not r.get("sample")}


# ---- tokens -----------------------------------------------------------------------------------------------------


def tokenize_corpora(corpora: list[str | Path], out: str | Path, codec=None, tokenizer=None, log=print) -> list[dict]:
    """Token rows of every utterance of `corpora`, computed once and appended to JSONL `out` (resumes). Each row
    records the codec tokenizer's fingerprint: rows of another tokenizer are redone, never mixed in."""
    from vivavoce.audio.io import AudioLimits, read_audio
    from vivavoce.data.corpus import read_jsonl

    if codec is None:
        from vivavoce.codec import Codec

        codec = Codec.load()
    out = Path(out)
    have: dict[str, dict] = {}
    if out.is_file():
        rows, _ = read_jsonl(out)  # a line cut by a kill is dropped and redone
        have = {r["key"]: r for r in rows if "speech_ids" in r and r.get("codec") == codec.tokenizer_fingerprint}
    todo = []
    for corpus in corpora:
        name = Path(corpus).resolve().name
        for row in corpus_rows(corpus):
            key = f"{name}/{row['id']}"
            if key not in have:
                todo.append((key, name, row))
    # rows of a cache from before the onsets (or the phone onsets, `split_phone_track`)
    stale = [r for r in have.values() if "word_onsets" not in r or "phone_onsets" not in r]
    log(f"{len(have)} utterances already tokenised, {len(todo)} to do, {len(stale)} to align")
    if todo or stale:
        if tokenizer is None:
            from vivavoce.model.backbone import load_backbone

            tokenizer = load_backbone().tokenizer
        from vivavoce.model.processor import SpeechLMProcessor

        proc = SpeechLMProcessor(tokenizer)
        for n, r in enumerate(stale, 1):
            r["word_onsets"], r["phone_onsets"] = onsets_of(r, proc, codec)
            if n % 500 == 0:
                log(f"  {n}/{len(stale)} aligned")
        if stale:  # rewritten whole, through a temporary file: a kill leaves the old cache
            tmp = out.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in have.values()))
            tmp.replace(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            for n, (key, name, row) in enumerate(todo, 1):
                audio = read_audio(row["audio"], 16000, AudioLimits(max_seconds=60.0, reject_silence=False))
                entry = {"key": key, "corpus": name, **{k: row.get(k) for k in META_KEYS}}
                entry["text_ids"] = tokenizer.encode(row["text"], add_special_tokens=False)
                entry["speech_ids"] = [int(i) for i in codec.encode(audio)]
                entry.update(codec=codec.tokenizer_fingerprint, token_rate=codec.token_rate)
                entry["word_onsets"], entry["phone_onsets"] = onsets_of(entry, proc, codec)
                f.write(json.dumps(entry) + "\n")
                f.flush()
                have[key] = entry
                if n % 100 == 0:
                    log(f"  {n}/{len(todo)} tokenised")
    replies = [r for r in have.values() if r["turn"] == "assistant"]
    log(f"word onsets measured for {sum(bool(r.get('word_onsets')) for r in replies)} of {len(replies)} replies")
    return list(have.values())


def onsets_of(row: dict, proc, codec) -> tuple[list | None, list | None]:
    """Word onsets and phone onsets (`lm_align.word_onsets`) of an assistant utterance (the speech of guided
    replies); None for user turns, failures and a codec without a CTC tokenizer to align with."""
    from vivavoce.train.lm_align import word_onsets

    if row["turn"] != "assistant" or not row["text_ids"] or getattr(codec, "tokenizer", None) is None:
        return None, None
    found = word_onsets(row["speech_ids"], proc.words(row["text_ids"]), len(row["text_ids"]), codec.tokenizer, True)
    return found if found is not None else (None, None)


def load_tokens(path: str | Path) -> list[dict]:
    from vivavoce.data.corpus import read_jsonl

    path = Path(path)
    if not path.is_file():
        raise VivavoceError(f"{path}: no token cache (make it with `python -m vivavoce.train.lm_data tokenize`)")
    rows, _ = read_jsonl(path)
    rows = [r for r in rows if isinstance(r.get("speech_ids"), list) and isinstance(r.get("text_ids"), list)]
    if not rows:
        raise VivavoceError(f"{path}: holds no tokenised utterances")
    return rows


# ---- examples ---------------------------------------------------------------------------------------------------


@dataclass
class Example:
    task: str  # "tts" | "asr" | "s2s" | "s2s_guided" | "s2t"
    mode: str  # the processor's system prompt: "tts" | "asr" (alignment) | "s2s" | "s2t" (dialogue)
    turns: list[ChatTurn] = field(default_factory=list)
    split: str = "train"
    source: str = ""  # utterance keys, for tracing
    heard: str = ""  # s2t: the words of the user's speech, which a distilling teacher reads as text instead


@dataclass
class ExampleConfig:
    tts: bool = True  # text -> its speech in joe's voice, text-guided (text stream leads, speech follows)
    tts_true: bool = True  # the same with the reply spoken only (true mode: no text stream)
    asr: bool = True  # speech (any voice) -> its transcript
    s2s: bool = True  # dialogue: user speech -> the assistant's spoken answer (true mode)
    s2s_guided: bool = True  # dialogue: user speech -> the answer as text and speech (text-guided mode)
    s2t: bool = True  # dialogue: user speech -> the frozen LLM's own text answer
    max_speech: int = 400  # tokens (32 s); longer utterances are skipped


def build_examples(rows: list[dict], cfg: ExampleConfig = ExampleConfig(), split: str = "train",
                   answers: dict[str, str] | None = None) -> list[Example]:
    """Task examples from token rows of one split. Alignment: every plain (neutral, uncontrolled) assistant
    utterance is joe reading a text (tts); every utterance gives speech -> transcript (asr). Dialogue: each user
    rendering (any voice, any emotion) with its dialogue's plain answer; a control turn with the controlled answer."""
    rows = [r for r in rows if r["split"] == split and 0 < len(r["speech_ids"]) <= cfg.max_speech]
    out: list[Example] = []
    for r in rows:
        plain = r["turn"] == "assistant" and r.get("emotion", "neutral") == "neutral" and not r.get("control")
        if plain and cfg.tts:
            reply = ChatTurn("assistant", r["text"], r["speech_ids"], onsets=r.get("word_onsets"),
                             phone_onsets=r.get("phone_onsets"))
            out.append(Example("tts", "tts", [ChatTurn("user", r["text"]), reply], split, r["key"]))
        if plain and cfg.tts_true:
            out.append(Example("tts_true", "tts", [ChatTurn("user", r["text"]),
                                                   ChatTurn("assistant", None, r["speech_ids"])], split, r["key"]))
        if cfg.asr:
            turns = [ChatTurn("user", None, r["speech_ids"]), ChatTurn("assistant", r["text"])]
            out.append(Example("asr", "asr", turns, split, r["key"]))
        if cfg.s2t and answers and str(r["dialogue"]).startswith("turn-") and r["text"] in answers:
            turns = [ChatTurn("user", None, r["speech_ids"]), ChatTurn("assistant", answers[r["text"]])]
            out.append(Example("s2t", "s2t", turns, split, r["key"], heard=r["text"]))
    out += _spoken_answer_dialogues(rows, cfg, split, answers or {})
    by_dialogue: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if not str(r["dialogue"]).startswith("turn-"):  # renderings are single sentences, not dialogues
            by_dialogue.setdefault((r.get("corpus", ""), r["dialogue"]), []).append(r)
    for _, group in sorted(by_dialogue.items()):
        answers = {("control" if r.get("control") else "plain"): r for r in group
                   if r["turn"] == "assistant" and (r.get("control") or r["id"].endswith(".a"))}  # fmt: skip
        for u in (r for r in group if r["turn"] == "user"):
            a = answers.get("control" if u.get("control") else "plain")
            if a is None:
                continue
            pair = f"{u['key']}>{a['key']}"
            user = ChatTurn("user", None, u["speech_ids"])
            if cfg.s2s:
                out.append(Example("s2s", "s2s", [user, ChatTurn("assistant", None, a["speech_ids"])], split, pair))
            if cfg.s2s_guided:
                reply = ChatTurn("assistant", a["text"], a["speech_ids"], onsets=a.get("word_onsets"),
                                 phone_onsets=a.get("phone_onsets"))
                out.append(Example("s2s_guided", "s2s", [user, reply], split, pair))
            if cfg.s2t:
                out.append(Example("s2t", "s2t", [user, ChatTurn("assistant", a["text"])], split, pair, heard=u["text"]))
    return out


def _spoken_answer_dialogues(rows: list[dict], cfg: ExampleConfig, split: str, answers: dict[str, str]) -> list[Example]:
    """s2s and s2s_guided from the renderings: a question said in a user voice, answered by joe saying the LLM's
    answer to it (`render --answers`). The dialogue corpus alone gives ~100 such pairs; this gives one per take."""
    spoken = {r["text"]: r for r in rows if str(r["dialogue"]).startswith(ANSWER_PREFIX) and r["turn"] == "assistant"}
    out: list[Example] = []
    if not spoken or not (cfg.s2s or cfg.s2s_guided):
        return out
    for u in rows:
        a = spoken.get(answers.get(u["text"], "")) if u["turn"] == "user" else None
        if a is None or not str(u["dialogue"]).startswith("turn-"):
            continue
        pair, user = f"{u['key']}>{a['key']}", ChatTurn("user", None, u["speech_ids"])
        if cfg.s2s:
            out.append(Example("s2s", "s2s", [user, ChatTurn("assistant", None, a["speech_ids"])], split, pair))
        if cfg.s2s_guided:
            reply = ChatTurn("assistant", a["text"], a["speech_ids"], onsets=a.get("word_onsets"),
                             phone_onsets=a.get("phone_onsets"))
            out.append(Example("s2s_guided", "s2s", [user, reply], split, pair))
    return out


def summarize(examples: list[Example], token_rate: float) -> dict:
    tasks: dict[str, int] = {}
    speech = 0
    for e in examples:
        tasks[e.task] = tasks.get(e.task, 0) + 1
        speech += sum(len(t.speech or ()) for t in e.turns if t.role == "assistant")
    return {"examples": len(examples), "tasks": tasks, "reply_speech_tokens": speech,
            "reply_speech_hours": round(speech / token_rate / 3600, 3)}


# ---- CLI --------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render", help="speak extra sentences in joe's voice (alignment data)")
    r.add_argument("--preset", default="small", help="the dialogue corpus's preset: its dev/test prompts are left out")
    r.add_argument("--out", required=True)
    r.add_argument("--limit", type=int, default=800)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--takes", type=int, default=1, help="renderings of each sentence (Piper varies every take)")
    r.add_argument("--user-voices", action="store_true",
                   help="speak each sentence in train user voices instead, one per take (asr data across voices)")
    r.add_argument("--steady", action="store_true", help="Piper's one most likely take of each text, not a sampled "
                   "one (reading data with one target per text; use a folder of its own)")
    r.add_argument("--drill", action="store_true", help="speak the hearing drills instead (each thing of the "
                   "question tables in other carrier sentences, `prompts.drill_texts`) in the train users' voices, "
                   "--takes voices each: asr data in which each slot word recurs")
    r.add_argument("--answers", help="speak the LLM's answers in this file (`lm_data answers`) in joe's voice "
                   "instead: reading data, and spoken replies to every rendering of their questions (with "
                   "--user-voices: as user turns in the users' voices)")
    a = sub.add_parser("answers", help="the frozen LLM's answers to the renderings' questions (s2t targets)")
    a.add_argument("tokens", nargs="?", help="the renderings' token cache (or --preset)")
    a.add_argument("--preset", help="instead: the questions `render --preset` speaks, before they are spoken")
    a.add_argument("--said", action="store_true", help="with a token cache: reply to the LLM's answers said in the "
                   "users' voices instead of to the questions (more s2t targets; concatenate the file with the "
                   "questions' answers for `answers:`)")
    a.add_argument("--threads", type=int, default=1, help="CPU threads (batched decoding gains from a second)")
    a.add_argument("--out", required=True)
    a.add_argument("--backbone", default="smollm2")
    a.add_argument("--device", default="cpu")
    a.add_argument("--batch-size", type=int, default=64)
    a.add_argument("--samples", type=int, default=0,
                   help="instead: this many sampled answers per question, appended to --out (reading data)")
    a.add_argument("--temperature", type=float, default=0.7)
    a.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("tokenize", help="codec + text tokens of every utterance, cached as JSONL")
    t.add_argument("corpora", nargs="+")
    t.add_argument("--out", required=True)
    t.add_argument("--codec", help="codec checkpoint folder (default: the shipped codec-lite-16k)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    try:
        if args.cmd == "render":
            if args.steady and args.takes > 1 and not args.user_voices:
                raise VivavoceError("render: --steady speaks every take of a text alike; give --takes 1 (or "
                                    "--user-voices, whose takes fall on different voices)")
            if args.drill and args.answers:
                raise VivavoceError("render: --drill speaks the drills, --answers the LLM's answers: give one")
            if args.drill:
                texts = user_voice_texts(drill_texts(args.limit, args.seed), args.seed, args.takes)
                errors = render_alignment(texts, args.out, log, shard="align-drill", steady=args.steady)
            elif args.answers and args.user_voices:  # the answers' varied text as user turns: asr beyond the templates
                texts = user_voice_texts(answer_texts(args.answers, args.limit), args.seed, args.takes)
                errors = render_alignment(texts, args.out, log, shard="align-answers-users", steady=args.steady)
            elif args.answers:
                errors = render_alignment(answer_texts(args.answers, args.limit), args.out, log, shard="align-answers",
                                          steady=args.steady)
            elif args.user_voices:
                texts = user_voice_texts(alignment_texts(args.preset, args.limit, args.seed), args.seed, args.takes)
                errors = render_alignment(texts, args.out, log, shard="align-users", steady=args.steady)
            else:
                texts = alignment_texts(args.preset, args.limit, args.seed, args.takes)
                errors = render_alignment(texts, args.out, log, steady=args.steady)
            return 1 if errors else 0
        if args.cmd == "answers":
            if bool(args.tokens) == bool(args.preset):
                raise VivavoceError("answers: give a token cache or --preset, not both")
            torch.set_num_threads(args.threads)
            if args.preset:
                questions = preset_questions(args.preset, args.seed)
            elif args.said:
                questions = said_answer_texts(load_tokens(args.tokens))
            else:
                questions = rendering_questions(load_tokens(args.tokens))
            if args.samples:
                write_sampled_answers(questions, args.out, args.samples, args.temperature, args.seed, args.backbone,
                                      args.device, args.batch_size, log=log)  # fmt: skip
            else:
                write_rendering_answers(questions, args.out, args.backbone, args.device, args.batch_size, log=log)
            return 0
        from vivavoce.codec import Codec

        codec = Codec.load(args.codec)
        rows = tokenize_corpora(args.corpora, args.out, codec=codec, log=log)
        for split in ("train", "dev", "test"):
            print(split, json.dumps(summarize(build_examples(rows, split=split), codec.token_rate)))
        return 0
    except VivavoceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
