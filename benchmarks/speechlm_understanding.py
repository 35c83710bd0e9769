"""Understanding diagnostic of the speech LM: does the frozen text branch read the content of a spoken question?

For each dev/test dialogue of a token cache (`python -m vivavoce.train.lm_data tokenize`), the mean text loss
(nats per token, teacher-forced) of the frozen LLM's own answer, in the s2t layout, given:
- the question as speech (what guided mode has to work with);
- the same question as text (the ceiling: the backbone alone);
- another dialogue's spoken question (the floor: what a right-sounding answer costs with the wrong content);
- no question ("Hi.").
Speech that the text branch understands brings the first towards the second; speech it only takes as "some
question" leaves it at the third. With `--train N`, the same for N questions of the alignment renderings (seen in
training, with `--answers`: the s2t targets of `lm_data answers`). With `--oracle`, two more inputs that no
model has at generation, to see what a transcript of the user would be worth with the frozen layers: the
question's speech with its own text tokens in the text stream, each word at its onset (CTC forced alignment on
the codec's phone head, `lm_align`; needs espeak-ng), and the whole transcript in a row from the speech span's
start, the codes beside it.

With `--written`, what the text branch writes from the spoken question, greedily: under the asr prompt (its
transcript, against the question's text: does it hear the words?) and under the s2t prompt (its answer, against
the LLM's answer to the written question: does it answer them?). Word error rates over all words; a model can
hear the words and still not answer them (the speech is not read as text), or answer a similar-sounding training
question (it recalls rather than hears).

    OMP_NUM_THREADS=2 PYTHONPATH=src .venv/bin/python benchmarks/speechlm_understanding.py \
        --tokens cache/lm/tokens.jsonl [--checkpoint CKPT ...] [--answers cache/lm/answers.jsonl --train 40] [--oracle] \
        [--written]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--checkpoint", nargs="+", default=[None], help="speech LM checkpoints (default: the shipped one)")
    ap.add_argument("--answers", default=None, help="answers JSONL of the renderings (for --train)")
    ap.add_argument("--train", type=int, default=0, help="also this many training renderings (needs --answers)")
    ap.add_argument("--oracle", action="store_true", help="also: the transcript inside the spoken turn (see above)")
    ap.add_argument("--written", action="store_true", help="also: greedy transcripts and answers (see above)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from vivavoce.engine.speechlm import default_checkpoint
    from vivavoce.model.backbone import load_backbone
    from vivavoce.eval.intelligibility import corpus_wer
    from vivavoce.model.generate import SpeechSession, written_reply
    from vivavoce.model.processor import ChatTurn, ProcessorConfig, SpeechLMProcessor
    from vivavoce.model.speechlm import IGNORE, SpeechLM
    from vivavoce.train.lm_data import ExampleConfig, build_examples, load_answers, load_tokens

    torch.set_num_threads(args.threads)
    rows = load_tokens(args.tokens)
    text_of = {r["key"]: r["text"] for r in rows}
    only_s2t = ExampleConfig(tts=False, tts_true=False, asr=False, s2s=False, s2s_guided=False)
    sets = {"held_out": [e for s in ("dev", "test") for e in build_examples(rows, only_s2t, s) if e.task == "s2t"]}
    if args.train:
        answers = load_answers(args.answers)
        seen = [e for e in build_examples(rows, only_s2t, "train", answers) if e.source.split("/")[0] != "small"]
        sets["train"] = random.Random(0).sample(seen, min(args.train, len(seen)))
    backbone = load_backbone()

    codec = None
    if args.oracle:
        from vivavoce.codec import Codec
        from vivavoce.train.lm_align import word_onsets

        codec = Codec.load()

    def with_transcript(proc, turns, text_ids: list[int], at_onsets: bool):
        """The s2t grid of `turns` (a spoken user turn first), its speech span also holding the question's text."""
        g = proc.encode(turns, mode="s2t")
        s0, e0 = g.speech_ids.index(proc.sos), g.speech_ids.index(proc.eos)
        if at_onsets:
            onsets = word_onsets(turns[0].speech, proc.words(text_ids), len(text_ids), codec.tokenizer)
            if onsets is None:
                return None
            places = proc.aligned_positions(text_ids, onsets)
        else:
            places = range(len(text_ids))
        for p, t in zip(places, text_ids):
            if s0 + 1 + p < e0:
                g.text_ids[s0 + 1 + p] = t
        return g

    def loss(model, g) -> tuple[float, int]:
        hidden = model.shared_hidden(torch.tensor([g.text_ids]), torch.tensor([g.speech_ids]))
        th, _ = model.branches_from_hidden(hidden, speech=False)
        targets = torch.tensor([g.text_targets])
        keep = targets != IGNORE
        return float(F.cross_entropy(model.text_head(th[keep]).float(), targets[keep], reduction="sum")), int(keep.sum())

    report = {}
    for path in args.checkpoint:
        path = path or str(default_checkpoint())
        model = SpeechLM.load(path, backbone).eval()
        proc = SpeechLMProcessor(backbone.tokenizer, model.config, ProcessorConfig())
        report[path] = {}
        for name, examples in sets.items():
            names = ("speech", "text", "other_speech", "no_question")
            names += ("speech+words_at_onsets", "speech+transcript_first") if args.oracle else ()
            sums = {k: [0.0, 0] for k in names}
            with torch.no_grad():
                for i, e in enumerate(examples):
                    user, reply = e.turns
                    other = examples[(i + 1 + len(examples) // 2) % len(examples)].turns[0]
                    question = text_of[e.source.split(">")[0]]
                    inputs = [(k, proc.encode(turns, mode="s2t")) for k, turns in (
                        ("speech", [user, reply]), ("text", [ChatTurn("user", question), reply]),
                        ("other_speech", [other, reply]), ("no_question", [ChatTurn("user", "Hi."), reply]))]
                    if args.oracle:
                        q_ids = proc.text_ids(question)
                        inputs += [("speech+words_at_onsets", with_transcript(proc, [user, reply], q_ids, True)),
                                   ("speech+transcript_first", with_transcript(proc, [user, reply], q_ids, False))]
                    for k, grid in inputs:
                        if grid is None:  # no alignment found
                            continue
                        a, n = loss(model, grid)
                        sums[k][0] += a
                        sums[k][1] += n
            report[path][name] = {"examples": len(examples), **{k: round(a / n, 4) for k, (a, n) in sums.items()}}
            if args.written:
                questions = [text_of[e.source.split(">")[0]] for e in examples]
                heard, answered = [], []
                sessions = {mode: SpeechSession(model, proc, mode=mode) for mode in ("asr", "s2t")}
                with torch.no_grad():
                    for e, question in zip(examples, questions):
                        heard.append(written_reply(sessions["asr"], e.turns[0].speech, 40))
                        answered.append(written_reply(sessions["s2t"], e.turns[0].speech, 60))
                        print(f"  {question!r}\n    heard: {heard[-1]!r}\n    wrote: {answered[-1]!r}")
                report[path][name].update(
                    asr_wer=round(corpus_wer(questions, heard), 4),
                    s2t_wer=round(corpus_wer([e.turns[1].text for e in examples], answered), 4),
                    written=[dict(question=q, heard=h, wrote=w) for q, h, w in zip(questions, heard, answered)])
            print(path, name, json.dumps(report[path][name]), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
