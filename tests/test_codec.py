"""Codec: shapes and rates, causal streaming, speed control, checkpoints, resume after a kill, CLI, bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest_codec import codec, dvector, espeak16k, speech, speech_wav  # noqa: F401
from conftest_train import kill_after_step, one_torch_thread, run_state  # noqa: F401  (module fixture)
from vivavoce.codec.checkpoint import load_model, save_model
from vivavoce.codec.decoder import Decoder, DecoderConfig, control_vector
from vivavoce.codec.mel import LogMel, MelStream, log_mel
from vivavoce.codec.phonemes import decode_phonemes, encode_phonemes
from vivavoce.codec.tokenizer import Tokenizer, TokenizerConfig
from vivavoce.codec.vocoder import PROFILES, Vocoder
from vivavoce.errors import VivavoceError
from vivavoce.speechtools.tts import espeak_phonemes
from vivavoce.train.loop import flatten_optimizer, unflatten_optimizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOKEN = 640  # samples of one token of the shipped 25 Hz tokenizer

SRC = str(Path(__file__).resolve().parents[1] / "src")



def test_shapes_and_rates(codec, speech, dvector):
    assert codec.tokenizer.codebook_size >= 1024
    assert codec.token_rate == 25.0 and codec.sample_rate == 16000
    mel = log_mel(speech)
    assert mel.shape == (80, speech.size // 160)
    ids = codec.encode(speech)
    assert ids.dtype == np.int64 and ids.size == -(-speech.size // TOKEN)
    assert 0 <= ids.min() and ids.max() < codec.tokenizer.codebook_size
    audio = codec.decode(ids, dvector)
    assert audio.shape == (ids.size * TOKEN,) and np.isfinite(audio).all()
    assert codec.bitrate == pytest.approx(25.0 * np.log2(codec.tokenizer.codebook_size))


def test_hq48k_profile_shapes():
    voc = Vocoder(PROFILES["hq-48k"])
    with torch.no_grad():
        out = voc(torch.randn(1, 80, 20) - 5)
    assert out.shape == (1, 20 * 480)


def test_shipped_hq48k_speaks_above_8khz(codec, speech, dvector):
    """The shipped hq-48k vocoder decodes the same tokens at 48 kHz, streamed as offline, and (trained on 22.05 kHz
    speech) puts some energy between 8 and 11 kHz, where the lite output has none."""
    from vivavoce.codec import Codec

    hq = Codec.load(profile="hq-48k")
    assert hq.sample_rate == 48000 and hq.tokenizer_fingerprint == codec.tokenizer_fingerprint
    ids = codec.encode(speech)
    out = hq.decode(ids, dvector)
    assert out.size == pytest.approx(codec.decode(ids, dvector).size * 3, abs=3 * 160)
    stream = hq.decode_stream(dvector, chunk=5)
    streamed = np.concatenate([stream.push(ids[i : i + 3]) for i in range(0, ids.size, 3)] + [stream.flush()])
    assert streamed.size == out.size and np.abs(streamed - out).max() < 1e-4
    spec = np.abs(np.fft.rfft(out)) ** 2
    f = np.fft.rfftfreq(out.size, 1 / 48000)
    assert spec[(f > 8000) & (f < 11000)].sum() / spec.sum() > 1e-6  # lite resampled to 48 kHz: ~5e-12
    with pytest.raises(VivavoceError, match="profile"):
        Codec.load(profile="hq-96k")


def test_mel_stream_matches_whole(speech):
    mel = LogMel()
    stream = MelStream(mel)
    parts = [stream.push(torch.from_numpy(speech[i : i + 777])) for i in range(0, speech.size, 777)]
    torch.testing.assert_close(torch.cat(parts, -1), log_mel(speech), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("piece", [640, 700])
def test_streaming_encode_equals_offline(codec, speech, piece):
    offline = codec.encode(speech)
    assert np.unique(offline).size >= 10  # a collapsed code book would make this test vacuous
    stream = codec.encode_stream()
    got = [stream.push(speech[i : i + piece]) for i in range(0, speech.size, piece)]
    got.append(stream.flush())
    np.testing.assert_array_equal(np.concatenate(got), offline)


def test_streaming_encode_equals_offline_untrained(speech):
    """The same property as an architecture fact: a fresh random tokenizer, odd piece sizes."""
    from vivavoce.codec.streaming import EncodeStream

    torch.manual_seed(1)
    tok = Tokenizer(TokenizerConfig(dim=64, conv_dim=32, layers=2, window=8)).eval()
    audio = np.pad(speech, (0, -speech.size % 1280))
    with torch.inference_mode():
        offline = tok.encode(log_mel(audio)[None])[2][0].numpy()
    assert np.unique(offline).size >= 5
    stream = EncodeStream(tok)
    got = [stream.push(speech[i : i + 333]) for i in range(0, speech.size, 333)] + [stream.flush()]
    np.testing.assert_array_equal(np.concatenate(got), offline)


def test_tokenizer_is_causal(codec, speech):
    """Changing the future never changes past tokens."""
    ids = codec.encode(speech)
    changed = speech.copy()
    changed[20 * TOKEN :] = np.random.default_rng(0).normal(0, 0.1, changed.size - 20 * TOKEN)
    np.testing.assert_array_equal(codec.encode(changed)[:20], ids[:20])
    assert not np.array_equal(codec.encode(changed)[20:], ids[20:])


@pytest.mark.parametrize("speed", [1.0, 1.3])
def test_streaming_decode_matches_offline(codec, speech, dvector, speed):
    ids = codec.encode(speech)
    offline = codec.decode(ids, dvector, speed=speed)
    stream = codec.decode_stream(dvector, speed=speed, chunk=5)
    parts = [stream.push(ids[i : i + 2]) for i in range(0, ids.size, 2)]
    parts.append(stream.flush())
    streamed = np.concatenate(parts)
    assert streamed.shape == offline.shape
    assert np.abs(streamed - offline).max() < 1e-3 * max(1.0, np.abs(offline).max())
    # seconds of tokens waited for beyond the chunk: 0.24 since decoder v4 (4 tokens of look-ahead bought -0.06 WER)
    assert stream.lookahead_tokens / codec.token_rate <= 0.25


def test_first_chunk_needs_bounded_lookahead(codec, speech, dvector):
    ids = codec.encode(speech)
    stream = codec.decode_stream(dvector, chunk=5)
    assert stream.push(ids[:5]).size == 0  # look-ahead still missing
    first = stream.push(ids[5 : 5 + stream.lookahead_tokens])
    assert first.size > 0.75 * 5 * TOKEN  # most of the 5-token chunk at once


def test_speed_changes_duration(codec, speech, dvector):
    ids = codec.encode(speech)
    normal = codec.decode(ids, dvector, speed=1.0)
    fast = codec.decode(ids, dvector, speed=1.3)
    assert fast.size / normal.size == pytest.approx(1 / 1.3, rel=0.02)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    dec = Decoder(DecoderConfig(dim=32, token_layers=1, frame_layers=1))
    path = save_model(tmp_path / "decoder.safetensors", dec, "decoder", step=7)
    back = load_model(path, Decoder, DecoderConfig, "decoder")
    assert back.cfg == dec.cfg
    ids = torch.randint(0, 1024, (1, 6))
    spk, ctrl = torch.randn(1, 256), control_vector(1.0)[None]
    torch.testing.assert_close(back(ids, spk, ctrl), dec.eval()(ids, spk, ctrl))
    with pytest.raises(VivavoceError, match="not a 'tokenizer'"):
        load_model(path, Tokenizer, TokenizerConfig, "tokenizer")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(VivavoceError, match="not a readable"):
        load_model(tmp_path / "junk.safetensors", Decoder, DecoderConfig, "decoder")


def test_optimizer_state_flattens_and_back():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, rest = flatten_optimizer(opt.state_dict())
    opt2 = torch.optim.AdamW(model.parameters())
    opt2.load_state_dict(unflatten_optimizer(tensors, rest))
    a, b = opt.state_dict()["state"][0], opt2.state_dict()["state"][0]
    torch.testing.assert_close(a["exp_avg_sq"], b["exp_avg_sq"])
    assert float(a["step"]) == float(b["step"])


def test_phoneme_vocabulary_round_trip():
    ipa = espeak_phonemes("The church judge measured the thing.")
    ids = encode_phonemes(ipa)
    assert len(ids) > 15 and 0 not in ids
    assert decode_phonemes(ids).replace(" ", "") == "".join(ch for ch in ipa if ch not in "ˈˌ ")


def test_phone_ctc_nats_are_lowest_for_the_words_said(codec, speech):
    """The phone head's CTC loss of a clip's tokens is lower per phoneme for what the clip says than for another
    sentence (the score `benchmarks/reading_rerank.py` ranks takes by)."""
    ids = codec.encode(speech)
    said = encode_phonemes(espeak_phonemes("The weather today is cold, but tomorrow should be a little warmer."))
    other = encode_phonemes(espeak_phonemes("A bridge joins two roads across the river, far from the village."))
    per_phone = [codec.tokenizer.phone_ctc_nats(ids, p) / len(p) for p in (said, other)]
    assert 0 < per_phone[0] < 0.5 * per_phone[1]


def _tiny_run(tmp_path: Path) -> Path:
    from vivavoce.audio.io import write_audio

    rows = []
    for i, text in enumerate(["One small test sentence for training.", "Another short clip, spoken slowly."]):
        path = write_audio(tmp_path / f"u{i}.wav", espeak16k(text), 16000)
        rows.append({"audio": str(path), "text": text, "phonemes": espeak_phonemes(text), "speaker": "espeak"})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"""loop:
  manifest: {tmp_path}/train.jsonl
  cache_dir: {tmp_path}/cache
  out_dir: {tmp_path}/run
  steps: 400
  batch_size: 2
  checkpoint_every: 3
  log_every: 1
model: {{dim: 16, layers: 1}}
segment_frames: 24
""")
    return cfg



def test_training_resumes_after_kill(tmp_path):
    cfg = _tiny_run(tmp_path)
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "vivavoce.cli", "--threads", "1", "train", "vocoder", "--config", str(cfg)]
    killed = kill_after_step(cmd, env, run, 3, timeout=90)
    target = killed["step"] + 4
    done = subprocess.run(cmd + ["--steps", str(target)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming vocoder from step {killed['step']}" in done.stdout
    assert run_state(run)["step"] == target
    logged = [int(line.split(",")[0]) for line in (run / "log.csv").read_text().splitlines()[1:]]
    assert logged[-1] == target and killed["step"] + 1 in logged
    assert (run / "loss.png").stat().st_size > 1000
    load_model(run / "model.safetensors", Vocoder, PROFILES["lite-16k"].__class__, "vocoder")


def _cli(*args, timeout=120):
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, "-m", "vivavoce.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_resynth_cli_writes_audio(tmp_path, speech_wav, speech):
    from vivavoce.audio.io import read_audio

    ref = tmp_path / "ref.wav"
    from vivavoce.audio.io import write_audio

    write_audio(ref, espeak16k("A different voice speaks this reference.", "en-gb+f3"), 16000)
    out = tmp_path / "out.wav"
    run = _cli("codec", "resynth", str(speech_wav), "-o", str(out), "--voice", str(ref), "--speed", "1.3", "--json")
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    audio = read_audio(out, 16000)
    assert audio.size / 16000 == pytest.approx(speech.size / 16000 / 1.3, rel=0.05)
    assert info["tokens"] == -(-speech.size // TOKEN) and info["bitrate_bps"] == 250.0


@pytest.mark.parametrize(
    "make, expect",
    [
        (lambda p: p.write_bytes(b"hello, not audio"), "not a readable audio file"),
        (lambda p: p.write_bytes(b""), "empty file"),
    ],
)
def test_resynth_cli_bad_input_is_one_line(tmp_path, make, expect):
    bad = tmp_path / "bad.wav"
    make(bad)
    run = _cli("codec", "resynth", str(bad), "-o", str(tmp_path / "o.wav"))
    assert run.returncode == 2 and expect in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.wav").exists()


def test_bad_arguments(codec, speech_wav, tmp_path, dvector):
    run = _cli("codec", "resynth", str(speech_wav), "--speed", "5")
    assert run.returncode == 2 and "outside 0.5..2.0" in run.stderr
    run = _cli("train", "decoder", "--manifest", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "r"))
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    with pytest.raises(VivavoceError, match="token ids"):
        codec.decode([5, 99999], dvector)
    with pytest.raises(VivavoceError, match="NaN"):
        codec.encode(np.full(3200, np.nan, dtype=np.float32))
    with pytest.raises(VivavoceError, match="empty"):
        codec.encode(np.zeros(0, dtype=np.float32))


def test_reads_corpus_manifests(tmp_path):
    """The corpus's manifest rows (audio_16k relative to the corpus folder, voice) plug into the trainers."""
    from vivavoce.audio.io import write_audio
    from vivavoce.train.features import load_items, read_manifest

    (tmp_path / "audio" / "16k" / "train").mkdir(parents=True)
    write_audio(tmp_path / "audio/16k/train/u1.flac", espeak16k("Corpus rows work too."), 16000)
    (tmp_path / "manifests").mkdir()
    row = {"id": "u1", "audio_16k": "audio/16k/train/u1.flac", "text": "Corpus rows work too.",
           "phonemes": espeak_phonemes("Corpus rows work too."), "voice": "espeak-en-us", "split": "train"}
    (tmp_path / "manifests" / "train-shard-1-of-1.jsonl").write_text(json.dumps(row) + "\n")
    items = load_items(tmp_path / "manifests" / "train-shard-1-of-1.jsonl", tmp_path / "cache", speaker=False)
    assert items[0].speaker == "espeak-en-us" and items[0].mel.shape[0] == 80
    (tmp_path / "bad.jsonl").write_text('{"text": "no audio"}\n')
    with pytest.raises(VivavoceError, match="missing keys"):
        read_manifest(tmp_path / "bad.jsonl")


def test_frame_norm_makes_codes_level_invariant(speech):
    """With frame_norm, a recording 6 dB louder gives the same encoder input above the log floor; without it the
    pre-quantisation vectors move with the level (the test fails if frame_norm does nothing)."""
    mel, louder = log_mel(speech)[None], log_mel(speech * 2.0)[None]
    moved = {}
    for norm in (False, True):
        torch.manual_seed(0)
        tok = Tokenizer(TokenizerConfig(fsq_levels=[4, 4, 4, 4, 4], frame_norm=norm)).eval()
        with torch.no_grad():
            z0, _, ids0, _ = tok.encode(mel)
            z1, _, ids1, _ = tok.encode(louder)
        moved[norm] = float((z0 - z1).abs().mean() / z0.abs().mean())
    assert moved[True] < 0.1 * moved[False], moved


def test_stability_training_losses(tmp_path):
    """Two-view tokenizer training reports the consistency and grid terms, and weighting consistency up brings the
    louder, noisier view's vectors much closer to the original's than the same training without it."""
    import random

    from vivavoce.train.codec_recipes import TokenizerRecipe, TokenizerTrainConfig
    from vivavoce.train.loop import LoopConfig

    _tiny_run(tmp_path)  # writes the two-clip manifest

    def trained(weight: float) -> tuple[dict, float]:
        torch.manual_seed(0)
        cfg = TokenizerTrainConfig(
            loop=LoopConfig(manifest=str(tmp_path / "train.jsonl"), cache_dir=str(tmp_path / "cache"), batch_size=2),
            model=TokenizerConfig(dim=32, layers=1, heads=2, conv_dim=16, fsq_levels=[4, 4, 4], frame_norm=True),
            consistency_weight=weight, grid_weight=1.0)  # fmt: skip
        recipe = TokenizerRecipe(cfg)
        first = recipe.step_losses(random.Random(0))
        opt = torch.optim.Adam(recipe.model.parameters(), lr=3e-3)
        for step in range(30):
            opt.zero_grad()
            recipe.step_losses(random.Random(step))["loss"].backward()
            opt.step()
        recipe.model.eval()  # no dropout: the same draw gives the same views
        with torch.no_grad():
            return first, float(recipe.step_losses(random.Random(0))["consistency"])

    first, with_term = trained(50.0)
    assert {"consistency", "grid", "same_code", "ctc"} <= set(first) and torch.isfinite(first["loss"])
    assert 0.0 <= float(first["same_code"]) <= 1.0
    _, without = trained(1e-9)
    assert with_term < 0.5 * without, (with_term, without)


def test_tokenizer_fingerprint_binds_the_speech_lm(codec):
    """A speech LM checkpoint names the tokenizer it learned; the engine refuses any other one."""
    from vivavoce.codec.codec import tokenizer_fingerprint
    from vivavoce.engine.speechlm import check_codec

    fp = codec.tokenizer_fingerprint
    assert len(fp) == 16 and fp == tokenizer_fingerprint(codec.tokenizer)
    other = Tokenizer(codec.tokenizer.cfg)
    other.load_state_dict(codec.tokenizer.state_dict())
    with torch.no_grad():
        other.to_fsq.bias.add_(1e-3)
    assert tokenizer_fingerprint(other) != fp
    check_codec({"codec_tokenizer": fp}, fp, Path("lm.safetensors"))
    check_codec({}, fp, Path("lm.safetensors"))  # older checkpoints: no fingerprint recorded
    with pytest.raises(VivavoceError, match="retrain the speech LM"):
        check_codec({"codec_tokenizer": tokenizer_fingerprint(other)}, fp, Path("lm.safetensors"))


def test_hq48k_trains_on_native_audio_from_a_lite_start(tmp_path):
    """hq-48k targets come from the rows' native-rate audio (here espeak's 22.05 kHz), the mel loss covers the
    whole 48 kHz band, and a lite-16k checkpoint seeds every tensor whose shape matches."""
    import random

    from vivavoce.audio.io import write_audio
    from vivavoce.codec.vocoder import VocoderConfig
    from vivavoce.speechtools.tts import espeak_synthesize
    from vivavoce.train.codec_recipes import VocoderRecipe, VocoderTrainConfig
    from vivavoce.train.loop import LoopConfig, warm_start

    rows = []
    for i, text in enumerate(["A clip at its native rate.", "Another one, a little longer than the first."]):
        native, rate = espeak_synthesize(text)
        assert rate == 22050
        path = write_audio(tmp_path / f"n{i}.wav", native, rate)
        rows.append({"audio": str(write_audio(tmp_path / f"u{i}.wav", espeak16k(text), 16000)), "audio_native": str(path),
                     "text": text, "phonemes": espeak_phonemes(text), "speaker": "espeak"})  # fmt: skip
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lite = Vocoder(VocoderConfig(dim=16, layers=1))
    save_model(tmp_path / "lite.safetensors", lite, "vocoder")
    loop = LoopConfig(manifest=str(tmp_path / "train.jsonl"), cache_dir=str(tmp_path / "cache"), batch_size=2)
    hq = VocoderConfig(profile="hq-48k", sample_rate=48000, hop=480, n_fft=1920, dim=16, layers=2)
    recipe = VocoderRecipe(VocoderTrainConfig(loop=loop, model=hq, segment_frames=24))
    assert all(t.size >= it.mel.shape[1] * 480 for t, it in zip(recipe.targets, recipe.items))
    warm_start(recipe, tmp_path / "lite.safetensors")
    assert torch.equal(recipe.model.embed.weight, lite.embed.weight)
    assert recipe.model.head.weight.shape[0] == 1922 and recipe.mel.cfg.fmax == 24000
    losses = recipe.step_losses(random.Random(0))
    assert torch.isfinite(losses["loss"]) and losses["mel_l1"] > 0
    (tmp_path / "no-native.jsonl").write_text(json.dumps({k: v for k, v in rows[0].items() if k != "audio_native"}))
    loop.manifest = str(tmp_path / "no-native.jsonl")
    with pytest.raises(VivavoceError, match="audio_native"):
        VocoderRecipe(VocoderTrainConfig(loop=loop, model=hq, segment_frames=24))


def test_tokenizer_warm_start_to_a_higher_token_rate(tmp_path, speech):
    """A 25 Hz tokenizer started from a 12.5 Hz one takes every tensor: the pooling weights folded over frames (a
    token of frames x reads as the old token of frames x, x) and every other CTC frame row of the head."""
    from vivavoce.train.codec_recipes import TokenizerRecipe, TokenizerTrainConfig
    from vivavoce.train.loop import LoopConfig, warm_start

    _tiny_run(tmp_path)  # writes the two-clip manifest
    small = dict(dim=32, layers=1, heads=2, conv_dim=16, fsq_levels=[4, 4, 4], frame_norm=True)
    torch.manual_seed(0)
    old = Tokenizer(TokenizerConfig(token_rate=12.5, ctc_upsample=4, **small))
    save_model(tmp_path / "old.safetensors", old, "tokenizer")
    loop = LoopConfig(manifest=str(tmp_path / "train.jsonl"), cache_dir=str(tmp_path / "cache"), batch_size=2)
    recipe = TokenizerRecipe(TokenizerTrainConfig(loop=loop, model=TokenizerConfig(token_rate=25, ctc_upsample=2,
                                                                                    **small)))  # fmt: skip
    warm_start(recipe, tmp_path / "old.safetensors")
    new = recipe.model.eval()
    assert torch.equal(new.pool.weight, old.pool.weight[:, :64] + old.pool.weight[:, 64:])
    assert torch.equal(new.ctc_out.weight.view(2, -1, 32), old.ctc_out.weight.view(4, -1, 32)[::2])
    # a steady input (every frame alike) gives the same pooled vectors at both rates
    x = torch.randn(1, 16, 1).expand(1, 16, 8)
    pooled_old = old.pool(x.permute(0, 2, 1).reshape(1, 1, -1))
    pooled_new = new.pool(x[..., :4].permute(0, 2, 1).reshape(1, 1, -1))
    assert torch.allclose(pooled_old, pooled_new, atol=1e-5)
    with torch.no_grad():
        ids = new.encode(log_mel(speech)[None])[2]
    assert ids.shape[1] == len(speech) // 640


def test_tokenizer_warm_start_to_a_deeper_tokenizer(tmp_path, speech):
    """Extra blocks go on top with zero residual outputs: the deeper tokenizer starts out giving the old codes
    exactly, and a training step moves the new blocks (their zeroed outputs get a gradient)."""
    import random

    from vivavoce.train.codec_recipes import TokenizerRecipe, TokenizerTrainConfig
    from vivavoce.train.loop import LoopConfig, warm_start

    _tiny_run(tmp_path)
    small = dict(dim=32, heads=2, conv_dim=16, fsq_levels=[4, 4, 4], frame_norm=True, token_rate=25, ctc_upsample=2)
    torch.manual_seed(0)
    old = Tokenizer(TokenizerConfig(layers=1, **small)).eval()
    save_model(tmp_path / "old.safetensors", old, "tokenizer")
    loop = LoopConfig(manifest=str(tmp_path / "train.jsonl"), cache_dir=str(tmp_path / "cache"), batch_size=2)
    recipe = TokenizerRecipe(TokenizerTrainConfig(loop=loop, model=TokenizerConfig(layers=3, **small)))
    warm_start(recipe, tmp_path / "old.safetensors")
    new = recipe.model.eval()
    assert torch.equal(new.blocks[2].out.weight, torch.zeros(32, 32))
    assert not torch.equal(new.blocks[2].qkv.weight, torch.zeros(96, 32))  # only the residual outputs start at zero
    mel = log_mel(speech)[None]
    with torch.no_grad():
        (z_old, _, ids_old, _), (z_new, _, ids_new, _) = old.encode(mel), new.encode(mel)
    assert torch.equal(ids_new, ids_old) and torch.allclose(z_old, z_new, atol=1e-5)
    new.train()
    recipe.step_losses(random.Random(0))["loss"].backward()
    assert new.blocks[2].out.weight.grad.abs().sum() > 0


def test_decoder_retoken_loss_and_vocoder_on_decoder_mels(tmp_path):
    """The re-tokenisation term reads a decoded mel with the frozen tokenizer: the recording's own mel reads back
    as its tokens exactly (so the target is the right code), a fresh decoder's mel does not, and the log averages
    the term over the steps that measured it. A vocoder fine-tuned on decoder mels gets one per clip, frame-aligned
    with the recording."""
    import csv
    import random

    from vivavoce.codec.vocoder import VocoderConfig
    from vivavoce.train.codec_recipes import DecoderRecipe, DecoderTrainConfig, VocoderRecipe, VocoderTrainConfig
    from vivavoce.train.loop import LoopConfig, train

    _tiny_run(tmp_path)
    shipped = Path(__file__).parents[1] / "src/vivavoce/checkpoints/codec-lite-16k"
    loop = LoopConfig(manifest=str(tmp_path / "train.jsonl"), cache_dir=str(tmp_path / "cache"), batch_size=2,
                      out_dir=str(tmp_path / "dec"), steps=6, log_every=3, checkpoint_every=6, threads=1)  # fmt: skip
    model = DecoderConfig(fsq_levels=[4, 4, 4, 4, 4], frames_per_token=4, dim=16, token_layers=1, frame_layers=1)
    torch.manual_seed(0)
    recipe = DecoderRecipe(DecoderTrainConfig(loop=loop, model=model, tokenizer=str(shipped / "tokenizer.safetensors"),
                                              crop_tokens=40, retoken_weight=0.5, retoken_skip=0))  # fmt: skip
    it, ids = recipe.items[0], torch.from_numpy(recipe.ids[0])[None]
    own = torch.from_numpy(it.mel[:, : ids.shape[1] * 4])[None]
    with torch.no_grad():
        dist, agree = recipe._retoken_loss(own, ids, torch.tensor([ids.shape[1]]))
    assert float(agree) == 1.0 and float(dist) < 0.5
    losses = recipe.step_losses(random.Random(1))
    if math.isnan(float(losses["retoken"])):  # a step at another speed: the term is not measured
        losses = next(ls for s in range(2, 40) if not math.isnan(float((ls := recipe.step_losses(random.Random(s)))["retoken"])))
    assert float(losses["retoken_agree"]) < 0.5 and float(losses["retoken"]) > float(dist)
    assert torch.isclose(losses["loss"], losses["mel_l1"] + 0.5 * losses["retoken"])
    train(recipe, loop, {})
    logged = list(csv.DictReader((tmp_path / "dec" / "log.csv").open()))
    assert len(logged) == 2 and all(0 <= float(r["retoken_agree"]) <= 1 for r in logged if r["retoken_agree"])

    voc = VocoderRecipe(VocoderTrainConfig(
        loop=LoopConfig(manifest=loop.manifest, cache_dir=loop.cache_dir, batch_size=2), model=VocoderConfig(dim=16, layers=1),
        segment_frames=24, decoder=str(tmp_path / "dec" / "model.safetensors"), tokenizer=str(shipped / "tokenizer.safetensors")))  # fmt: skip
    assert len(voc.decoded) == len(voc.items)
    assert all(d.shape == (80, it.mel.shape[1] // 4 * 4) for d, it in zip(voc.decoded, voc.items))
    assert torch.isfinite(voc.step_losses(random.Random(0))["loss"])
    with pytest.raises(VivavoceError, match="tokenizer"):
        VocoderRecipe(VocoderTrainConfig(loop=voc.cfg.loop, model=VocoderConfig(dim=16, layers=1), segment_frames=24,
                                         decoder=voc.cfg.decoder))  # fmt: skip
