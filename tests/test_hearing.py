"""The hearing encoder (model/hearing.py): CTC over the LLM's tokens, its place in the speech LM, streaming."""

from __future__ import annotations

import json
import random

import pytest
import torch

from conftest_train import one_torch_thread  # noqa: F401  (module fixture)
from vivavoce.errors import VivavoceError
from vivavoce.model.fastdecode import FastDecodeConfig, FastDecoder
from vivavoce.model.generate import SpeechSession
from vivavoce.model.hearing import HearingConfig, HearingEncoder, carried_codes, heard_input, heard_spans
from vivavoce.model.processor import SpeechLMProcessor
from vivavoce.model.speechlm import SpeechLM, SpeechLMConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(hearing_vocab=40, hearing_dim=32, hearing_blocks=2, hearing_kernel=5)


def codes(n: int, seed: int = 0) -> list[int]:
    return torch.randint(0, 1024, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def random_encoder(hidden: int, vocab_ids: torch.Tensor, table: torch.Tensor, seed: int = 0) -> HearingEncoder:
    torch.manual_seed(seed)
    enc = HearingEncoder(HearingConfig(vocab=len(vocab_ids), hidden=hidden, dim=32, blocks=2, kernel=5))
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    enc.attach(table, vocab_ids)
    return enc.eval()


def test_encoder_learns_words_by_ctc():
    """Three 'words' said as fixed code patterns with varied lengths and silence: after a short CTC fit the best
    path gives each utterance's word ids, whatever the order."""
    torch.manual_seed(0)
    words = {101: [5, 6, 7], 202: [300, 301], 303: [40, 41, 42, 43]}
    enc = HearingEncoder(HearingConfig(vocab=3, hidden=16, dim=48, blocks=2, kernel=5))
    enc.attach(torch.randn(400, 16), torch.tensor(sorted(words)))
    index = {t: i for i, t in enumerate(sorted(words))}
    rng = random.Random(0)

    def utterance():
        ids = [rng.choice(sorted(words)) for _ in range(rng.randint(1, 4))]
        said = [0] * rng.randint(0, 3)
        for t in ids:
            said += [c for c in words[t] for _ in range(rng.randint(1, 2))] + [0] * rng.randint(0, 2)
        return said, ids

    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    for _ in range(250):
        batch = [utterance() for _ in range(16)]
        longest = max(len(s) for s, _ in batch)
        x = torch.tensor([s + [0] * (longest - len(s)) for s, _ in batch])
        loss = enc.ctc_loss(x, torch.tensor([len(s) for s, _ in batch]), [[index[t] for t in ids] for _, ids in batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    tests = [utterance() for _ in range(20)]
    assert sum(enc.greedy(torch.tensor(s)) == ids for s, ids in tests) >= 18
    # the LLM's input at a word's codes leans to that word's embedding row
    with torch.no_grad():
        soft = enc.soft_embedding(torch.tensor([[0, 5, 6, 7, 0]]))[0]
    sims = torch.nn.functional.cosine_similarity(soft[1:].sum(0, keepdim=True), enc.table)
    assert int(sims.argmax()) == index[101]


def test_sampled_softmax_is_the_full_one_when_it_draws_every_token():
    enc = random_encoder(24, torch.arange(50), torch.randn(50, 24))
    x, lengths, targets = torch.tensor([codes(20, 3), codes(20, 4)]), torch.tensor([20, 14]), [[3, 7, 7, 41], [0]]
    full = enc.ctc_loss(x, lengths, targets)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(enc.ctc_loss(x, lengths, targets, negatives=5000, generator=g), full)
    some = enc.ctc_loss(x, lengths, targets, negatives=5, generator=g)
    assert torch.isfinite(some) and some < full  # fewer tokens compete for each frame


def test_heard_input_streamed_in_pieces_equals_the_whole_turn():
    table = torch.randn(50, 24)
    enc = random_encoder(24, torch.arange(50), table)
    turn = codes(30, 1)
    ids = torch.tensor([[-1, -1, *turn, -1]])
    mask = torch.tensor([[False, False, *[True] * 30, False]])
    whole = heard_input(enc, ids, mask)
    assert heard_spans(mask) == [(0, 2, 32)]
    assert whole[0, :2].abs().sum() == 0 and whole[0, 32].abs().sum() == 0 and whole[0, 2:32].abs().sum() > 0
    before, pieces = [], []
    for lo, hi in ((0, 5), (5, 6), (6, 20), (20, 33)):  # cut inside the turn and at its ends
        part_ids, part_mask = ids[:, lo:hi], mask[:, lo:hi]
        pieces.append(heard_input(enc, part_ids, part_mask, [before]))
        before = carried_codes(before, part_ids[0].tolist(), part_mask[0].tolist(), enc.receptive_field - 1)
    torch.testing.assert_close(torch.cat(pieces, 1), whole)
    assert before == []  # the last piece ends past the turn: the next turn starts afresh
    # two turns in one row are heard apart: the second does not see the first
    two = torch.tensor([[*turn[:10], -1, *turn[:10]]])
    out = heard_input(enc, two, two >= 0)
    torch.testing.assert_close(out[0, 11:], out[0, :10])


@pytest.fixture(scope="module")
def heard_model(backbone):
    cfg = SpeechLMConfig(seed=1, speech_adapter_rank=4, speech_adapter_scope="heard", **SMALL)
    model = SpeechLM(backbone, cfg).eval()
    vocab = torch.randperm(backbone.vocab_size, generator=torch.Generator().manual_seed(0))[:40]
    model.attach_hearing(random_encoder(backbone.hidden_size, vocab, backbone.embed.weight))
    return model


def test_text_only_input_runs_the_backbone_exactly(backbone, heard_model):
    ids = torch.tensor([backbone.chat_ids([{"role": "user", "content": "What is the capital of France?"}])])
    with torch.no_grad():
        ours = heard_model(ids, torch.full_like(ids, -1), speech=False).text_logits
        theirs = backbone.model(input_ids=ids).logits
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("decoder", ["reference", "fast"])
def test_a_turn_pushed_in_pieces_is_heard_as_a_whole(backbone, heard_model, decoder):
    proc = SpeechLMProcessor(backbone.tokenizer, heard_model.config)
    turn = codes(40, 2)
    end = backbone.tokenizer.convert_tokens_to_ids("<|im_end|>")

    def heard(pieces, model=heard_model):
        dec = FastDecoder.for_speechlm(model, FastDecodeConfig(dtype="float32")) if decoder == "fast" else None
        session = SpeechSession(model, proc, decoder=dec, mode="asr")
        for piece in pieces:
            session.push(piece)
        return session._feed([end], [-1], want_speech=False)[0]

    whole = heard([turn])
    torch.testing.assert_close(heard([turn[:7], turn[7:8], turn[8:]]), whole, rtol=1e-4, atol=1e-4)
    without = SpeechLM(backbone, heard_model.config).eval()  # the same shape, its encoder's output zero
    without.load_state_dict(heard_model.state_dict())
    torch.nn.init.zeros_(without.speech_hearing.out.weight)
    torch.nn.init.zeros_(without.speech_hearing.out.bias)
    without.speech_hearing.blank.data.zero_()
    assert (heard([turn], without) - whole).abs().max() > 1e-2  # the encoder's input reaches the text branch


def test_checkpoint_keeps_the_encoder_and_its_tokens(backbone, heard_model, tmp_path):
    path = tmp_path / "lm.safetensors"
    heard_model.save_trainable(path, dtype=torch.bfloat16)
    loaded = SpeechLM.load(path, backbone)
    assert torch.equal(loaded.speech_hearing.vocab_ids, heard_model.speech_hearing.vocab_ids)
    assert torch.equal(loaded.speech_hearing.table, heard_model.speech_hearing.table)
    with pytest.raises(VivavoceError, match="shape"):
        SpeechLM(backbone, SpeechLMConfig(hearing_vocab=41)).attach_hearing(heard_model.speech_hearing)


def test_recipe_trains_and_resumes_into_an_encoder_the_lm_takes(backbone, tmp_path):
    from vivavoce.train.hearing import HearingRecipe, HearingTrainConfig, load_encoder
    from vivavoce.train.lm_data import ExampleConfig
    from vivavoce.train.lm_recipe import LMRecipe, LMTrainConfig
    from vivavoce.train.loop import LoopConfig, train

    rows = []
    for i, text in enumerate(["what is the time", "where is the station", "tell me a story", "what is a star"] * 3):
        split = "dev" if i >= 10 else "train"
        for turn in ("user", "assistant"):
            rows.append({"key": f"c/{i}{turn}", "corpus": "c", "id": f"{i}{turn}", "dialogue": f"d{i}", "turn": turn,
                         "split": split, "text": text, "text_ids": backbone.tokenizer.encode(text),
                         "speech_ids": codes(30, i), "emotion": "neutral", "control": None})  # fmt: skip
    tokens = tmp_path / "tokens.jsonl"
    tokens.write_text("".join(json.dumps(r) + "\n" for r in rows))
    def run(steps: int):
        loop = LoopConfig(out_dir=str(tmp_path / "run"), steps=steps, batch_size=4, eval_every=3, checkpoint_every=3)
        cfg = HearingTrainConfig(loop=loop, model=HearingConfig(dim=16, blocks=1, kernel=3), tokens=[str(tokens)])
        recipe = HearingRecipe(cfg, backbone, log=lambda m: None)
        assert cfg.model.vocab == len({t for r in rows if r["split"] == "train" for t in r["text_ids"]})
        return train(recipe, loop, {})

    path = run(3)
    assert (tmp_path / "run" / "eval.csv").read_text().splitlines()[0] == "step,ctc,wer"
    first = load_encoder(path, backbone.embed.weight)
    run(4)  # resumes from step 3's checkpoint: one more step
    assert json.loads((tmp_path / "run" / "state.json").read_text())["step"] == 4
    encoder = load_encoder(path, backbone.embed.weight)
    assert not torch.equal(first.out.weight, encoder.out.weight)
    assert torch.equal(encoder.table, backbone.embed.weight[encoder.vocab_ids].float())
    lm_cfg = LMTrainConfig(tokens=str(tokens), init_hearing=str(path), frozen=["speech_hearing"], row_tokens=256,
                           warm_start="init", phase="full", examples=ExampleConfig(
                               tts=False, tts_true=False, s2s=False, s2s_guided=False, s2t=False),
                           loop=LoopConfig(out_dir=str(tmp_path / "lm"), steps=1, batch_size=1))  # fmt: skip
    lm = LMRecipe(lm_cfg, backbone, log=lambda m: None)
    assert lm.model.config.hearing_vocab == encoder.cfg.vocab
    assert torch.equal(lm.model.speech_hearing.out.weight, encoder.out.weight)
    assert not any(p.requires_grad for p in lm.model.speech_hearing.parameters())
