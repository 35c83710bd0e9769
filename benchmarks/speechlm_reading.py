"""Reading diagnostic of the speech LM: does the speech branch say a given text? Training sentences against
held-out ones, so that memorising is told apart from learning to read.

Texts come from a token cache (`python -m vivavoce.train.lm_data tokenize`): `--train N` random training replies
of the alignment renderings and the dev/test assistant answers. Each is read in guided mode with the text given
(the tts task's layout: tts system prompt, the text as a written user turn); Whisper tiny.en transcribes it.

Beside the free reading, teacher-forced over the recording (its codes, the words at their measured onsets): the
share of codes the speech branch predicts exactly (argmax), and the WER of those argmax codes decoded, each given
the true past, so no error compounds; and the WER of the recording's own codes decoded (the codec's ceiling).
Round 7 found free reading intelligible only where teacher-forced accuracy reaches ~0.45.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/speechlm_reading.py --tokens cache/lm/tokens.jsonl \
        [--checkpoint CKPT] [--codec DIR] [--train 6] [--held-out 4] [--held-out-from TOKENS] [--temperature T] \
        [--json reports/reading.json]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--checkpoint", default=None, help="speech LM checkpoint (default: the shipped one)")
    ap.add_argument("--codec", default=None, help="codec checkpoint folder the tokens and the LM are of "
                    "(default: the shipped lite-16k)")
    ap.add_argument("--train", type=int, default=6, help="training sentences to read")
    ap.add_argument("--held-out", type=int, default=4, help="dev/test assistant answers to read")
    ap.add_argument("--held-out-from", default=None,
                    help="another token cache: its spoken answers not in --tokens are read first as held-out texts")
    ap.add_argument("--temperature", type=float, default=None, help="speech sampling (default: the checkpoint's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from speechlm import read_aloud  # benchmarks/speechlm.py, beside this script

    from vivavoce.engine.speechlm import SpeechLMEngine, SpeechLMEngineConfig
    from vivavoce.eval import intelligibility
    from vivavoce.eval.report import Evaluator
    from vivavoce.train.lm_data import load_tokens

    rows = load_tokens(args.tokens)
    train = [r for r in rows if r["split"] == "train" and str(r["dialogue"]).startswith("turn-")
             and r["turn"] == "assistant"]  # fmt: skip
    held = held_out_answers(rows)
    if args.held_out_from:  # e.g. spoken answers that this run did not train on: longer, more of them
        seen = {r["text"] for r in rows}
        more = [r for r in load_tokens(args.held_out_from) if str(r["dialogue"]).startswith("turn-ans-")
                and r["text"] not in seen]  # fmt: skip
        held = random.Random(0).sample(more, min(args.held_out, len(more))) + held
    groups = {"train": random.Random(0).sample(train, min(args.train, len(train))), "held_out": held[: args.held_out]}
    engine = SpeechLMEngine(SpeechLMEngineConfig(checkpoint=args.checkpoint, codec=args.codec))
    torch.set_num_threads(args.threads)
    evaluator = Evaluator(sphinx=False)
    results = {}
    for name, group in groups.items():
        refs, hyps = [], []
        tf = {"refs": [], "argmax": [], "recording": [], "right": 0, "codes": 0}
        for r in group:
            ids, audio = read_aloud(engine, r["text"], guided=True, temperature=args.temperature)
            item = evaluator.score(f"{name}:{r['key']}", audio, engine.codec.sample_rate, reference=r["text"])
            refs.append(r["text"])
            hyps.append(item.transcript)
            print(f"{name}: {r['text'][:60]!r} -> {item.transcript[:80]!r} ({len(ids)} tokens; "
                  f"the recording: {len(r['speech_ids'])})", flush=True)  # fmt: skip
            if r.get("word_onsets"):
                argmax = teacher_forced_argmax(engine, r)
                tf["right"] += sum(a == b for a, b in zip(argmax, r["speech_ids"]))
                tf["codes"] += len(argmax)
                tf["refs"].append(r["text"])
                for key, codes in (("argmax", argmax), ("recording", r["speech_ids"])):
                    audio = engine.codec.decode(codes, engine._voice())
                    tf[key].append(evaluator.score(f"{name}:{key}", audio, engine.codec.sample_rate,
                                                   reference=r["text"]).transcript)  # fmt: skip
        results[name] = {"items": len(refs), "wer": intelligibility.corpus_wer(refs, hyps)}
        if tf["codes"]:
            results[name].update(tf_items=len(tf["refs"]), tf_code_acc=tf["right"] / tf["codes"],
                                 tf_argmax_wer=intelligibility.corpus_wer(tf["refs"], tf["argmax"]),
                                 recording_wer=intelligibility.corpus_wer(tf["refs"], tf["recording"]))  # fmt: skip
        print(name, json.dumps(results[name]), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        temperature = engine.model.speech_temperature if args.temperature is None else args.temperature
        Path(args.json).write_text(json.dumps({"checkpoint": args.checkpoint, "temperature": temperature,
                                               "results": results}, indent=1))  # fmt: skip


def held_out_answers(rows: list[dict]) -> list[dict]:
    """A token cache's dev/test assistant answers, one row per distinct text, in the cache's order."""
    return list({r["text"]: r for r in rows if r["split"] in ("dev", "test") and r["turn"] == "assistant"}.values())


def teacher_forced_argmax(engine, row: dict) -> list[int]:
    """The speech branch's argmax code at every code position of the recording's tts grid (true past each time)."""
    import torch

    from vivavoce.model.processor import ChatTurn
    from vivavoce.model.speechlm import IGNORE

    model, proc = engine.model, engine.processor
    reply = ChatTurn("assistant", row["text"], row["speech_ids"], onsets=row["word_onsets"],
                     phone_onsets=row.get("phone_onsets"))
    grid = proc.encode([ChatTurn("user", row["text"]), reply], mode="tts")
    t, s = grid.tensors()
    with torch.inference_mode():
        config = model.config
        spelling = proc.spelling_ids(t, s, phonemes=config.split_phonemes, phone_track=config.split_phone_track,
                                     phone_index=torch.tensor([grid.phone_index])) if config.split_spelling else None
        _, sh = model.branches_from_hidden(model.shared_hidden(t, s), text=False, speech_ids=s, text_ids=t,
                                           spelling_ids=spelling)  # fmt: skip
        targets = torch.tensor(grid.speech_targets)
        at = (targets != IGNORE) & (targets < model.config.speech_vocab)  # the codes, not S or E
        return model.speech_head(sh[0][at])[:, : model.config.speech_vocab].argmax(-1).tolist()


if __name__ == "__main__":
    main()
