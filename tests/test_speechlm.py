"""Speech LM: layer split and frozen text branch, token layout, cached and fast decoding, generation, engine."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from conftest_train import one_torch_thread  # noqa: F401  (module fixture)
from vivavoce.errors import VivavoceError
from vivavoce.model.fastdecode import FastDecodeConfig, FastDecoder
from vivavoce.model.generate import GenerationConfig, SpeechSession, sample
from vivavoce.model.processor import ChatTurn, ProcessorConfig, SpeechLMProcessor
from vivavoce.model.speechlm import IGNORE, NONE, SpeechLM, SpeechLMConfig, checkpoint_metadata, read_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUESTION = "What is the capital of France?"



@pytest.fixture(scope="module")
def model(backbone):
    return SpeechLM(backbone, SpeechLMConfig(seed=1)).eval()


@pytest.fixture(scope="module")
def proc(backbone, model):
    return SpeechLMProcessor(backbone.tokenizer, model.config)


def codes(n: int, seed: int = 0) -> list[int]:
    return torch.randint(0, 1024, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_text_logits_equal_backbone_without_speech(backbone, model):
    ids = torch.tensor([backbone.chat_ids([{"role": "user", "content": QUESTION}])])
    with torch.no_grad():
        ref = backbone.model(input_ids=ids).logits
        out = model(ids, torch.full_like(ids, NONE))
    assert torch.equal(out.text_logits, ref)
    assert out.speech_logits.shape == (1, ids.shape[1], 1026)
    # ...and speech does change them (the test above could not pass with speech ignored).
    with torch.no_grad():
        mixed = model(ids, torch.tensor([[NONE] * 5 + codes(ids.shape[1] - 5)]))
    assert not torch.allclose(mixed.text_logits[0, 5:], ref[0, 5:])
    assert torch.equal(mixed.text_logits[0, :5], ref[0, :5])  # causal: positions before the speech untouched


def test_text_weights_frozen_and_untouched_by_a_step(backbone, proc):
    m = SpeechLM(backbone, SpeechLMConfig(seed=2))
    trainable = {id(p) for p in m.trainable_parameters()}
    assert {id(p) for p in m.parameters() if p.requires_grad} == trainable
    assert all(not p.requires_grad for p in backbone.model.parameters())
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    speech_before = m.speech_embed.weight.clone()
    turns = [ChatTurn("user", speech=codes(6)), ChatTurn("assistant", text="Paris.", speech=codes(8, 1))]
    grid = proc.encode(turns, "s2s")
    b = proc.collate([grid])
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=1e-3)
    out = m(b.text_ids, b.speech_ids, b.attention_mask)
    ce = torch.nn.functional.cross_entropy
    loss = ce(out.speech_logits[b.speech_loss_mask], b.speech_targets[b.speech_loss_mask])
    loss = loss + ce(out.text_logits[b.text_loss_mask], b.text_targets[b.text_loss_mask])
    loss.backward()
    opt.step()
    after = backbone.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(m.speech_embed.weight, speech_before)


def test_processor_text_only_matches_chat_template(backbone, proc):
    turns = [ChatTurn("system", "Be brief."), ChatTurn("user", QUESTION), ChatTurn("assistant", "Paris."),
             ChatTurn("user", "And of Spain?\nThanks")]  # fmt: skip
    grid = proc.encode(turns, add_generation_prompt=True)
    assert grid.text_ids == backbone.chat_ids([{"role": t.role, "content": t.text} for t in turns])
    assert set(grid.speech_ids) == {NONE}


@pytest.mark.parametrize("mode", ["s2s", "s2t", "t2s", "t2t", "guided", "asr", "tts"])
def test_processor_round_trip(proc, mode):
    spoken = mode[0] == "s" or mode in ("guided", "asr")
    user = ChatTurn("user", speech=codes(7)) if spoken else ChatTurn("user", "Hi there.")
    reply = {
        "s2s": ChatTurn("assistant", speech=codes(9, 1)),
        "t2s": ChatTurn("assistant", speech=codes(9, 1)),
        "tts": ChatTurn("assistant", speech=codes(9, 1)),
        "s2t": ChatTurn("assistant", "Paris is the capital."),
        "t2t": ChatTurn("assistant", "Paris is the capital."),
        "asr": ChatTurn("assistant", "what is the capital of france"),
        "guided": ChatTurn("assistant", "Paris is the capital of France.", speech=codes(20, 2)),
    }[mode]
    grid = proc.encode([user, reply, ChatTurn("user", speech=codes(3, 3))], mode="s2s" if mode == "guided" else mode)
    assert len(grid.text_ids) == len(grid.speech_ids) == len(grid.text_targets) == len(grid.speech_targets)
    system, u, r, u2 = proc.decode(grid)
    assert system.role == "system" and system.text
    assert (u.role, u.text, u.speech) == ("user", user.text, user.speech)
    assert (r.role, r.text, r.speech) == ("assistant", reply.text, reply.speech)
    assert u2.speech == codes(3, 3)
    # Targets only in the assistant's reply, and they are the next position's tokens.
    tt, st = np.array(grid.text_targets), np.array(grid.speech_targets)
    for p in np.flatnonzero(st != IGNORE):
        assert grid.speech_ids[p + 1] == st[p]
    n_speech = 0 if reply.speech is None else len(reply.speech) + 2  # S codes E
    assert (st != IGNORE).sum() == n_speech
    if reply.text is not None:
        n_text = len(proc.text_ids(reply.text)) + 1  # + the end of text
        assert (tt != IGNORE).sum() == n_text
        assert proc.im_end in tt
    else:
        assert (tt == IGNORE).all()


def test_guided_lead_layout_text_leads_speech(backbone, model):
    proc = SpeechLMProcessor(backbone.tokenizer, model.config, ProcessorConfig(guided_layout="lead"))
    text = proc.text_ids("Paris is the capital of France.")
    grid = proc.encode([ChatTurn("user", speech=codes(4)), ChatTurn("assistant", "Paris is the capital of France.",
                                                                     speech=codes(20))], "s2s")  # fmt: skip
    first_text = grid.text_ids.index(text[0], grid.text_ids.index(proc.role_ids["assistant"][0]))
    sos = [p for p, s in enumerate(grid.speech_ids) if s == proc.sos][-1]
    assert sos - first_text == proc.config.guided_delay
    assert grid.text_ids[first_text : first_text + len(text)] == text
    assert grid.text_targets[first_text + len(text) - 1] == proc.im_end  # end of text, then NONE
    assert grid.text_ids[first_text + len(text)] == NONE
    short = proc.encode([ChatTurn("user", "Hi"), ChatTurn("assistant", "Yes.", speech=codes(5))])
    t0 = len(short) - 5 - 2 - 2 - 2  # S codes E, <|im_end|> \n, and the 2-token text before
    assert short.speech_ids[t0 + 2] == proc.sos  # a text shorter than the delay: speech follows it at once


def test_aligned_layout_puts_each_word_at_its_onset(proc):
    reply = "Paris is the capital, of France."
    text = proc.text_ids(reply)
    words = proc.words(text)
    assert [w for _, w in words] == ["Paris", "is", "the", "capital,", "of", "France."]
    onsets: list[int | None] = [None] * len(text)
    for (a, _), o in zip(words, [1, 9, 12, 14, 30, 33]):
        onsets[a] = o
    grid = proc.encode([ChatTurn("user", speech=codes(4)), ChatTurn("assistant", reply, speech=codes(40),
                                                                     onsets=onsets)], "s2s")  # fmt: skip
    start = grid.speech_ids.index(proc.eos) + 3 + len(proc.header_ids("assistant"))  # E, <|im_end|> \n, header
    assert grid.speech_ids[start + proc.config.guided_delay] == proc.sos
    at = {p - start: t for p, t in enumerate(grid.text_ids) if p >= start and t not in (NONE, proc.im_end)
          and p < len(grid) - 2}  # fmt: skip
    assert sorted(at.items()) == sorted(zip(proc.aligned_positions(text, onsets), text))
    for (a, _), o in zip(words, [1, 9, 12, 14, 30, 33]):
        assert grid.text_ids[start + o] == text[a]  # a word sits at its onset, its later tokens right after
    # Each text token is the target where the text token before it sits; <|im_end|> after the last.
    tt = grid.text_targets
    pos = [start + q for q in proc.aligned_positions(text, onsets)]
    assert [tt[p] for p in [start - 1, *pos]] == [*text, proc.im_end]
    # Speech targets: S, the codes and E, each at the position before it.
    st = np.array(grid.speech_targets)
    assert (st != IGNORE).sum() == 40 + 2
    # Without onsets, the estimate: monotone, one word per onset, about a word every 5-15 positions here.
    est = proc.estimate_onsets(text)
    starts = [o for o in est if o is not None]
    assert len(starts) == len(words) and starts == sorted(starts) and 5 <= np.diff(starts).mean() <= 15
    assert proc.aligned_positions(text) == proc.aligned_positions(text, est)


def test_batching_pads_and_masks(proc):
    a = proc.encode([ChatTurn("user", speech=codes(5)), ChatTurn("assistant", speech=codes(9))], "s2s")
    b = proc.encode([ChatTurn("user", "Hi"), ChatTurn("assistant", "Hello.")], "t2t")
    batch = proc.collate([a, b], pad_to_multiple=8)
    assert batch.text_ids.shape == batch.speech_ids.shape == batch.attention_mask.shape
    assert batch.text_ids.shape[1] % 8 == 0 and batch.text_ids.shape[1] >= max(len(a), len(b))
    assert batch.attention_mask.sum(1).tolist() == [len(a), len(b)]
    pad = batch.attention_mask == 0
    assert (batch.text_ids[pad] == NONE).all() and (batch.speech_ids[pad] == NONE).all()
    assert not batch.text_loss_mask[pad].any() and not batch.speech_loss_mask[pad].any()
    assert batch.speech_loss_mask[0].sum() == 11 and batch.speech_loss_mask[1].sum() == 0
    assert batch.text_loss_mask[1].sum() == len(proc.text_ids("Hello.")) + 1


def test_processor_bad_input(proc):
    with pytest.raises(VivavoceError, match="outside"):
        proc.encode([ChatTurn("user", speech=[5, 1024])])
    with pytest.raises(VivavoceError, match="mode"):
        proc.encode([ChatTurn("user", "hi")], mode="x2y")
    with pytest.raises(VivavoceError, match="neither"):
        proc.encode([ChatTurn("user")])
    with pytest.raises(VivavoceError, match="role"):
        proc.encode([ChatTurn("robot", "hi")])
    with pytest.raises(VivavoceError, match="limit"):
        short = SpeechLMProcessor(proc.tokenizer, config=ProcessorConfig(max_len=10))
        short.encode([ChatTurn("user", QUESTION)], "t2t")


def test_cached_decode_equals_full_forward(model, proc):
    turns = [ChatTurn("user", speech=codes(12)), ChatTurn("assistant", "Paris.", speech=codes(10, 1))]
    grid = proc.encode(turns, "s2s")
    t, s = grid.tensors()
    with torch.no_grad():
        full = model(t, s)
        out = model(t[:, :40], s[:, :40], use_cache=True)
        pieces = [out]
        for i in range(40, t.shape[1], 3):  # chunks of 3, then the last ones
            out = model(t[:, i : i + 3], s[:, i : i + 3], cache=out.cache)
            pieces.append(out)
    text = torch.cat([p.text_logits for p in pieces], 1)
    speech = torch.cat([p.speech_logits for p in pieces], 1)
    assert torch.allclose(text, full.text_logits, atol=2e-4)
    assert torch.allclose(speech, full.speech_logits, atol=2e-4)


def _greedy_text(step, prompt, n):
    tl, _ = step(prompt)
    out = []
    for _ in range(n):
        out.append(int(tl.argmax()))
        tl, _ = step([out[-1]])
    return out


def test_fast_decode_matches_reference_greedy(backbone, model, proc):
    prompt = backbone.chat_ids([{"role": "user", "content": QUESTION}])
    with torch.no_grad():
        seq = list(prompt)
        for _ in range(8):
            seq.append(int(backbone.model(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
    ref = seq[len(prompt) :]
    for dtype in ("float32", "bfloat16", "int8"):
        dec = FastDecoder.for_backbone(backbone, FastDecodeConfig(dtype, max_len=128))
        got = _greedy_text(lambda ids: dec.step(ids, want_speech=False), prompt, 8)
        assert got == ref, dtype  # "The capital of France is Paris.<|im_end|>" and beyond
    # The split model: speech-branch logits of the fast decoder follow the reference, with speech in the prompt.
    grid = proc.encode([ChatTurn("user", speech=codes(15))], "s2s", add_generation_prompt=True)
    t, s = grid.tensors()
    with torch.no_grad():
        full = model(t, s)
    for dtype, tol in (("float32", 1e-3), ("bfloat16", 0.15)):
        dec = FastDecoder.for_speechlm(model, FastDecodeConfig(dtype, max_len=256))
        tl, sl = dec.step(grid.text_ids[:-4], grid.speech_ids[:-4])
        for p in range(len(grid) - 4, len(grid)):
            tl, sl = dec.step([grid.text_ids[p]], [grid.speech_ids[p]])
        assert (sl - full.speech_logits[0, -1]).abs().max() < tol * full.speech_logits[0, -1].abs().max()
        assert int(tl.argmax()) == int(full.text_logits[0, -1].argmax())
    dec.truncate(len(grid) - 1)  # rewinding the static cache and re-feeding gives the same logits
    tl2, sl2 = dec.step([grid.text_ids[-1]], [grid.speech_ids[-1]])
    assert torch.equal(sl2, sl)


def test_split_embedding_feeds_the_speech_branch_alone(backbone, model, proc, tmp_path):
    m = SpeechLM(backbone, SpeechLMConfig(seed=1, split_embed=True, split_text=True)).eval()
    grid = proc.encode([ChatTurn("user", speech=codes(15))], "s2s", add_generation_prompt=True)
    t, s = grid.tensors()
    with torch.no_grad():
        base = model(t, s)
        zero = m(t, s)
        assert torch.equal(zero.speech_logits, base.speech_logits)  # zero at the start: the model without it
        m.speech_split_embed.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
        m.speech_split_text.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
        out = m(t, s)
        h = m.shared_hidden(t, s)
        _, sh = m.branches_from_hidden(h, text=False, speech_ids=s, text_ids=t)
    assert torch.equal(out.text_logits, base.text_logits)
    assert (out.speech_logits - base.speech_logits).abs().amax(-1).min() > 1e-3  # text and speech both reach it
    assert torch.allclose(m.speech_head(sh), out.speech_logits, atol=1e-4)  # the cached-phase path agrees
    with pytest.raises(VivavoceError, match="pass them"):
        m.branches_from_hidden(h, text=False, speech_ids=s)
    dec = FastDecoder.for_speechlm(m, FastDecodeConfig("float32", max_len=128))
    _, sl = dec.step(grid.text_ids, grid.speech_ids)
    assert (sl - out.speech_logits[0, -1]).abs().max() < 1e-3 * out.speech_logits[0, -1].abs().max()
    path = tmp_path / "split.safetensors"
    m.save_trainable(path)
    loaded = SpeechLM.load(path, backbone)
    assert torch.equal(loaded.speech_split_embed.weight, m.speech_split_embed.weight)
    assert torch.equal(loaded.speech_split_text.weight, m.speech_split_text.weight)


def test_spelling_rows_name_the_word_being_said(backbone, proc):
    """At the position whose logits predict a word's first code, the row holds that word's letters at age 0; the
    age counts up until the next word; user speech and text positions get none; a packed row restarts."""
    from vivavoce.model.spelling import SLOTS, SYMBOLS

    text = "Penguins can't fly, 2 ways."
    grid = proc.encode([ChatTurn("user", speech=codes(7)), ChatTurn("assistant", text, speech=codes(70, 1))], "s2s")
    t, s = grid.tensors()
    rows = proc.spelling_ids(t, s)[0]
    n = len(SYMBOLS)
    said = {p: ("".join(SYMBOLS[(x - 1) % n] for x in r[:SLOTS] if x), r[SLOTS] - 1) for p, r in enumerate(rows.tolist())
            if r[SLOTS]}  # fmt: skip
    reply = len(grid) - 2 - 70 - 2 - proc.config.guided_delay  # positions from the reply's start: see the layout
    assert grid.speech_ids[reply + proc.config.guided_delay] == proc.sos
    onsets = proc.estimate_onsets(proc.text_ids(text))
    words = [w for _, w in proc.words(proc.text_ids(text))]
    firsts = [o for o in onsets if o is not None]
    for word, onset in zip(words, firsts):
        p = reply + proc.config.guided_delay + onset  # holds the code before the word's first code (or S)
        assert said[p] == (word.lower(), 0)
    assert said[reply + proc.config.guided_delay + firsts[1] - 1] == ("penguins", firsts[1] - 1)
    assert min(said) == reply + proc.config.guided_delay  # nothing before S: not the user's speech, not text
    packed = proc.spelling_ids(torch.cat([t, t], 1), torch.cat([s, s], 1),
                               torch.cat([torch.arange(len(grid))] * 2).unsqueeze(0))[0]  # fmt: skip
    assert torch.equal(packed[len(grid):], rows) and torch.equal(packed[: len(grid)], rows)


def test_phoneme_rows_hold_espeaks_phonemes_of_the_word_being_said(backbone, proc):
    """With phonemes, each spelled row also holds its word's espeak-ng phonemes (digits said as numbers); the
    letters and ages are the rows without them, and rows without a word hold no phonemes."""
    from vivavoce.codec.phonemes import decode_phonemes, vocabulary
    from vivavoce.model.spelling import SLOTS, SYMBOLS

    grid = proc.encode([ChatTurn("user", speech=codes(7)),
                        ChatTurn("assistant", "Penguins can't fly, 2 ways.", speech=codes(70, 1))], "s2s")  # fmt: skip
    t, s = grid.tensors()
    plain, rows = proc.spelling_ids(t, s)[0], proc.spelling_ids(t, s, phonemes=True)[0]
    assert torch.equal(rows[:, : SLOTS + 1], plain[:, : SLOTS + 1]) and not plain[:, SLOTS + 1 :].any()
    n, heard = len(vocabulary()), {}
    for r in rows.tolist():
        if r[SLOTS]:
            word = "".join(SYMBOLS[(x - 1) % len(SYMBOLS)] for x in r[:SLOTS] if x)
            slots = [x for x in r[SLOTS + 1 :] if x]
            assert [(x - 1) // n for x in slots] == list(range(len(slots)))  # slot k holds the k-th phoneme
            heard[word] = decode_phonemes([(x - 1) % n + 1 for x in slots])
        else:
            assert not any(r[SLOTS + 1 :])
    assert heard["penguins"] == "p ɛ ŋ ɡ w ɪ n z"
    assert heard["fly,"] == "f l aɪ" and heard["2"] == "t uː"


def test_phonemes_come_from_the_lexicon_without_espeak(monkeypatch, capsys):
    """The shipped lexicon holds espeak-ng's phonemes of the words; with espeak-ng not installed (it is GPL and
    optional at run time) a lexicon word still gets them, and a word outside it gets none rather than an error."""
    import shutil

    from vivavoce.model.spelling import Phonemizer, load_lexicon

    lexicon = load_lexicon()
    assert len(lexicon) > 20000 and {"penguins", "fly", "2", "kilometres"} <= set(lexicon)
    if shutil.which("espeak-ng"):  # the lexicon is espeak-ng's own output, word for word
        words = ["penguins", "kilometres", "2", "the"]
        assert [Phonemizer(lexicon=False)(w) for w in words] == [lexicon[w] for w in words]
    monkeypatch.setenv("PATH", "/nonexistent")
    ph = Phonemizer()
    assert ph("penguins") == lexicon["penguins"] and ph.unheard == 0
    assert ph("zqxjvbrrt") == [] and ph.unheard == 1
    ph.prime(["fly", "qqqzzk", "zqxjvbrrt"])
    assert ph("fly") == lexicon["fly"] and ph.unheard == 2
    assert capsys.readouterr().err.count("espeak-ng is not installed") == 1  # said once, on one line


def test_phone_track_names_the_phoneme_being_said(backbone):
    """With the phone track, the row whose logits predict a code holds that code's phoneme (measured: the last
    phoneme of its word to start by then), the phonemes around it in the word and how long it has lasted; where
    nothing is measured it follows the duration table, and the words' onsets are the sums of their phonemes'."""
    from vivavoce.model.spelling import PHONE_AGES, TRACK_AT, spelling_ids

    config = SpeechLMConfig(split_spelling=True, split_phonemes=True, split_phone_track=True)
    proc = SpeechLMProcessor(backbone.tokenizer, config, ProcessorConfig(phone_tokens={"*": 3.0}))
    text = "Penguins can't fly."
    ids = proc.text_ids(text)
    words = proc.words(ids)
    phones = [proc.phones_of(w)[0] for _, w in words]
    assert phones[0] and phones[2]
    # Measured: each phoneme lasts 2 codes, a word's last 5 (a pause after it).
    onsets, phone_onsets, at = [None] * len(ids), [None] * len(ids), 0
    for (a, _), ph in zip(words, phones):
        onsets[a], phone_onsets[a] = at, [at + 2 * i for i in range(len(ph))]
        at += 2 * len(ph) + 3
    reply = ChatTurn("assistant", text, speech=codes(at, 1), onsets=onsets, phone_onsets=phone_onsets)
    grid = proc.encode([ChatTurn("user", text), reply], "tts")
    t, s = grid.tensors()
    rows = proc.spelling_ids(t, s, phonemes=True, phone_track=True, phone_index=torch.tensor([grid.phone_index]))
    start = grid.speech_ids.index(proc.sos)  # the S position: its logits predict code 0
    said = []
    for j in range(at):
        w = max(i for i, o in enumerate(x for x in onsets if x is not None) if o <= j)
        k = min((j - phone_onsets[words[w][0]][0]) // 2, len(phones[w]) - 1)
        cur, before, after, age = rows[0, start + j, TRACK_AT:].tolist()
        assert grid.phone_index[start + j] == k
        assert (cur, before) == (phones[w][k], phones[w][k - 1] if k else 0)
        assert after == (phones[w][k + 1] if k + 1 < len(phones[w]) else 0)
        said.append(age)
    assert said[:6] == [1, 2, 1, 2, 1, 2] and max(said) == 5  # a word's last phoneme runs on into the pause
    assert not rows[0, :start, TRACK_AT:].any() and all(i == -1 for i in grid.phone_index[:start])
    # Estimated (generation): 3 positions a phoneme, and the next word starts when the last one is done.
    assert [o for o in proc.estimate_onsets(ids) if o is not None] == [0, 3 * len(phones[0]),
                                                                       3 * (len(phones[0]) + len(phones[1]))]
    grid = proc.encode([ChatTurn("user", text), ChatTurn("assistant", text, speech=codes(40, 1))], "tts")
    t, s = grid.tensors()
    rows = proc.spelling_ids(t, s, phonemes=True, phone_track=True)[0]
    start = grid.speech_ids.index(proc.sos)
    assert [rows[start + j, TRACK_AT].item() for j in range(3 * len(phones[0]))] == [p for p in phones[0]
                                                                                    for _ in range(3)]
    assert [rows[start + j, TRACK_AT + 3].item() for j in range(6)] == [1, 2, 3, 1, 2, 3]
    assert PHONE_AGES > 6
    track = proc.spelling_track(phonemes=True, phone_track=True)
    calls, timing = [], track.timing
    track.timing = lambda *a: calls.append(a) or timing(*a)
    assert torch.equal(spelling_ids(track, t, s)[0], rows) and len(calls) == len(words)  # timed once a word


@pytest.mark.parametrize("inputs", ["letters", "phonemes", "phone track"])
def test_spelling_input_in_generation_matches_the_grid(backbone, model, inputs):
    """The spelling rows a session feeds as it decodes (guided text lane rewound between words) are the rows the
    trainer computes from the finished grid: greedy codes are the argmax of a full forward over that grid."""
    phonemes, track = inputs != "letters", inputs == "phone track"
    config = replace(model.config, split_spelling=True, split_phonemes=phonemes, split_phone_track=track)
    proc = SpeechLMProcessor(backbone.tokenizer, config, ProcessorConfig(phone_tokens={"*": 1.5}))
    m = SpeechLM(backbone, config).eval()
    user = codes(14, 5)
    grid = proc.encode([ChatTurn("user", speech=user)], "s2s", add_generation_prompt=True)
    t, s = grid.tensors()
    spell = m.speech_split_spelling
    tables = [spell.letters, spell.age] + [spell.phones] * phonemes + [spell.track] * track
    with torch.no_grad():
        spelled = m(t, s, spelling_ids=proc.spelling_ids(t, s, phonemes=phonemes, phone_track=track))
        assert torch.equal(spelled.speech_logits, model(t, s).speech_logits)
        for seed, table in enumerate(tables):
            table.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed))
            table.weight[0] = 0
    fast = FastDecoder.for_speechlm(m, FastDecodeConfig("float32", max_len=256))
    session = SpeechSession(m, proc, fast, keep_text_cache=False)
    session.push(user)
    cfg = GenerationConfig(mode="guided", temperature=0, text_repetition_penalty=1.0, min_speech_tokens=0,
                           max_speech_tokens=24, max_text_tokens=6, text_lead=1)  # fmt: skip
    out = list(session.respond(cfg))
    text = [x for k, x in out if k == "text"]
    speech = [x for k, x in out if k == "speech"]
    assert text and speech
    grid = proc.encode([ChatTurn("user", speech=user), ChatTurn("assistant", proc.decode_text(text), speech=speech)],
                       "s2s")  # fmt: skip
    t, s = grid.tensors()
    spelling = proc.spelling_ids(t, s, phonemes=phonemes, phone_track=track)
    if track:
        assert spelling[..., -1].any()  # the track was there to follow
    with torch.no_grad():
        full = m(t, s, spelling_ids=spelling).speech_logits[0]
        blind = m(t, s, spelling_ids=torch.zeros_like(spelling)).speech_logits[0]
    at = [(p, c) for p, c in enumerate(grid.speech_targets) if c != IGNORE and c < 1024]
    assert len(at) == len(speech)
    assert all(int(full[p, :1024].argmax()) == c for p, c in at)
    assert any(int(blind[p, :1024].argmax()) != c for p, c in at)  # the rows did steer the codes
    with pytest.raises(VivavoceError, match="spelling"):
        m.branches_from_hidden(m.shared_hidden(t, s), text=False, speech_ids=s, text_ids=t)


@pytest.mark.parametrize("mode,decoder,layout,lead", [("true", "reference", "aligned", 12),
                                                     ("guided", "reference", "aligned", 12),
                                                     ("guided", "fast", "aligned", 12), ("guided", "fast", "aligned", 1),
                                                     ("guided", "fast", "lead", 12)])  # fmt: skip
def test_generation_follows_the_processor_layout(model, backbone, mode, decoder, layout, lead):
    """Greedy tokens from the incremental session (user speech pushed in pieces) are the argmax of a full
    forward over the processor's grid of the same conversation (the fast decoder as the engine runs it). In the
    aligned layout the text is written as a text reply, then spoken at its estimated onsets; on the fast decoder
    the two lanes interleave (text_lead 1: the text lane is taken up again before almost every word)."""
    proc = SpeechLMProcessor(backbone.tokenizer, model.config, ProcessorConfig(guided_layout=layout))
    user = codes(14, 5)
    if decoder == "fast":
        fast = FastDecoder.for_speechlm(model, FastDecodeConfig("float32", max_len=256))
        session = SpeechSession(model, proc, fast, keep_text_cache=False)
    else:
        session = SpeechSession(model, proc)
    for piece in (user[:5], user[5:9], user[9:]):
        session.push(piece)
    cfg = GenerationConfig(mode=mode, temperature=0, text_repetition_penalty=1.0, min_speech_tokens=0,
                           max_speech_tokens=6 if lead > 1 else 14, max_text_tokens=5, text_lead=lead)  # fmt: skip
    prefilled = session.decoder.length
    out = list(session.respond(cfg))
    kinds = "".join(k[0] for k, _ in out)
    if lead == 1:  # the text came in pieces between the codes
        assert kinds.startswith("t") and "st" in kinds
    if decoder == "fast":  # pre-fill ran the text branch too (its cache has no hole for guided text to attend to)
        assert all((layer.k[:, :prefilled].abs().sum(-1) > 0).all() for layer in fast.text.layers)
    text = [t for k, t in out if k == "text"]
    speech = [t for k, t in out if k == "speech"]
    assert len(speech) <= cfg.max_speech_tokens and (mode == "true") == (not text)
    reply = ChatTurn("assistant", proc.decode_text(text) if text else None, speech=speech)
    grid = proc.encode([ChatTurn("user", speech=user), reply], "s2s")
    assert proc.text_ids(reply.text or "") == text  # the text round-trips through the tokenizer
    t, s = grid.tensors()
    with torch.no_grad():
        full = model(t, s)
    for p in np.flatnonzero(np.array(grid.speech_targets) != IGNORE):
        target = grid.speech_targets[p]
        if target in speech:  # codes (S is forced, E may be forced by the length limit)
            logits = full.speech_logits[0, p].clone()
            logits[[proc.sos, proc.eos]] = float("-inf")
            assert int(logits.argmax()) == target
    if layout == "aligned" and text:
        grid = proc.encode([ChatTurn("user", speech=user), ChatTurn("assistant", reply.text)], "s2s")
        with torch.no_grad():
            full = model(*grid.tensors())
    for p in np.flatnonzero(np.array(grid.text_targets) != IGNORE):
        if grid.text_targets[p] != proc.im_end:
            assert int(full.text_logits[0, p].argmax()) == grid.text_targets[p]


def test_generation_speaks_a_given_text_at_its_onsets(model, proc):
    fast = FastDecoder.for_speechlm(model, FastDecodeConfig("float32", max_len=256))
    session = SpeechSession(model, proc, fast, mode="tts")
    session.push_text("Paris is the capital of France.")
    cfg = GenerationConfig(mode="guided", temperature=0, min_speech_tokens=0, max_speech_tokens=30)
    out = list(session.respond(cfg, text="Paris is lovely."))
    assert [t for k, t in out if k == "text"] == proc.text_ids("Paris is lovely.")
    speech = [t for k, t in out if k == "speech"]
    grid = proc.encode([ChatTurn("user", "Paris is the capital of France."),
                        ChatTurn("assistant", "Paris is lovely.", speech=speech)], "tts")  # fmt: skip
    with torch.no_grad():
        full = model(*grid.tensors())
    targets = [(p, t) for p, t in enumerate(grid.speech_targets) if t != IGNORE and t in speech]
    assert targets and all(int(full.speech_logits[0, p, :1024].argmax()) == t for p, t in targets)
    with pytest.raises(VivavoceError, match="guided"):
        session.push_text("Hi")
        list(session.respond(replace(cfg, mode="true"), text="Hello."))


def test_generation_min_and_max_length(backbone, proc):
    m = SpeechLM(backbone, SpeechLMConfig(seed=3)).eval()
    with torch.no_grad():
        m.speech_head.weight[m.config.eos] = m.speech_head.weight[m.config.eos] * 0 + 1.0  # end-of-speech everywhere
    session = SpeechSession(m, proc, FastDecoder.for_speechlm(m, FastDecodeConfig("float32", max_len=512)))
    session.push(codes(5))
    got = [t for k, t in session.respond(GenerationConfig(mode="true", min_speech_tokens=3, seed=0)) if k == "speech"]
    assert len(got) == 3  # EOS wanted at once, held back until the minimum
    with torch.no_grad():
        m.speech_head.weight[m.config.eos] = -m.speech_head.weight[m.config.eos]  # end-of-speech never
    session = SpeechSession(m, proc, FastDecoder.for_speechlm(m, FastDecodeConfig("float32", max_len=512)))
    session.push(codes(5))
    got = [t for k, t in session.respond(GenerationConfig(mode="true", max_speech_tokens=7, seed=0)) if k == "speech"]
    assert len(got) == 7 and all(0 <= t < 1024 for t in got)
    # A second turn in the same session (the first reply's end is fed first) keeps working.
    session.push(codes(3))
    assert len(list(session.respond(GenerationConfig(mode="true", min_speech_tokens=0, max_speech_tokens=2)))) == 2
    with pytest.raises(VivavoceError, match="nothing to answer"):
        list(session.respond())
    with pytest.raises(VivavoceError, match="mode"):
        session.push([1])
        list(session.respond(GenerationConfig(mode="loud")))


def test_guided_speech_ends_a_set_tail_after_its_last_word(backbone, proc):
    """A speech branch that never chooses end-of-speech stops `guided_tail_tokens` codes after the last word of
    its text was due, not at max_speech_tokens (a round-10 checkpoint babbled on for 30 s past its text)."""
    assert proc.config.guided_layout == "aligned"
    m = SpeechLM(backbone, SpeechLMConfig(seed=3)).eval()
    with torch.no_grad():
        m.speech_head.weight[m.config.eos] = -1.0  # end-of-speech never (as in the test above)
    text = "Paris is lovely in spring."
    last = max(proc.aligned_positions(proc.text_ids(text)))
    for tail, expect in ((7, last + 7), (0, 120)):
        session = SpeechSession(m, proc, FastDecoder.for_speechlm(m, FastDecodeConfig("float32", max_len=512)),
                                mode="tts")  # fmt: skip
        session.push_text("Say something about Paris.")
        cfg = GenerationConfig(mode="guided", seed=0, max_speech_tokens=120, guided_tail_tokens=tail)
        speech = [t for k, t in session.respond(cfg, text=text) if k == "speech"]
        assert len(speech) == expect and m.config.eos not in speech
    with pytest.raises(VivavoceError, match="guided_tail_tokens"):
        GenerationConfig(guided_tail_tokens=-1).check()


def test_sampling_options():
    logits = torch.tensor([0.0, 5.0, 4.9, -3.0])
    g = torch.Generator().manual_seed(0)
    assert sample(logits, 0) == 1
    assert {sample(logits, 1.0, top_k=1, generator=g) for _ in range(20)} == {1}
    assert {sample(logits, 1.0, top_k=2, generator=g) for _ in range(50)} == {1, 2}
    assert {sample(logits, 5.0, top_p=0.3, generator=g) for _ in range(30)} == {1}


def test_checkpoint_round_trip(backbone, model, tmp_path):
    path = tmp_path / "speechlm.safetensors"
    model.save_trainable(path, extra={"processor": asdict(ProcessorConfig(guided_delay=3))})
    saved = checkpoint_metadata(path)["processor"]
    assert ProcessorConfig.layout_of(saved) == ProcessorConfig(guided_delay=3)  # the layout decoding must match
    old = {k: v for k, v in saved.items() if not k.startswith(("guided_layout", "onset_"))}
    assert ProcessorConfig.layout_of(old).guided_layout == "lead"  # checkpoints from before the aligned layout
    config, state = read_checkpoint(path)
    assert config == model.config and set(state) == set(model.trainable_state_dict())
    assert not any(k.startswith(("text_", "shared_")) for k in state)
    loaded = SpeechLM.load(path, backbone)
    for k, v in model.trainable_state_dict().items():
        assert torch.equal(loaded.trainable_state_dict()[k], v)
    small = tmp_path / "bf16.safetensors"
    model.save_trainable(small, dtype=torch.bfloat16)
    assert small.stat().st_size < 0.55 * path.stat().st_size
    other = SpeechLM(backbone, replace(model.config, split_layers=2))
    with pytest.raises(VivavoceError, match="made for"):
        other.load_trainable(path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(VivavoceError, match="not a safetensors"):
        read_checkpoint(junk)
    with pytest.raises(VivavoceError, match="no speech LM checkpoint"):
        read_checkpoint(tmp_path / "missing.safetensors")



def test_session_samples_at_the_checkpoints_temperature(backbone, model, proc, tmp_path):
    """A checkpoint may name the speech temperature it reads best at ("generation" in its metadata); a generation
    config that names none samples at it, one that names its own overrides it."""
    path = tmp_path / "tuned.safetensors"
    model.save_trainable(path, extra={"generation": {"temperature": 0.3}})
    tuned = SpeechLM.load(path, backbone)
    assert tuned.speech_temperature == 0.3

    def reply(temperature: float | None) -> list[int]:
        session = SpeechSession(tuned, proc)
        session.push(codes(9, 7))
        cfg = GenerationConfig(mode="true", temperature=temperature, seed=0, min_speech_tokens=0, max_speech_tokens=12)
        return list(session.respond(cfg))

    assert reply(None) == reply(0.3) != reply(0.8)
    for bad in ("hot", -1, True):
        model.save_trainable(path, extra={"generation": {"temperature": bad}})
        with pytest.raises(VivavoceError, match="generation temperature"):
            SpeechLM.load(path, backbone)


def test_speech_adapters_act_at_speech_positions_only(backbone, model, proc, tmp_path):
    """Speech-gated adapters on the shared layers: zero at the start (the model without them); once trained they
    change what follows speech, never a text-only forward; the cached path, the fast decoder and a checkpoint
    (also one started from a checkpoint without them) all agree; the backbone's own layers stay untouched."""
    m = SpeechLM(backbone, replace(model.config, speech_adapter_rank=4)).eval()
    ids = torch.tensor([backbone.chat_ids([{"role": "user", "content": QUESTION}])])
    grid = proc.encode([ChatTurn("user", speech=codes(15))], "s2s", add_generation_prompt=True)
    t, s = grid.tensors()
    with torch.no_grad():
        base = model(t, s)
        assert torch.equal(m(t, s).text_logits, base.text_logits)  # up-projections start at zero
        for a in m.speech_adapters:
            for part in a.parts.values():
                part.up.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
        out = m(t, s)
        text_only = m(ids, torch.full_like(ids, NONE))
        h = m.shared_hidden(t, s)
        th, sh = m.branches_from_hidden(h, speech_ids=s, text_ids=t)
    assert torch.equal(text_only.text_logits, backbone.model(input_ids=ids).logits)
    first = grid.speech_ids.index(next(c for c in grid.speech_ids if c != NONE))
    assert torch.equal(out.text_logits[0, :first], base.text_logits[0, :first])  # before the speech: untouched
    assert (out.text_logits[0, -1] - base.text_logits[0, -1]).abs().max() > 1e-2  # after it: re-mapped
    assert torch.allclose(m.text_head(th), out.text_logits, atol=1e-4)
    assert torch.allclose(m.speech_head(sh), out.speech_logits, atol=1e-4)
    assert type(backbone.layers[0].self_attn.q_proj) is torch.nn.Linear  # the backbone itself is not adapted
    assert m.shared_layers[0].self_attn.q_proj.weight is backbone.layers[0].self_attn.q_proj.weight
    dec = FastDecoder.for_speechlm(m, FastDecodeConfig("float32", max_len=128))
    tl, sl = dec.step(grid.text_ids[: first + 5], grid.speech_ids[: first + 5])  # a chunk, text and speech
    for p in range(first + 5, len(grid)):  # then one position a step: speech ones, then text ones
        tl, sl = dec.step([grid.text_ids[p]], [grid.speech_ids[p]])
    assert (tl - out.text_logits[0, -1]).abs().max() < 1e-3 * out.text_logits[0, -1].abs().max()
    assert (sl - out.speech_logits[0, -1]).abs().max() < 1e-3 * out.speech_logits[0, -1].abs().max()
    path = tmp_path / "adapters.safetensors"
    m.save_trainable(path)
    loaded = SpeechLM.load(path, backbone)
    assert all(torch.equal(a, b) for a, b in zip(loaded.speech_adapters.parameters(), m.speech_adapters.parameters()))
    plain = tmp_path / "plain.safetensors"
    model.save_trainable(plain)
    grown = SpeechLM(backbone, replace(model.config, speech_adapter_rank=4))
    with pytest.raises(VivavoceError, match="made for"):
        grown.load_trainable(plain)
    grown.load_trainable(plain, across_stages=True)
    assert all(float(p.up.detach().abs().sum()) == 0 for a in grown.speech_adapters for p in a.parts.values())
    with pytest.raises(VivavoceError, match="speech adapters"):
        SpeechLM(backbone, replace(model.config, speech_adapter_rank=4, train_shared=True))


def test_heard_adapters_act_on_the_users_speech_only(backbone, model, proc):
    """Scope "heard": the adapters act at the user's codes only, found from the turn headers in a whole grid. The
    model's own speech (reading a written text) then runs as without adapters; a spoken reply reads what they
    re-mapped. Both decoders, given the marks, agree with the full forward; a session marks the user's codes, not
    its reply's (nor the reply's closing, fed with the next turn)."""
    from vivavoce.model.generate import ReferenceDecoder

    m = SpeechLM(backbone, replace(model.config, speech_adapter_rank=4, speech_adapter_scope="heard")).eval()
    with torch.no_grad():
        for a in m.speech_adapters:
            for part in a.parts.values():
                part.up.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    user, reply = codes(12), codes(8, seed=1)
    grid = proc.encode([ChatTurn("user", speech=user), ChatTurn("assistant", speech=reply)], "s2s")
    t, s = grid.tensors()
    heard = m.heard_speech(t, s)
    spoken = [p for p, c in enumerate(grid.speech_ids) if c != NONE]
    assert [bool(heard[0, p]) for p in spoken] == [True] * (len(user) + 2) + [False] * (len(reply) + 2)
    reading = proc.encode([ChatTurn("user", text=QUESTION), ChatTurn("assistant", speech=reply)], "tts")
    rt, rs = reading.tensors()
    with torch.no_grad():
        assert torch.equal(m(rt, rs).speech_logits, model(rt, rs).speech_logits)  # no user speech: no adapter
        out, base = m(t, s), model(t, s)
        assert torch.equal(m(t, s, heard=heard).speech_logits, out.speech_logits)
    first = spoken[0]
    assert torch.equal(out.text_logits[0, :first], base.text_logits[0, :first])
    assert (out.speech_logits[0, -1] - base.speech_logits[0, -1]).abs().max() > 1e-2  # the reply reads re-mapped K/V
    marks = heard[0].tolist()
    for dec in (FastDecoder.for_speechlm(m, FastDecodeConfig("float32", max_len=128)), ReferenceDecoder(m)):
        dec.step(grid.text_ids[: first + 5], grid.speech_ids[: first + 5], heard=marks[: first + 5])
        for p in range(first + 5, len(grid)):
            tl, sl = dec.step([grid.text_ids[p]], [grid.speech_ids[p]], heard=[marks[p]])
        assert (sl - out.speech_logits[0, -1]).abs().max() < 1e-3 * out.speech_logits[0, -1].abs().max()
        with pytest.raises(VivavoceError, match="pass `heard`"):
            dec.step([NONE], [5])

    dec = FastDecoder.for_speechlm(m, FastDecodeConfig("float32", max_len=256))
    fed, step = [], dec.step

    def spy(text_ids, speech_ids, *args, heard=None, **kwargs):
        fed.extend((c, h) for c, h in zip(speech_ids, heard) if c != NONE)
        return step(text_ids, speech_ids, *args, heard=heard, **kwargs)

    dec.step = spy
    session = SpeechSession(m, proc, dec, mode="s2s")
    session.push(user[:5])
    session.push(user[5:])
    reply_config = GenerationConfig(mode="true", seed=0, max_speech_tokens=6)
    said = [c for kind, c in session.respond(reply_config) if kind == "speech"]
    session.push(codes(4, seed=2))
    flags = [h for _, h in fed]
    assert len(said) >= 2 and flags == [True] * (len(user) + 2) + [False] * (len(flags) - len(user) - 7) + [True] * 5
    with pytest.raises(VivavoceError, match="speech_adapter_scope"):
        SpeechLM(backbone, replace(model.config, speech_adapter_rank=4, speech_adapter_scope="user"))


def test_stage_1_checkpoint_starts_a_stage_2_model(backbone, model, tmp_path):
    """Stage 2 starts from stage 1's weights: the speech parts load, the shared layers' trainable copy keeps the
    backbone's weights; without `across_stages` the differing config is refused."""
    path = tmp_path / "stage1.safetensors"
    model.save_trainable(path)
    stage2 = SpeechLM(backbone, replace(model.config, train_shared=True))
    with pytest.raises(VivavoceError, match="made for"):
        stage2.load_trainable(path)
    with torch.no_grad():  # so that equal weights below can only come from the file
        for p in stage2.trainable_modules()["speech_layers"].parameters():
            p.zero_()
        stage2.speech_embed.weight.zero_()
        stage2.speech_head.weight.zero_()
    stage2.load_trainable(path, across_stages=True)
    own = stage2.trainable_state_dict()
    for k, v in model.trainable_state_dict().items():
        assert torch.equal(own[k], v)
    for shared, original in zip(stage2.shared_layers, backbone.layers):
        assert shared is not original and all(
            torch.equal(a, b) for a, b in zip(shared.state_dict().values(), original.state_dict().values())
        )
    del stage2
    grown = SpeechLM(backbone, replace(model.config, split_spelling=True))  # a new split input starts at zero
    grown.load_trainable(path, across_stages=True)
    assert torch.equal(grown.speech_head.weight, model.speech_head.weight)
    assert grown.speech_split_spelling.letters.weight.abs().sum() == 0
    voiced = SpeechLM(backbone, replace(grown.config, split_phonemes=True))  # phonemes on a spelling checkpoint
    grown.speech_split_spelling.letters.weight.data.normal_()
    grown.save_trainable(path)
    voiced.load_trainable(path, across_stages=True)
    assert torch.equal(voiced.speech_split_spelling.letters.weight, grown.speech_split_spelling.letters.weight)
    assert voiced.speech_split_spelling.phones.weight.abs().sum() == 0
    tracked = SpeechLM(backbone, replace(voiced.config, split_phone_track=True))  # the phone track on phonemes
    tracked.load_trainable(path, across_stages=True)
    assert torch.equal(tracked.speech_split_spelling.letters.weight, grown.speech_split_spelling.letters.weight)
    assert tracked.speech_split_spelling.track.weight.abs().sum() == 0
    with pytest.raises(VivavoceError, match="split_spelling"):
        SpeechLM(backbone, replace(model.config, split_phonemes=True))
    with pytest.raises(VivavoceError, match="split_phonemes"):
        SpeechLM(backbone, replace(model.config, split_spelling=True, split_phone_track=True))


def test_engine_without_checkpoint_is_one_line_error(tmp_path):
    from vivavoce.engine.speechlm import SpeechLMEngine, SpeechLMEngineConfig

    with pytest.raises(VivavoceError) as e:
        SpeechLMEngine(SpeechLMEngineConfig(checkpoint=str(tmp_path / "none.safetensors")))
    assert "no trained speech LM checkpoint" in str(e.value) and "\n" not in str(e.value)


def test_engine_speaks_through_the_codec_its_tokens_are_of(model, tmp_path):
    """A speech LM trained over another codec's tokens runs with that codec folder (`codec=`); the shipped codec
    refuses it with one line."""
    import shutil

    from vivavoce.codec.checkpoint import load_model, save_model
    from vivavoce.codec.codec import default_checkpoint_dir, tokenizer_fingerprint
    from vivavoce.codec.tokenizer import Tokenizer, TokenizerConfig
    from vivavoce.engine.speechlm import SpeechLMEngine, SpeechLMEngineConfig

    other = tmp_path / "codec"
    shutil.copytree(default_checkpoint_dir(), other)
    tok = load_model(other / "tokenizer.safetensors", Tokenizer, TokenizerConfig, "tokenizer")
    with torch.no_grad():
        tok.to_fsq.bias.add_(0.5)  # another tokenizer: other codes, another fingerprint
    save_model(other / "tokenizer.safetensors", tok, "tokenizer")
    path = tmp_path / "speechlm.safetensors"
    model.save_trainable(path, dtype=torch.bfloat16, extra={"codec_tokenizer": tokenizer_fingerprint(tok)})
    with pytest.raises(VivavoceError, match="retrain the speech LM") as e:
        SpeechLMEngine(SpeechLMEngineConfig(checkpoint=str(path)))
    assert "\n" not in str(e.value)
    engine = SpeechLMEngine(SpeechLMEngineConfig(checkpoint=str(path), codec=str(other)))
    assert engine.codec.tokenizer_fingerprint == tokenizer_fingerprint(tok)


def test_engine_streams_audio_with_a_random_checkpoint(model, question_16k, tmp_path):
    from vivavoce.codec import Codec
    from vivavoce.engine import AudioChunk, ResponseOptions, TextDelta, collect
    from vivavoce.engine.speechlm import SpeechLMEngine, SpeechLMEngineConfig

    voice = Codec.load().speaker(question_16k).tolist()
    path = tmp_path / "speechlm.safetensors"
    model.save_trainable(path, dtype=torch.bfloat16, extra={"voice_dvector": voice})
    cfg = SpeechLMEngineConfig(checkpoint=str(path), generation=GenerationConfig(max_speech_tokens=15, seed=0))
    engine = SpeechLMEngine(cfg)
    events = list(engine.respond(question_16k, [], ResponseOptions(mode="guided", max_answer_tokens=8)))
    chunks = [e for e in events if isinstance(e, AudioChunk)]
    assert len(chunks) >= 2 and all(c.rate == engine.sample_rate for c in chunks)  # streamed, not all at once
    assert any(isinstance(e, TextDelta) for e in events)
    answer = collect(iter(events))
    assert 0.15 < answer.audio.size / answer.rate < 1.3  # <= 15 tokens at 25 Hz
    true = collect(engine.respond(question_16k, [], ResponseOptions(mode="true")))
    assert true.text == "" and true.audio.size > 0
    text = list(engine.respond(question_16k, [], ResponseOptions(mode="text", max_answer_tokens=8)))
    assert text and all(isinstance(e, TextDelta) for e in text)  # S→T: written, not spoken
    assert collect(iter(text)).text == answer.text  # what guided mode writes, under the same prompt
    with pytest.raises(VivavoceError, match="no speech"):
        list(engine.respond(np.zeros(16000, dtype=np.float32)))
    # Streaming input: 40 ms pieces (a token) are encoded and pre-filled as they come; the answer needs the rest.
    live = engine.live_turn()
    for i in range(0, question_16k.size, 640):
        live.push(question_16k[i : i + 640])
    streamed = live.tokens
    assert streamed >= len(engine.codec.encode(question_16k)) - 1
    answer = collect(live.answer(ResponseOptions(mode="true")))
    assert answer.audio.size > 0 and live.tokens == len(engine.codec.encode(question_16k))
    assert engine._lock.acquire(timeout=1)  # the live turn let go of the engine
    engine._lock.release()


@pytest.mark.parametrize("decoder", ["reference", "fast"])
def test_reset_forgets_the_turn_and_replays_it_identically(model, proc, decoder):
    """After reset() the session is back at the system prompt: the same turn gives the same greedy reply."""
    if decoder == "fast":
        session = SpeechSession(model, proc, FastDecoder.for_speechlm(model, FastDecodeConfig("float32", max_len=256)))
    else:
        session = SpeechSession(model, proc)
    prompt_length = session.decoder.length
    cfg = GenerationConfig(mode="true", temperature=0, min_speech_tokens=0, max_speech_tokens=5)
    session.push(codes(9, 7))
    first = list(session.respond(cfg))
    assert session.decoder.length > prompt_length
    session.reset()
    assert session.decoder.length == prompt_length
    session.push(codes(9, 7))
    assert list(session.respond(cfg)) == first


@pytest.mark.parametrize("decoder", ["reference", "fast"])
def test_text_mode_writes_the_frozen_llms_answer_and_leaves_the_session_usable(backbone, model, proc, decoder):
    """T→T in text mode is the frozen LLM's own greedy answer (same prompt, same repetition penalty); S→T writes
    text only, and the next turn follows it."""
    from vivavoce.model.textgen import TextGenConfig, answer

    fast = FastDecoder.for_speechlm(model, FastDecodeConfig("float32", max_len=256)) if decoder == "fast" else None
    session = SpeechSession(model, proc, fast, mode="s2s")  # the LLM's own spoken-style system prompt
    session.push_text(QUESTION)
    out = list(session.respond(GenerationConfig(mode="text", max_text_tokens=20, answer_words=0)))
    assert {kind for kind, _ in out} == {"text"}
    written = proc.decode_text([tok for _, tok in out]).strip()
    assert written == answer(backbone, QUESTION, TextGenConfig(max_new_tokens=20))
    assert "Paris" in written
    # a spoken answer stops at its first sentence end past answer_words, as the cascade's does
    moon, lengths = "Tell me about the moon.", {}
    for words in (0, 3):
        session.reset()
        session.push_text(moon)
        out = list(session.respond(GenerationConfig(mode="text", max_text_tokens=30, answer_words=words)))
        lengths[words] = len(out)
        said = proc.decode_text([tok for _, tok in out]).strip()
        assert said == answer(backbone, moon, TextGenConfig(max_new_tokens=30, answer_words=words))
    assert said.endswith("breathtaking sight.")  # the first of its sentences; the whole runs on to the limit
    assert lengths[0] == 30 and lengths[3] < 30
    session.reset()
    session.push(codes(9, 3))
    heard = list(session.respond(GenerationConfig(mode="text", max_text_tokens=6)))
    assert len(heard) == 6 and {kind for kind, _ in heard} == {"text"}  # a random model: runs to the limit
    before = session.length
    session.push(codes(5, 4))  # the reply's closing is fed first, then the new turn
    assert session.decoder.length == before + len(proc.header_ids("user")) + 1 + 5
    assert [k for k, _ in session.respond(GenerationConfig(mode="true", temperature=0, min_speech_tokens=0, max_speech_tokens=3))]
