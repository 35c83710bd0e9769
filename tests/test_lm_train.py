"""Speech-LM training: token cache and task examples from real speech, packing, stage-1 steps (loss falls, text
weights untouched), resume after a kill, checkpoint round trip, bad config / manifest -> one-line error."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest_train import kill_after_step, one_torch_thread, run_state  # noqa: F401  (module fixture)
from vivavoce.errors import VivavoceError
from vivavoce.model.speechlm import IGNORE, NONE, SpeechLM
from vivavoce.train.lm_data import build_examples, corpus_rows, load_tokens, tokenize_corpora
from vivavoce.train.lm_recipe import LMRecipe, LMTrainConfig, export_checkpoint, pack
from vivavoce.train.loop import LoopConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SRC = str(Path(__file__).resolve().parents[1] / "src")

# (dialogue, split, user question, assistant answer): spoken by two espeak-ng voices (user) and one (assistant)
DIALOGUES = [
    ("d1", "train", "What is the capital of France?", "The capital of France is Paris."),
    ("d2", "train", "How many legs does a spider have?", "A spider has eight legs."),
    ("d3", "dev", "What colour is the sky?", "The sky is blue on a clear day."),
]



@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A corpus-shaped folder (`vivavoce data` layout) of real speech: 3 dialogues, 9 utterances."""
    from vivavoce.audio.io import resample, write_audio
    from vivavoce.speechtools.tts import EspeakSettings, espeak_synthesize

    root = tmp_path_factory.mktemp("lmcorpus") / "mini"
    rows = []
    for dialogue, split, question, answer in DIALOGUES:
        for uid, turn, text, voice in ((f"{dialogue}.u0", "user", question, "en-gb+f3"),
                                       (f"{dialogue}.u1", "user", question, "en-us+m2"),
                                       (f"{dialogue}.a", "assistant", answer, "en-us")):  # fmt: skip
            audio, rate = espeak_synthesize(text, EspeakSettings(voice, 170, 50))
            rel = f"audio/16k/{split}/{uid}.flac"
            write_audio(root / rel, resample(audio, rate, 16000), 16000)
            rows.append(dict(id=uid, dialogue=dialogue, turn=turn, prompt_id=dialogue, split=split, text=text,
                             voice=voice, emotion="neutral", control=None, audio_16k=rel, phonemes="x"))  # fmt: skip
    (root / "manifests").mkdir()
    (root / "manifests" / "all-shard-0-of-1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def codec():
    from vivavoce.codec import Codec

    return Codec.load()


@pytest.fixture(scope="module")
def tokens(corpus, codec, backbone, tmp_path_factory):
    path = tmp_path_factory.mktemp("lmtokens") / "tokens.jsonl"
    tokenize_corpora([corpus], path, codec=codec, tokenizer=backbone.tokenizer, log=lambda m: None)
    return path


def _cfg(tokens, out, **kw) -> LMTrainConfig:
    loop = LoopConfig(out_dir=str(out), batch_size=2, lr=1e-3, warmup=1, steps=8, checkpoint_every=2, eval_every=4,
                      log_every=1, bf16=False, threads=1)  # fmt: skip
    return LMTrainConfig(tokens=str(tokens), row_tokens=256, dev_rows=4, loop=loop, **kw)


def test_token_cache_and_examples(tokens, corpus, backbone, codec):
    rows = load_tokens(tokens)
    assert len(rows) == 9 and {r["key"].split("/")[0] for r in rows} == {"mini"}
    for r in rows:
        secs = r["speech_ids"] and len(r["speech_ids"]) / r["token_rate"]
        assert 0.8 < secs < 6 and all(0 <= i < 1024 for i in r["speech_ids"])
        assert backbone.tokenizer.decode(r["text_ids"]) == r["text"]
    # a second run finds everything cached and appends nothing
    size = tokens.stat().st_size
    again = tokenize_corpora([corpus], tokens, codec=codec, tokenizer=object(), log=lambda m: None)
    assert len(again) == 9 and tokens.stat().st_size == size
    assert {r["codec"] for r in rows} == {codec.tokenizer_fingerprint}
    for r in rows:  # assistant replies carry word onsets: one per word, rising, inside the speech
        if r["turn"] == "user":
            assert r["word_onsets"] is None
            continue
        onsets = [o for o in r["word_onsets"] if o is not None]
        assert len(onsets) == len(r["text"].split()) and onsets == sorted(onsets) and onsets[-1] < len(r["speech_ids"])
        phones = [p for p in r["phone_onsets"] if p is not None]  # and the onsets of each word's phonemes
        assert [p[0] for p in phones] == onsets and all(p == sorted(p) for p in phones)
        assert sum(map(len, phones)) > 2 * len(phones) and phones[-1][-1] < len(r["speech_ids"])

    for dropped in ({"word_onsets", "phone_onsets"}, {"phone_onsets"}):  # a cache from before the (phone) onsets:
        old = tokens.parent / "before-onsets.jsonl"  # aligned in place, not redone
        old.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in dropped}) + "\n" for r in rows))
        mended = tokenize_corpora([corpus], old, codec=codec, tokenizer=backbone.tokenizer, log=lambda m: None)
        assert sorted(map(json.dumps, mended)) == sorted(map(json.dumps, rows)) == sorted(map(json.dumps,
                                                                                           load_tokens(old)))

    class OtherCodec:  # another tokenizer: every row is redone with its codes, none of the old ones is kept
        tokenizer_fingerprint, token_rate = "0" * 16, 25.0

        def encode(self, audio):
            return np.zeros(audio.size // 640, dtype=np.int64)

    other = tokens.parent / "other.jsonl"
    shutil.copy(tokens, other)
    redone = tokenize_corpora([corpus], other, codec=OtherCodec(), tokenizer=backbone.tokenizer, log=lambda m: None)
    assert len(redone) == 9 and all(r["codec"] == "0" * 16 and not any(r["speech_ids"]) for r in redone)
    train = build_examples(rows, split="train")
    tasks = sorted(e.task for e in train)
    # 2 plain answers -> tts, tts_true; 6 utterances -> asr; 4 user renderings -> s2s, s2s_guided, s2t
    expected = ["tts"] * 2 + ["tts_true"] * 2 + ["asr"] * 6 + ["s2s"] * 4 + ["s2s_guided"] * 4 + ["s2t"] * 4
    assert tasks == sorted(expected)
    assert all(e.split == "train" for e in train) and len(build_examples(rows, split="dev")) == 11
    assert all(e.turns[1].onsets for e in train if e.task in ("tts", "s2s_guided"))
    guided = next(e for e in train if e.task == "s2s_guided")
    answer = next(r for r in rows if r["id"] == "d1.a")
    assert guided.turns[1].text == answer["text"] and guided.turns[1].speech == answer["speech_ids"]


def test_grid_targets_and_packing(tokens, backbone):
    from vivavoce.model.processor import SpeechLMProcessor

    rows = load_tokens(tokens)
    model = SpeechLM(backbone)
    proc = SpeechLMProcessor(backbone.tokenizer, model.config)
    examples = build_examples(rows, split="train")
    grids = [proc.encode(e.turns, mode=e.mode) for e in examples]
    for e, g in zip(examples, grids):
        reply = e.turns[1]
        n_speech = sum(t != IGNORE for t in g.speech_targets)
        n_text = sum(t != IGNORE for t in g.text_targets)
        assert n_speech == (len(reply.speech) + 2 if reply.speech else 0)  # S, codes, E
        assert (n_text > 0) == (reply.text is not None)
    packed = pack(grids, 256)
    assert packed.text_ids.shape == (len(packed), 256) and packed.examples == len(grids)
    n_targets = sum(sum(t != IGNORE for t in g.speech_targets) for g in grids)
    assert int((packed.speech_targets != IGNORE).sum()) == n_targets
    assert int((packed.position_ids == 0).sum()) >= len(grids)  # every example restarts its positions
    # attention stays inside an example: its states in a packed row equal its states alone
    row = 0
    starts = (packed.position_ids[row] == 0).nonzero().flatten().tolist()
    a, b = starts[1], starts[2] if len(starts) > 2 else 256
    with torch.no_grad():
        h_row = model.shared_hidden(packed.text_ids[:1], packed.speech_ids[:1], position_ids=packed.position_ids[:1])
        h_one = model.shared_hidden(packed.text_ids[:1, a:b], packed.speech_ids[:1, a:b])
    assert torch.allclose(h_row[0, a:b], h_one[0], atol=1e-4)


def _text_weights(backbone) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in backbone.model.state_dict().items()}


@pytest.mark.parametrize("phase", ["cached", "full", "cached+spelling", "cached+phonemes", "cached+track"])
def test_stage1_steps_lower_loss_and_keep_text_weights(tokens, backbone, tmp_path, phase):
    import random

    before = _text_weights(backbone)
    phase, _, split = phase.partition("+")
    cfg = _cfg(tokens, tmp_path / phase, phase=phase)
    cfg.model.split_spelling = spelling = bool(split)
    cfg.model.split_phonemes = phonemes = split in ("phonemes", "track")
    cfg.model.split_phone_track = track = split == "track"
    cfg.loop.batch_size = 2 if phase == "cached" else 1  # a full step back-propagates through all 30 layers
    recipe = LMRecipe(cfg, backbone=backbone, log=lambda m: None)
    embed0 = recipe.model.speech_embed.weight.detach().clone()
    assert {p.data_ptr() for p in recipe.parameters()}.isdisjoint(p.data_ptr() for p in backbone.model.parameters())
    opt = torch.optim.AdamW(recipe.parameters(), lr=1e-3)
    fixed = random.Random(0)
    state = fixed.getstate()
    losses = []
    for _ in range(6 if phase == "cached" else 4):
        fixed.setstate(state)  # the same batch each step: the loss on it must fall
        out = recipe.step_losses(fixed)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < losses[0] - 0.3, losses
    if phase == "full":
        assert "text" in out  # asr / s2t targets reach the speech embedding here
    after = backbone.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(recipe.model.speech_embed.weight, embed0) == (phase == "cached")
    if spelling:  # the rows carry the letters of the words being said, and the loss reaches the tables through them
        from vivavoce.model.spelling import SLOTS, TRACK_AT

        rows = recipe.train_rows.spelling_ids
        assert rows is not None and int((rows[..., SLOTS] > 0).sum()) > 100
        assert bool(rows[..., SLOTS + 1 : TRACK_AT].any()) == phonemes
        assert bool(rows[..., TRACK_AT:].any()) == track
        if track:  # the track follows the measured phonemes; generation gets a fitted duration table
            assert int((recipe.train_rows.phone_index > 0).sum()) > 100
            assert recipe.processor.config.phone_tokens["*"] > 0
        spelled = [i for i in range(len(rows)) if bool((rows[i, :, SLOTS] > 0).any())][:2]
        opt.zero_grad()
        recipe._losses(recipe.train_rows.take(spelled), recipe.hidden[spelled])["loss"].backward()
        tables = recipe.model.speech_split_spelling
        assert tables.letters.weight.grad.abs().sum() > 0
        assert (tables.phones is not None and tables.phones.weight.grad.abs().sum() > 0) == phonemes
        assert (tables.track is not None and tables.track.weight.grad.abs().sum() > 0) == track
    dev = recipe.eval_losses()
    assert set(dev) >= {"speech", "speech_acc"} and all(v == v for v in dev.values())


def test_self_feeding_swaps_spoken_inputs_for_the_branchs_own_codes_and_keeps_the_targets(tokens, backbone, tmp_path):
    import random

    recipe = LMRecipe(_cfg(tokens, tmp_path / "fed", self_feed=1.0), backbone=backbone, log=lambda m: None)
    idx = list(range(min(2, len(recipe.train_rows))))
    rows, hidden = recipe.train_rows.take(idx), recipe.hidden[idx]
    gen = torch.Generator().manual_seed(0)
    fed, fed_hidden = recipe._self_fed(rows, hidden, gen)
    st, old, new = rows.speech_targets, rows.speech_ids, fed.speech_ids
    vocab = recipe.model.config.speech_vocab
    assert torch.equal(fed.speech_targets, st) and torch.equal(fed.text_ids, rows.text_ids)
    can = torch.zeros_like(st, dtype=torch.bool)
    can[:, 1:] = (st[:, :-1] != IGNORE) & (st[:, :-1] < vocab)  # inputs that follow a code target
    assert torch.equal(new[~can], old[~can])  # start/end of speech, text-only and empty positions untouched
    changed = new != old
    assert int(changed.sum()) > 0.5 * int(can.sum())  # self_feed 1: nearly every code is the branch's own draw
    assert bool((new[can] < vocab).all())
    assert not torch.equal(fed_hidden, hidden)  # the shared states are of the new inputs
    first = int(changed.float().argmax(1)[0])  # states before the first swapped input are causal: unchanged
    assert torch.allclose(fed_hidden[0, :first].float(), hidden[0, :first].float(), atol=0.05)
    gold, own = recipe._losses(rows, hidden), recipe._losses(fed, fed_hidden)
    assert float(own["speech"].detach()) != float(gold["speech"].detach())
    fed_step = recipe.step_losses(random.Random(0))  # a training step feeds the branch its own codes
    recipe.cfg.self_feed = 0.0
    true_step = recipe.step_losses(random.Random(0))  # the same batch, the true past
    assert fed_step["loss"].requires_grad and float(fed_step["speech"]) != float(true_step["speech"])


def test_stage2_trains_a_copy_of_the_shared_layers_with_text_replay(tokens, backbone, tmp_path):
    import random

    from vivavoce.model.speechlm import SpeechLMConfig

    before = _text_weights(backbone)
    cfg = _cfg(tokens, tmp_path / "s2", phase="full", stage=2, model=SpeechLMConfig(train_shared=True))
    recipe = LMRecipe(cfg, backbone=backbone, log=lambda m: None)
    ppl0 = json.loads((tmp_path / "s2" / "text_ppl_before.json").read_text())["text_ppl"]
    assert 1 < ppl0 < 1000  # the backbone's own answers are likely under it
    opt = torch.optim.AdamW(recipe.parameters(), lr=1e-4)
    out = recipe.step_losses(random.Random(0))
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    assert "replay" in out and recipe.model.shared_layers[0] is not backbone.layers[0]
    after = backbone.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the copy moved, the backbone did not
    assert not torch.equal(recipe.model.shared_layers[0].mlp.up_proj.weight, backbone.layers[0].mlp.up_proj.weight)
    assert "text_ppl" in recipe.eval_losses()


def test_speech_adapters_learn_in_the_full_phase_and_hold_still_in_the_cached_one(tokens, backbone, tmp_path):
    import random

    from vivavoce.model.speechlm import SpeechLMConfig

    before = _text_weights(backbone)
    model = SpeechLMConfig(speech_adapter_rank=2)
    recipe = LMRecipe(_cfg(tokens, tmp_path / "full", phase="full", model=model), backbone=backbone,
                      log=lambda m: None)  # fmt: skip
    up = recipe.model.speech_adapters[0].parts["q_proj"].up
    opt = torch.optim.AdamW(recipe.parameters(), lr=1e-3)
    out = recipe.step_losses(random.Random(0))
    opt.zero_grad()
    out["loss"].backward()
    assert up.grad is not None and up.grad.abs().sum() > 0  # text targets reach the adapters through the speech
    opt.step()
    assert up.abs().sum() > 0
    after = backbone.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    cached = LMRecipe(_cfg(tokens, tmp_path / "cached", phase="cached", model=model), backbone=backbone,
                      log=lambda m: None)  # fmt: skip
    assert not any(p.requires_grad for p in cached.model.speech_adapters.parameters())


def test_frozen_modules_hold_still_while_heard_adapters_learn(tokens, backbone, tmp_path):
    """`frozen` keeps the named trainable modules at their weights. Here all but the adapters, which act on the
    user's speech only: the text targets after a spoken question reach them, and nothing else moves. An unknown
    name is refused."""
    import random

    from vivavoce.model.speechlm import SpeechLMConfig

    model = SpeechLMConfig(speech_adapter_rank=2, speech_adapter_scope="heard")
    frozen = ["speech_embed", "speech_layers", "speech_norm", "speech_head"]
    recipe = LMRecipe(_cfg(tokens, tmp_path / "heard", phase="full", model=model, frozen=frozen), backbone=backbone,
                      log=lambda m: None)  # fmt: skip
    before = {k: v.clone() for k, v in recipe.model.trainable_state_dict().items()}
    opt = torch.optim.AdamW(recipe.parameters(), lr=1e-3)
    out = recipe.step_losses(random.Random(0))
    opt.zero_grad()
    out["loss"].backward()
    up = recipe.model.speech_adapters[3].parts["v_proj"].up
    assert up.grad is not None and up.grad.abs().sum() > 0
    opt.step()
    after = recipe.model.trainable_state_dict()
    assert {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])} == {"speech_adapters"}
    with pytest.raises(VivavoceError, match="frozen: 'speech_brain'"):
        LMRecipe(_cfg(tokens, tmp_path / "bad", phase="full", model=model, frozen=["speech_brain"]),
                 backbone=backbone, log=lambda m: None)  # fmt: skip


def test_rare_text_targets_weigh_more(tokens, backbone, tmp_path):
    """`text_rarity`: a token's weight falls with how often it is a training text target, the targets' mean weight
    is 1 (before the cap), and the training loss is the weighted mean while the logged text loss stays plain."""
    import random

    from vivavoce.model.speechlm import IGNORE
    from vivavoce.train.lm_recipe import rarity_weights

    targets = torch.tensor([[5, 5, 5, 5, 7, IGNORE], [5, 5, 5, 5, 9, IGNORE]])  # 5: 8 times, 7 and 9: once each
    w = rarity_weights(targets, 10, 1.0, 100.0)
    assert w[7] == w[9] and w[7] == pytest.approx(8 * w[5])
    assert float(w[targets[targets != IGNORE]].mean()) == pytest.approx(1.0)
    assert float(rarity_weights(targets, 10, 1.0, 2.0).max()) == 2.0
    assert torch.equal(rarity_weights(targets, 10, 0.0, 100.0)[[5, 7]], torch.ones(2))

    recipe = LMRecipe(_cfg(tokens, tmp_path / "rare", phase="full", text_rarity=0.5), backbone=backbone,
                      log=lambda m: None)  # fmt: skip
    plain = LMRecipe(_cfg(tokens, tmp_path / "plain", phase="full"), backbone=backbone, log=lambda m: None)
    plain.model.load_state_dict(recipe.model.state_dict())
    a, b = recipe.step_losses(random.Random(0)), plain.step_losses(random.Random(0))
    assert float(a["text"]) == pytest.approx(float(b["text"]), rel=1e-4)  # the same logged loss
    assert abs(float(a["loss"].detach()) - float(b["loss"].detach())) > 1e-3  # a different training loss


def test_distillation_targets_are_the_llms_own_distributions_at_the_answer_positions(tokens, backbone, tmp_path):
    """`kd_weight`: every s2t answer position gets the frozen LLM's top-k distribution given the question as text.
    Scoring the same question given as text against them gives KL 0 (so the positions line up); given as speech,
    the KL is what distillation trains down. A resumed run reads the teacher from the run folder."""
    import random

    from vivavoce.model.processor import ChatTurn
    from vivavoce.train.lm_data import ExampleConfig
    from vivavoce.train.lm_recipe import teacher_top_k

    s2t_only = ExampleConfig(tts=False, tts_true=False, s2s=False, s2s_guided=False, asr=False)
    cfg = _cfg(tokens, tmp_path / "kd", phase="full", kd_weight=1.0, kd_top_k=8, examples=s2t_only)
    recipe = LMRecipe(cfg, backbone=backbone, log=lambda m: None)
    rows = recipe.train_rows
    assert int((rows.kd_ids[..., 0] >= 0).sum()) == int((rows.text_targets != IGNORE).sum()) > 0
    assert len(list((tmp_path / "kd").glob("teacher-train-*.safetensors"))) == 1
    examples = build_examples(load_tokens(tokens), recipe.cfg.examples, "train")
    assert {e.heard for e in examples} == {q for _, split, q, _ in DIALOGUES if split == "train"}
    pairs = [(e.heard, e.turns[1].text) for e in examples]
    soft = teacher_top_k(recipe.model, recipe.processor, pairs, 8, bf16=False)
    as_text = [recipe.processor.encode([ChatTurn("user", q), ChatTurn("assistant", a)], mode="s2t") for q, a in pairs]
    with torch.no_grad():
        heard_as_text = recipe._losses(pack(as_text, 256, soft=soft), None)["kd"]
        heard_as_speech = recipe._losses(rows, None)["kd"]
    assert float(heard_as_text) < 1e-4 and float(heard_as_speech) > 0.05
    out = recipe.step_losses(random.Random(0))
    assert out["loss"].requires_grad and float(out["kd"]) > 0.05

    again = LMRecipe(cfg, backbone=backbone, log=lambda m: pytest.fail(f"teacher recomputed: {m}")
                     if m.startswith("teacher") else None)  # fmt: skip
    assert torch.equal(again.train_rows.kd_logp, rows.kd_logp) and torch.equal(again.train_rows.kd_ids, rows.kd_ids)


def test_lm_configs_load_and_name_real_modules(backbone):
    """Every shipped LM config parses into LMTrainConfig (unknown keys are errors; the hearing encoder's into its
    own), `frozen` names modules that its model has, and a config that starts from a checkpoint describes that
    checkpoint's model."""
    from dataclasses import replace

    from vivavoce.config import load_yaml
    from vivavoce.train.hearing import HearingTrainConfig

    paths = sorted((Path(__file__).parents[1] / "configs" / "lm").glob("*.yaml"))
    assert len(paths) >= 6
    for path in paths:
        if path.name == "hearing-encoder.yaml":
            load_yaml(HearingTrainConfig, path)
            continue
        cfg = load_yaml(LMTrainConfig, path)
        if cfg.frozen:
            # init_hearing gives the model its encoder (of the trained encoder's shape) when the run starts
            model_cfg = replace(cfg.model, hearing_vocab=8) if cfg.init_hearing else cfg.model
            modules = SpeechLM(backbone, model_cfg).trainable_modules()
            assert set(cfg.frozen) <= set(modules), path.name
        if cfg.init_from.startswith("src/vivavoce/checkpoints/"):  # a config left behind by a change of the
            # shipped model fails here, not on a lent GPU (others start from a run of the config before them)
            SpeechLM(backbone, cfg.model).load_trainable(Path(__file__).parents[1] / cfg.init_from, across_stages=True)


def test_a_run_from_a_checkpoint_keeps_its_onset_rule_unless_it_trains_guided_replies(tokens, backbone, tmp_path):
    """The onset rule paces every guided word the speech branch says: a run from a checkpoint on text tasks alone
    (understanding) must ship the checkpoint's rule, not one refitted to its own token cache."""
    from dataclasses import replace

    from vivavoce.model.processor import ProcessorConfig
    from vivavoce.model.speechlm import checkpoint_metadata
    from vivavoce.train.lm_data import ExampleConfig

    first = LMRecipe(_cfg(tokens, tmp_path / "a", phase="full"), backbone=backbone, log=lambda m: None)
    assert first.processor.config.onset_per_word == ProcessorConfig().onset_per_word
    first.processor.config = replace(first.processor.config, onset_per_word=3.25, onset_pause=8.5)
    first.save(tmp_path / "init.safetensors", step=1)
    text_only = ExampleConfig(tts=False, tts_true=False, s2s=False, s2s_guided=False)
    understanding = LMRecipe(_cfg(tokens, tmp_path / "b", phase="full", init_from=str(tmp_path / "init.safetensors"),
                                  examples=text_only), backbone=backbone, log=lambda m: None)  # fmt: skip
    assert understanding.processor.config.onset_per_word == 3.25 and understanding.processor.config.onset_pause == 8.5
    understanding.save(tmp_path / "next.safetensors", step=2)
    assert checkpoint_metadata(tmp_path / "next.safetensors")["processor"]["onset_per_word"] == 3.25


def test_checkpoint_round_trip_and_export(tokens, backbone, tmp_path):
    recipe = LMRecipe(_cfg(tokens, tmp_path / "rt", phase="full"), backbone=backbone, log=lambda m: None)
    with torch.no_grad():
        recipe.model.speech_head.weight.add_(0.5)
    recipe.save(tmp_path / "m.safetensors", step=3)
    loaded = SpeechLM.load(tmp_path / "m.safetensors", backbone)
    own = recipe.model.trainable_state_dict()
    assert all(torch.equal(own[k], v) for k, v in loaded.trainable_state_dict().items())
    from vivavoce.train.lm_recipe import evaluate_checkpoint

    per_task = evaluate_checkpoint(tmp_path / "m.safetensors", tokens, "dev", backbone)
    assert per_task["tts"]["speech_targets"] > 20 and "text" in per_task["asr"] and "speech" not in per_task["s2t"]
    assert 0 < per_task["tts"]["speech_unigram_entropy"] <= math.log(per_task["tts"]["speech_targets"])
    voice = [0.0625] * 256
    small = export_checkpoint(tmp_path / "m.safetensors", tmp_path / "ship.safetensors", voice=voice)
    assert small.stat().st_size < 0.55 * (tmp_path / "m.safetensors").stat().st_size
    shipped = SpeechLM.load(small, backbone)
    assert torch.allclose(shipped.speech_head.weight, own["speech_head.weight"], atol=0.02)
    from vivavoce.model.speechlm import checkpoint_metadata

    meta = checkpoint_metadata(small)
    assert meta["processor"]["guided_delay"] == recipe.processor.config.guided_delay
    assert meta["voice_dvector"] == voice and meta["step"] == 3
    with pytest.raises(VivavoceError, match="not a speech LM checkpoint|not a safetensors"):
        export_checkpoint(tokens, tmp_path / "x.safetensors")
    # The speech temperature it was measured best at travels with it: the engine samples at it.
    from vivavoce.train.lm_recipe import main as recipe_main

    assert shipped.speech_temperature == 0.8  # none named
    tuned = tmp_path / "tuned.safetensors"
    assert recipe_main(["export", str(small), str(tuned), "--speech-temperature", "0.4"]) == 0
    assert checkpoint_metadata(tuned)["generation"] == {"temperature": 0.4}
    assert SpeechLM.load(tuned, backbone).speech_temperature == 0.4
    assert recipe_main(["export", str(small), str(tmp_path / "y.safetensors"), "--speech-temperature", "-1"]) == 2
    assert not (tmp_path / "y.safetensors").exists()



def test_training_resumes_after_kill(tokens, tmp_path):
    import yaml

    run = tmp_path / "run"
    cfg = {"tokens": str(tokens), "row_tokens": 256, "dev_rows": 2,
           "loop": {"out_dir": str(run), "steps": 40, "batch_size": 1, "checkpoint_every": 1, "eval_every": 3,
                    "log_every": 1, "bf16": False, "threads": 1, "keep_best": "speech"}}  # fmt: skip
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "vivavoce.cli", "--threads", "1", "train", "lm", "--config", str(path)]
    killed = kill_after_step(cmd, env, run, 2, timeout=120)
    assert list(run.glob("hidden-train-*.safetensors"))  # the shared-layer states were saved for the resume
    target = killed["step"] + 3
    done = subprocess.run(cmd + ["--steps", str(target)], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming speechlm from step {killed['step']}" in done.stdout
    assert "reading cached shared-layer states" in done.stdout + done.stderr
    assert run_state(run)["step"] == target
    logged = [int(line.split(",")[0]) for line in (run / "log.csv").read_text().splitlines()[1:]]
    assert logged[-1] == target and killed["step"] + 1 in logged
    assert (run / "eval.csv").is_file() and (run / "loss.png").stat().st_size > 1000
    # keep_best: the lowest held-out speech loss of both runs, and its weights
    evals = [line.split(",") for line in (run / "eval.csv").read_text().splitlines()[1:]]
    best = json.loads((run / "best.json").read_text())
    assert best["value"] == pytest.approx(min(float(e[1]) for e in evals), rel=1e-4)
    assert best["step"] in [int(e[0]) for e in evals] and (run / "best.safetensors").is_file()


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "vivavoce.cli", "--threads", "1", *args], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize(
    "yaml_text, message",
    [("phase: cahced\n", "phase must be one of"), ("stage: 1\nbogus_key: 3\n", "unknown config keys"),
     ("tokens: /nonexistent/tokens.jsonl\n", "no token cache"), ("- a list\n", "mapping"),
     ("stage: 2\nkd_weight: 1.0\nmodel:\n  train_shared: true\n", "kd_weight distils the frozen LLM"),
     ("self_feed: 1.5\n", "self_feed must be in [0, 1]")],
)  # fmt: skip
def test_bad_config_is_one_line(tmp_path, yaml_text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    run = _cli("train", "lm", "--config", str(path), "--out", str(tmp_path / "run"))
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], run.stderr


def test_bad_manifests(tmp_path, corpus):
    with pytest.raises(VivavoceError, match="no manifests"):
        corpus_rows(tmp_path)
    bad = tmp_path / "bad"
    (bad / "manifests").mkdir(parents=True)
    row = json.loads((corpus / "manifests" / "all-shard-0-of-1.jsonl").read_text().splitlines()[0])
    (bad / "manifests" / "x.jsonl").write_text(json.dumps({**row, "turn": "robot"}) + "\n")
    with pytest.raises(VivavoceError, match="turn 'robot'"):
        corpus_rows(bad)
    (bad / "manifests" / "x.jsonl").write_text("{not json\n")
    with pytest.raises(VivavoceError, match="not JSON"):
        corpus_rows(bad)
    empty = tmp_path / "tokens.jsonl"
    empty.write_text("\n")
    with pytest.raises(VivavoceError, match="no tokenised"):
        load_tokens(empty)


def test_aligned_embedding_table_keeps_codes_apart(tokens, backbone):
    """The warm-start table is centred: two codes that sit under different text are far apart (the raw means all
    lean towards the one mean text embedding), every seen row has the text embeddings' norm, unseen codes get the
    mean text embedding."""
    from vivavoce.train.lm_recipe import aligned_embedding_table

    emb = backbone.model.get_input_embeddings().weight.detach().float()
    rows = [{"speech_ids": [1, 1, 2, 2], "text_ids": [10, 20]}, {"speech_ids": [1, 3], "text_ids": [10, 30]}]
    table = aligned_embedding_table(rows, emb, 8)
    cos = torch.nn.functional.cosine_similarity
    raw1, raw2 = emb[10], emb[20]  # what codes 1 and 2 would be uncentred (each under one token)
    assert cos(table[1], table[2], dim=0) < cos(raw1, raw2, dim=0) - 0.2
    assert torch.allclose(table[[1, 2, 3]].norm(dim=1), emb.norm(dim=1).mean().expand(3), rtol=1e-4)
    assert torch.allclose(table[5], emb.mean(0), atol=1e-6)


def test_cosine_by_time_ends_the_schedule_at_max_minutes():
    from vivavoce.train.loop import cosine_lr

    by_steps = LoopConfig(lr=1e-3, steps=1000, warmup=10, max_minutes=2.0)
    by_time = LoopConfig(lr=1e-3, steps=1000, warmup=10, max_minutes=2.0, cosine_by_time=True)
    # step 100 of 1000 after 60 of 120 s: the step schedule is near its top, the time schedule at half
    assert cosine_lr(by_steps, 100, 60.0) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 0.1)))
    assert cosine_lr(by_time, 100, 60.0) == pytest.approx(0.5e-3)
    assert cosine_lr(by_time, 100, 130.0) == pytest.approx(0.0)
    assert cosine_lr(by_time, 900, 1.0) == cosine_lr(by_steps, 900, 1.0)  # the steps end it first here
    assert cosine_lr(by_time, 0, 0.0) == pytest.approx(1e-4)  # warm-up unchanged


def test_stop_by_fits_the_training_into_the_time_a_call_leaves(tmp_path):
    """A lent machine's call has a fixed limit and the set-up before training takes an unknown share of it: with
    stop_by the run trains until then, saves, and its time-cosine ends at 0 there; a deadline already passed is
    refused before any step."""
    import csv
    import random
    import time

    from safetensors.torch import load_file, save_file

    from vivavoce.errors import VivavoceError
    from vivavoce.train.loop import Recipe, train

    class Slow(Recipe):  # a step of ~0.1 s
        kind = "stub"

        def __init__(self):
            self.model = torch.nn.Linear(3, 1)

        def step_losses(self, rng: random.Random) -> dict[str, torch.Tensor]:
            time.sleep(0.1)
            return {"loss": self.model(torch.ones(2, 3)).pow(2).mean()}

        def save(self, path: Path, step: int) -> None:
            save_file({k: v.detach().contiguous() for k, v in self.model.state_dict().items()}, str(path))

        def load(self, path: Path) -> None:
            self.model.load_state_dict(load_file(str(path)))

    loop = LoopConfig(out_dir=str(tmp_path / "run"), steps=10_000, max_minutes=0.1, cosine_by_time=True, warmup=1,
                      log_every=1, checkpoint_every=10_000, stop_by=time.time() + 1.5)  # fmt: skip
    began = time.time()
    train(Slow(), loop, {})
    assert time.time() - began < 3.0
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert 5 <= state["step"] < 40 and (tmp_path / "run" / "model.safetensors").is_file()
    lrs = [float(r["lr"]) for r in csv.DictReader((tmp_path / "run" / "log.csv").open())]
    assert lrs[-1] < 0.05 * loop.lr < lrs[len(lrs) // 2]  # the schedule fitted the 1.5 s, not the 6
    late = LoopConfig(out_dir=str(tmp_path / "late"), steps=10, stop_by=time.time() - 5)
    with pytest.raises(VivavoceError, match="stop_by: the deadline passed"):
        train(Slow(), late, {})


def test_user_voice_renderings_and_their_s2t_answers():
    from vivavoce.data.voices import user_voices
    from vivavoce.train.lm_data import user_voice_texts

    texts = [(f"turn-p{i}", f"Question number {i}?") for i in range(40)]
    voiced = user_voice_texts(texts, seed=0, takes=3)
    train = {v.name for v in user_voices("train")}
    assert len(voiced) == 120 and all(voice in train for _, _, voice in voiced)
    by_text: dict[str, set] = {}
    for uid, text, voice in voiced:
        assert uid.endswith("." + voice)
        by_text.setdefault(text, set()).add(voice)
    assert all(len(v) == 3 for v in by_text.values())  # three takes, three voices
    assert voiced[:40] == user_voice_texts(texts, seed=0, takes=1)  # more takes keep the first take's voices

    row = lambda uid, turn, text: dict(key=uid, id=uid, dialogue=uid, turn=turn, split="train", text=text,  # noqa: E731
                                       voice="v", emotion="neutral", control=None, text_ids=[1, 2], speech_ids=[5, 6, 7])
    rows = [row("turn-p1.es-us-m1", "user", "Why?"), row("turn-p2.es-us-f2", "user", "How?"), row("d1.u0", "user", "Why?")]
    answers = {"Why?": "Because it is so."}
    s2t = [e for e in build_examples(rows, split="train", answers=answers) if e.task == "s2t"]
    assert [e.turns[1].text for e in s2t] == ["Because it is so."]  # only the rendering, only with an answer
    assert s2t[0].turns[0].speech == [5, 6, 7] and s2t[0].turns[0].text is None
    assert not [e for e in build_examples(rows, split="train") if e.task == "s2t"]


def test_preset_questions_are_what_render_speaks_and_never_a_held_out_prompt():
    """`answers --preset`: the questions known before anything is spoken, the same set the renderings' token
    cache gives, and none of the dialogue corpus's dev/test prompts (they stay unseen, even as s2t targets)."""
    from vivavoce.data.corpus import PRESETS, assign_splits
    from vivavoce.data.prompts import sample_turns
    from vivavoce.train.lm_data import alignment_texts, preset_questions

    questions = preset_questions("small")
    assert questions == sorted({text for _, text in alignment_texts("small", 0, takes=3)})
    p = PRESETS["small"]
    planned = sample_turns(p.n_prompts, 0, p.kinds)
    splits = assign_splits([t.id for t in planned], p.split_fractions, 0)
    held_out = {t.text for t in planned if splits[t.id] != "train"}
    assert held_out and not held_out & set(questions)
    assert len(questions) > 1000


def test_drills_say_every_table_thing_in_every_carrier_and_no_held_out_question(tmp_path, capsys):
    """`render --drill`: each thing of the question tables in every carrier sentence, none a built-in user turn or
    a question of benchmarks/data/hearing-heldout.txt, ids stable and distinct, each take in another user voice."""
    from pathlib import Path

    from vivavoce.data.prompts import drill_texts, drill_things, user_turns
    from vivavoce.data.text.tables import DRILL_CARRIERS
    from vivavoce.train import lm_data

    texts = drill_texts()
    assert len(texts) == len(set(texts)) > 3000
    held = Path(__file__).parents[1] / "benchmarks" / "data" / "hearing-heldout.txt"
    held_out = {line.strip() for line in held.read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert len(held_out) == 40 and not held_out & set(texts)
    assert not {t.text for t in user_turns()} & set(texts)
    assert "octopuses" in drill_things()
    assert sum(" octopuses" in t for t in texts) == len(DRILL_CARRIERS)
    ids = lm_data.drill_texts(seed=1)
    assert len({i for i, _ in ids}) == len(ids) == len(texts) and ids == lm_data.drill_texts(seed=1)
    assert lm_data.drill_texts(5, seed=1) == ids[:5] != lm_data.drill_texts(5, seed=2)
    voiced = lm_data.user_voice_texts(ids[:3], seed=0, takes=2)
    assert len(voiced) == 6 and all(v[0].startswith("drill-") for v in voiced)
    assert all(voiced[i][2] != voiced[i + 3][2] for i in range(3))  # the two takes of a text: two voices
    assert lm_data.main(["render", "--drill", "--answers", "a.jsonl", "--out", str(tmp_path / "x")]) != 0
    assert "give one" in capsys.readouterr().err


def test_spoken_answers_pair_with_every_user_rendering_of_their_question(tmp_path):
    from vivavoce.train.lm_data import ANSWER_PREFIX, answer_texts, user_voice_texts

    path = tmp_path / "answers.jsonl"
    lines = [{"text": "Why?", "answer": "Because it is so."}, {"text": "Why not?", "answer": "Because it is so."},
             {"text": "How?", "answer": None, "rejected": "too long"}, {"text": "Who?", "answer": "Nobody knows."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    spoken = answer_texts(path)
    assert sorted(t for _, t in spoken) == ["Because it is so.", "Nobody knows."]  # distinct, speakable only
    assert all(uid.startswith(ANSWER_PREFIX) for uid, _ in spoken) and answer_texts(path, limit=1)[0] in spoken
    uid = dict((t, u) for u, t in spoken)["Because it is so."]

    row = lambda key, turn, text, speech: dict(key=key, id=key, dialogue=key, turn=turn, split="train", text=text,  # noqa: E731
                                               voice="v", emotion="neutral", control=None, text_ids=[1], speech_ids=speech)
    rows = [row("turn-p1.es-us-m1", "user", "Why?", [5, 6]), row("turn-p2.en-gb-f1", "user", "Why not?", [7, 8]),
            row("turn-p3", "assistant", "Why?", [9]),  # joe reading the question: not a user turn
            row("turn-p4.es-us-m1", "user", "Who?", [3]),  # its answer is not spoken
            row(uid, "assistant", "Because it is so.", [1, 2, 3])]
    answers = {r["text"]: r["answer"] for r in lines if r["answer"]}
    ex = build_examples(rows, split="train", answers=answers)
    s2s = [e for e in ex if e.task == "s2s"]
    guided = [e for e in ex if e.task == "s2s_guided"]
    assert [e.turns[0].speech for e in s2s] == [[5, 6], [7, 8]] == [e.turns[0].speech for e in guided]
    assert all(e.turns[1].speech == [1, 2, 3] and e.turns[1].text is None for e in s2s)
    assert all(e.turns[1].text == "Because it is so." for e in guided)
    assert [e.turns[1].text for e in ex if e.task == "tts"] == ["Why?", "Because it is so."]  # reading data too
    assert not [e for e in build_examples(rows, split="train") if e.task.startswith("s2s")]  # no answers, no pairs

    # `render --answers --user-voices`: the answers said as user turns, in the users' voices: speech -> transcript
    # only; neither a reply to pair nor a question with an s2t target
    (voiced_uid, voiced_text, voice), = user_voice_texts([(uid, "Because it is so.")], seed=0)
    heard = rows + [row(voiced_uid, "user", voiced_text, [4, 4, 4])]
    ex2 = build_examples(heard, split="train", answers=answers)
    assert voiced_uid.startswith(uid) and voiced_uid.endswith("." + voice)
    assert [e.task for e in ex2 if e.source == voiced_uid] == ["asr"]
    assert sorted(e.task for e in ex2 if e.source != voiced_uid) == sorted(e.task for e in ex)
    # `answers --said`: the LLM's reply to what the user said makes it an s2t question too (the teacher hears it)
    from vivavoce.train.lm_data import said_answer_texts

    assert said_answer_texts(heard) == ["Because it is so."]  # not joe's reading of it, nor a question
    ex3 = build_examples(heard, split="train", answers={**answers, voiced_text: "I see."})
    said = [e for e in ex3 if e.source == voiced_uid and e.task == "s2t"]
    assert [(e.heard, e.turns[1].text, e.turns[0].speech) for e in said] == [(voiced_text, "I see.", [4, 4, 4])]


def test_sampled_answers_are_reading_text_not_s2t_targets_and_resume(tmp_path, monkeypatch, backbone):
    """`answers --samples K`: K sampled answers per rendered question (not of the spoken answers), appended batch by
    batch; a rerun writes only what is missing. `render --answers` speaks them too; s2t keeps the greedy ones."""
    import vivavoce.model.backbone as bb_module
    import vivavoce.model.textgen as textgen
    from vivavoce.train.lm_data import answer_texts, load_answers, load_tokens, rendering_questions, write_sampled_answers

    row = lambda key, text: dict(key=key, id=key, dialogue=key, turn="user", split="train", text=text,  # noqa: E731
                                 voice="v", emotion="neutral", control=None, text_ids=[1], speech_ids=[5])
    tokens = tmp_path / "tokens.jsonl"
    rows = [row("turn-p1", "Why?"), row("turn-p2", "How?"), row("turn-p3", "Who?"), row("turn-ans-0a1b", "Because.")]
    tokens.write_text("".join(json.dumps(r) + "\n" for r in rows))
    calls = []

    def fake_batch(_bb, questions, _config, batch_size, temperature, generator):
        calls.append(list(questions))
        seed = int(torch.randint(0, 1000, (1,), generator=generator))
        return ["x " * 99 if q == "How?" else f"{q} answer {seed}." for q in questions]  # "How?": too long

    monkeypatch.setattr(bb_module, "load_backbone", lambda *a, **k: backbone)
    monkeypatch.setattr(textgen, "answer_batch", fake_batch)
    out = tmp_path / "sampled.jsonl"
    questions = rendering_questions(load_tokens(tokens))
    assert questions == ["How?", "Who?", "Why?"]  # not the spoken answer
    assert write_sampled_answers(questions, out, samples=2, batch_size=2, log=lambda m: None) == 4
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["text"], r["sample"]) for r in got) == [(q, k) for q in ("How?", "Who?", "Why?") for k in (1, 2)]
    assert all(r["answer"] is None and r["rejected"] for r in got if r["text"] == "How?")
    assert len({r["answer"] for r in got if r["text"] == "Why?"}) == 2  # two samples, two texts
    n = len(calls)
    out.write_text("".join(line + "\n" for line in out.read_text().splitlines()[:-1]))  # the last row lost
    write_sampled_answers(questions, out, samples=2, batch_size=2, log=lambda m: None)
    assert len(calls) == n + 1 and len(out.read_text().splitlines()) == 6  # only that batch again
    with out.open("a") as f:
        f.write(json.dumps({"text": "Why?", "answer": "Because it is so."}) + "\n")  # a greedy answer
    assert load_answers(out) == {"Why?": "Because it is so."}
    assert len(answer_texts(out)) == 5  # 4 sampled + the greedy one
    with pytest.raises(VivavoceError, match="temperature"):
        write_sampled_answers(questions, out, samples=2, temperature=0.0)


def test_steady_renderings_are_one_take_and_sampled_ones_vary(tmp_path):
    """`render --steady`: Piper's one most likely take, the same audio every time (a reader gets one target per
    text); without it, every take is a new draw."""
    from vivavoce.audio.io import read_audio
    from vivavoce.train.lm_data import render_alignment

    texts = [("turn-a", "Reading the same words again."), ("turn-b", "Reading the same words again.")]

    def takes(folder: str, steady: bool):
        assert render_alignment(texts, tmp_path / folder, log=lambda m: None, steady=steady) == 0
        rows = [json.loads(line) for line in (tmp_path / folder / "manifests" / "train-align.jsonl").open()]
        assert [r["turn"] for r in rows] == ["assistant", "assistant"]
        return [read_audio(tmp_path / folder / r["audio_16k"], 16000) for r in rows], rows

    (a, b), rows = takes("steady", True)
    assert a.size > 16000 and a.shape == b.shape and np.array_equal(a, b)
    assert all(r["steady"] for r in rows)
    with pytest.raises(VivavoceError, match="holds takes of the other kind"):  # a folder holds one kind of take
        # one text of the two: resuming would drop the other row, so both rows left means refused untouched
        render_alignment(texts[:1], tmp_path / "steady", log=lambda m: None, steady=False)
    assert len((tmp_path / "steady" / "manifests" / "train-align.jsonl").read_text().splitlines()) == 2
    (c, d), rows = takes("sampled", False)
    assert not (c.shape == d.shape and np.array_equal(c, d))
    assert not any(r.get("steady") for r in rows)


def test_steady_takes_of_one_voice_are_refused(tmp_path, capsys):
    from vivavoce.train.lm_data import main

    assert main(["render", "--out", str(tmp_path / "c"), "--steady", "--takes", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--steady speaks every take of a text alike" in err[0]
    assert not (tmp_path / "c").exists()  # refused before anything is spoken
