"""A small synthetic speech set for the codec until the corpus lands: Piper (joe) and espeak-ng voices.

    python -m vivavoce.train.codec_data --out cache/codec-data [--per-voice 40]
    python -m vivavoce.train.codec_data --out cache/codec-extra --per-voice 120 --seed 7 --exclude cache/codec-data/test.jsonl
    python -m vivavoce.train.codec_data merge cache/codec-mix.jsonl cache/codec-data/train.jsonl corpus/small/... [--max-rows N]

Writes 16 kHz WAVs, `train.jsonl` and `test.jsonl` manifests (audio, text, phonemes, speaker) and warms the
feature cache (`features.load_items`). Test sentences are never spoken in training; the test set also has one
espeak voice that training never hears, for voice cloning.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from vivavoce.audio.io import resample, write_audio
from vivavoce.speechtools.tts import EspeakSettings, PiperSettings, PiperTTS, espeak_phonemes, espeak_synthesize
from vivavoce.train.features import load_items, read_manifest

SENTENCES = """
The quick brown fox jumps over the lazy dog.
Please call Stella and ask her to bring these things with her from the store.
I would like a cup of coffee with a little milk.
The weather today is cold, but tomorrow should be warmer.
Could you tell me the way to the railway station?
She measured the treasure with a careful eye.
My brother plays the guitar every evening after dinner.
We need to finish the report before the meeting on Thursday.
The children were laughing in the garden all afternoon.
How many apples did you buy at the market?
He thought about the question for a long time.
The museum opens at nine and closes at five.
A bright red kite was flying high above the beach.
Turn left at the church and keep going until the bridge.
The judge listened to both sides before making a decision.
I have never seen such a beautiful sunset.
Our train was delayed by almost an hour.
Put the books back on the shelf when you are done.
The doctor said I should drink more water.
Every morning she walks her dog along the river.
Why did the computer stop working again?
They built a small wooden house near the lake.
The soup needs a little more salt and pepper.
Music can change the way we feel.
Thank you very much for your help yesterday.
The pilot announced that we would land in twenty minutes.
Do you remember where we parked the car?
The old clock in the hall strikes every hour.
Fresh bread smells wonderful in the early morning.
I think it is going to rain this weekend.
Learning a new language takes patience and practice.
The cat jumped onto the table and knocked over a glass.
Let us meet outside the cinema at seven thirty.
He forgot his umbrella on the bus.
The garden is full of roses and tulips in spring.
Can you speak a little more slowly, please?
Seven hungry birds sat on the fence.
The library has thousands of books about history.
My favourite season is autumn, when the leaves turn gold.
She answered the phone with a cheerful voice.
Good morning, how did you sleep?
What time does the next bus leave?
The engineer explained how the machine works.
We watched a film about the ocean last night.
Please switch off the lights when you leave the room.
A thick fog covered the whole valley.
The teacher wrote three words on the board.
I usually have toast and tea for breakfast.
The team celebrated their victory with a big party.
Where would you like to go on holiday this year?
""".strip().splitlines()

SUBJECTS = ["the farmer", "my neighbour", "a young girl", "the old man", "our teacher", "the driver", "my sister",
            "a tired student", "the baker", "his friend"]  # fmt: skip
VERBS = ["found", "painted", "carried", "sold", "watched", "cleaned", "opened", "dropped", "fixed", "borrowed"]
OBJECTS = ["a yellow box", "the broken chair", "six green bottles", "a heavy suitcase", "the kitchen window",
           "a small boat", "the silver key", "an orange jacket", "the wooden gate", "a thick blanket"]  # fmt: skip
PLACES = ["near the station", "in the morning", "after lunch", "by the river", "at the market", "before midnight",
          "behind the school", "during the storm", "on Sunday", "under the bridge"]  # fmt: skip

TRAIN_ESPEAK = [EspeakSettings("en-us", 160, 50), EspeakSettings("en-gb+f3", 150, 60),
                EspeakSettings("en-gb-scotland+m3", 170, 40), EspeakSettings("en-us+f2", 175, 65),
                EspeakSettings("en-029+m2", 145, 45)]  # fmt: skip
# more timbres for cloning (`--more-voices`); none is the RP accent the test's unseen voice speaks
MORE_ESPEAK = [EspeakSettings("en-us+m1", 150, 35), EspeakSettings("en-us+f1", 165, 70),
               EspeakSettings("en-gb+m4", 155, 45), EspeakSettings("en-gb-x-gbclan+f5", 170, 60),
               EspeakSettings("en-gb-x-gbcwmd+m6", 140, 40), EspeakSettings("en-029+f3", 160, 75),
               EspeakSettings("en-us+Annie", 165, 55), EspeakSettings("en-gb+Andy", 150, 50),
               EspeakSettings("en-us+belinda", 170, 62), EspeakSettings("en-gb-scotland+f4", 155, 58)]  # fmt: skip
TEST_ESPEAK = EspeakSettings("en-gb-x-rp+f4", 160, 55)  # never heard in training
PIPER = [PiperSettings(1.0, 0.667, 0.8), PiperSettings(0.85, 0.5, 0.6), PiperSettings(1.2, 0.8, 0.9)]


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = list(SENTENCES)
    while len(out) < n:
        s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)}."
        s = s[0].upper() + s[1:]
        if s not in out:
            out.append(s)
    rng.shuffle(out)
    return out[:n]


def merge(out: str | Path, manifests: list[str], max_rows: int = 0, seed: int = 0,
          exclude_ids: set[str] = frozenset()) -> int:  # fmt: skip
    """One training manifest from several (this script's and the corpus's), audio paths made absolute so the
    result can live anywhere; `max_rows` keeps a random share of each input so one voice does not dominate;
    rows whose id is in `exclude_ids` (a held-out set) are left out."""
    rows = []
    for m in manifests:
        part = [r for r in read_manifest(m) if r["id"] not in exclude_ids]
        if max_rows and len(part) > max_rows:
            part = random.Random(seed).sample(part, max_rows)
        for r in part:
            row = {k: r[k] for k in ("id", "audio", "text", "phonemes", "speaker")}
            row.update({k: str(Path(r[k]).resolve()) for k in ("audio", "audio_native") if r.get(k)})
            rows.append(row)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} rows from {len(manifests)} manifests -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(argv) if argv is not None else sys.argv[1:]
    if argv[:1] == ["merge"]:
        m = argparse.ArgumentParser(prog="codec_data merge", description=merge.__doc__.splitlines()[0])
        m.add_argument("out")
        m.add_argument("manifests", nargs="+")
        m.add_argument("--max-rows", type=int, default=0, help="at most this many rows from each manifest (0 = all)")
        m.add_argument("--exclude-ids", help="a file of utterance ids (one a line) to leave out: a held-out set")
        a = m.parse_args(argv[1:])
        held = set(Path(a.exclude_ids).read_text().split()) if a.exclude_ids else set()
        return merge(a.out, a.manifests, a.max_rows, exclude_ids=held)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="cache/codec-data")
    p.add_argument("--per-voice", type=int, default=40, help="training utterances per voice setting")
    p.add_argument("--test", type=int, default=12, help="held-out sentences")
    p.add_argument("--seed", type=int, default=0, help="sentence draw; the default reproduces the shipped test set")
    p.add_argument("--exclude", help="a manifest whose sentences must not be spoken here (another set's test.jsonl)")
    p.add_argument("--more-voices", action="store_true", help="add 10 more espeak-ng timbres to the training voices")
    args = p.parse_args(argv)
    out = Path(args.out)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    voices = [("piper", s) for s in PIPER] + [("espeak", s) for s in TRAIN_ESPEAK + MORE_ESPEAK * args.more_voices]
    banned = {r["text"] for r in read_manifest(args.exclude)} if args.exclude else set()
    texts = [t for t in sentences(args.test + args.per_voice * len(voices) // 2 + len(banned), args.seed) if t not in banned]
    test_texts, train_texts = texts[: args.test], texts[args.test :]
    piper = PiperTTS()
    phonemes: dict[str, str] = {}

    def synth(kind, settings, text, uid):
        audio, rate = piper.synthesize(text, settings) if kind == "piper" else espeak_synthesize(text, settings)
        path = write_audio(out / "wav" / f"{uid}.wav", resample(audio, rate, 16000), 16000)
        if text not in phonemes:
            phonemes[text] = espeak_phonemes(text)
        speaker = "piper-joe" if kind == "piper" else f"espeak-{settings.voice}"
        return {"id": uid, "audio": f"wav/{path.name}", "text": text, "phonemes": phonemes[text], "speaker": speaker}

    rows = {"train": [], "test": []}
    rng = random.Random(1)
    for v, (kind, settings) in enumerate(voices):
        for i, text in enumerate(rng.sample(train_texts, args.per_voice)):
            rows["train"].append(synth(kind, settings, text, f"tr{v}-{i:03d}"))
        print(f"voice {v + 1}/{len(voices)} done", flush=True)
    for i, text in enumerate(test_texts):
        rows["test"].append(synth("piper", PIPER[0], text, f"te-piper-{i:03d}"))
        rows["test"].append(synth("espeak", TRAIN_ESPEAK[i % len(TRAIN_ESPEAK)], text, f"te-espeak-{i:03d}"))
        rows["test"].append(synth("espeak", TEST_ESPEAK, text, f"te-unseen-{i:03d}"))
    piper.close()
    for split, items in rows.items():
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    for split in rows:
        load_items(out / f"{split}.jsonl", out)
    print(f"{len(rows['train'])} train, {len(rows['test'])} test utterances in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
