"""The three codec recipes (tokenizer, decoder, vocoder) over `loop.train`; each config is a YAML-loadable dataclass.

    vivavoce train tokenizer --config configs/codec/tokenizer-lite.yaml [--device cuda] [--steps N]
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from vivavoce.codec.checkpoint import load_model
from vivavoce.codec.decoder import Decoder, DecoderConfig, control_vector, num_frames
from vivavoce.codec.mel import HOP, LOG_FLOOR, LogMel, MelConfig
from vivavoce.codec.phonemes import encode_phonemes, vocab_size
from vivavoce.codec.tokenizer import Tokenizer, TokenizerConfig
from vivavoce.codec.vocoder import Vocoder, VocoderConfig
from vivavoce.errors import VivavoceError
from vivavoce.train.features import Item, load_items, read_manifest
from vivavoce.train.loop import LoopConfig, Recipe

PAD_MEL = math.log(LOG_FLOOR)


@dataclass
class TokenizerTrainConfig:
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(out_dir="runs/codec/tokenizer"))
    model: TokenizerConfig = field(default_factory=TokenizerConfig)
    max_seconds: float = 6.0  # longer utterances are cropped (from the start: the model is causal)
    # FSQ bounds z with tanh: once |z| drifts past ~2 the gradient vanishes and every frame rounds to one code (seen
    # in a first run, during CTC's blank plateau). This keeps z in the range where rounding still discriminates.
    saturation_weight: float = 1.0
    spec_augment: bool = True
    # Token stability. A speech LM can only predict tokens that do not flip when the same speech is louder or a
    # little noisy, so each batch is also encoded as a second view (gain, white noise) that must give the same
    # pre-quantisation vector (consistency) and CTC transcript; the grid term pulls each vector to the centre of its
    # FSQ cell, away from the rounding edges where a small change flips the code. 0 turns a term off.
    consistency_weight: float = 0.0
    grid_weight: float = 0.0
    view_gain_db: float = 6.0
    view_snr_db: list[float] = field(default_factory=lambda: [15.0, 40.0])


@dataclass
class DecoderTrainConfig:
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(out_dir="runs/codec/decoder"))
    model: DecoderConfig = field(default_factory=DecoderConfig)
    tokenizer: str = "runs/codec/tokenizer/model.safetensors"
    speed_range: list[float] = field(default_factory=lambda: [0.75, 1.35])
    gain_db: float = 6.0  # random level change; the energy control is told about it
    crop_tokens: int = 32  # train on random windows of this many tokens (2.56 s)
    # Re-tokenisation loss: the decoder's mel, read by the frozen tokenizer, should give back the tokens it was
    # decoded from (an L1 regression smooths away the contrasts that tell phones apart: v4's mels re-tokenise to
    # the same code 66 % of the time). Scored on speed-1 steps, as the squared distance of the tokenizer's bounded
    # pre-quantisation vector to the target code, after the first `retoken_skip` tokens of a crop (they lack the
    # left context the original tokens had). 0 turns it off.
    retoken_weight: float = 0.0
    retoken_skip: int = 8


@dataclass
class VocoderTrainConfig:
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(out_dir="runs/codec/vocoder"))
    model: VocoderConfig = field(default_factory=VocoderConfig)
    segment_frames: int = 100  # 1 s training windows
    stft_resolutions: list[list[int]] = field(default_factory=lambda: [[256, 64], [512, 128], [1024, 256]])
    mel_weight: float = 1.0
    adversarial: bool = False  # not implemented at this size; kept as an explicit switch
    # Fine-tuning on the decoder's mels (Tacotron 2's trick): the vocoder only ever hears the decoder's smoothed mels
    # at run time, so it learns to turn those into the original waveform. The decoder runs teacher-forced on the
    # clip's own tokens, at speed 1, so its mel lines up frame for frame with the recording.
    decoder: str = ""  # a decoder checkpoint; "" trains on the recordings' mels only
    tokenizer: str = ""  # the tokenizer that decoder reads
    decoder_mel_share: float = 0.8  # fraction of windows cut from decoder mels (the rest: true mels)


def _pad_mels(mels: list[np.ndarray]) -> torch.Tensor:
    T = max(m.shape[1] for m in mels)
    return torch.stack([F.pad(torch.from_numpy(m), (0, T - m.shape[1]), value=PAD_MEL) for m in mels])


class TokenizerRecipe(Recipe):
    kind, model_cls, config_cls = "tokenizer", Tokenizer, TokenizerConfig

    def __init__(self, cfg: TokenizerTrainConfig):
        self.cfg = cfg
        self.model = Tokenizer(cfg.model)
        self.items = load_items(cfg.loop.manifest, cfg.loop.cache_dir, speaker=False)
        self.targets = [encode_phonemes(it.phonemes) for it in self.items]
        self.device = "cpu"

    def to(self, device):
        self.model.to(device)
        self.device = device

    def adapt_warm_start(self, tensors):
        """From a tokenizer of a lower token rate (k times more frames per token): the pooling weights of each k
        frames are summed, so a token of frames x reads as the old token of frames (x, x, ...), and the CTC head keeps
        every k-th of its frame rows. A randomly re-initialised pool instead fell into the CTC blank plateau and
        collapsed the codebook to a few codes."""
        tensors = dict(tensors)
        fpt, up = self.cfg.model.frames_per_token, self.cfg.model.ctc_upsample
        d, channels = self.model.pool.weight.shape[0], self.model.pool.weight.shape[1] // fpt
        pool = tensors.get("pool.weight")
        if pool is not None and pool.shape[0] == d and pool.shape[1] % (2 * fpt * channels) == 0:
            tensors["pool.weight"] = pool.view(d, -1, fpt * channels).sum(1)  # (frame, channel) order, frame-major
        ctc, ctc_b, vocab = tensors.get("ctc_out.weight"), tensors.get("ctc_out.bias"), vocab_size()
        if ctc is not None and ctc_b is not None and ctc.shape[1] == d and ctc.shape[0] % (2 * up * vocab) == 0:
            k = ctc.shape[0] // (up * vocab)
            tensors["ctc_out.weight"] = ctc.view(-1, vocab, d)[::k].reshape(-1, d)
            tensors["ctc_out.bias"] = ctc_b.view(-1, vocab)[::k].reshape(-1)
        # A deeper tokenizer from a shallower one: the extra blocks go on top with their residual branches' output
        # projections at zero (the rest keeps its fresh init), so the model computes exactly the old codes and grows
        # from there.
        old_layers = len({k.split(".")[1] for k in tensors if k.startswith("blocks.")})
        for i in range(old_layers, len(self.model.blocks)) if old_layers else ():
            for name, p in self.model.blocks[i].named_parameters():
                if name.startswith(("out.", "mlp.2.")):
                    tensors[f"blocks.{i}.{name}"] = torch.zeros_like(p)
        return tensors

    def step_losses(self, rng):
        fpt = self.cfg.model.frames_per_token
        pick = [rng.randrange(len(self.items)) for _ in range(self.cfg.loop.batch_size)]
        max_frames = int(self.cfg.max_seconds * 100) // fpt * fpt
        mels, targets, n_tok = [], [], []
        for i in pick:
            m = self.items[i].mel[:, :max_frames]
            m = m[:, : m.shape[1] // fpt * fpt]
            # a cropped utterance keeps the share of its phonemes that fits (CTC tolerates the rough cut)
            t = self.targets[i]
            if m.shape[1] < self.items[i].mel.shape[1] // fpt * fpt:
                t = t[: int(len(t) * m.shape[1] / self.items[i].mel.shape[1])]
            mels.append(m)
            targets.append(t)
            n_tok.append(m.shape[1] // fpt)
        mel = _pad_mels(mels)
        two_views = self.cfg.consistency_weight > 0
        if two_views:  # the second view, from the waveform: the same speech, louder or quieter, with noise
            mel = torch.cat([mel, _pad_mels([self._nuisance_view(pick[b], m.shape[1], rng) for b, m in enumerate(mels)])])
            targets, n_tok = targets * 2, n_tok * 2
        if self.cfg.spec_augment:
            mel = _spec_augment(mel, rng)
        mel = mel.to(self.device)
        z, codes, ids, _ = self.model.encode(mel)
        logp = self.model.ctc_logits(codes).float()
        up = self.cfg.model.ctc_upsample
        in_len = torch.tensor([n * up for n in n_tok])
        tgt_len = torch.tensor([len(t) for t in targets])
        tgt = torch.tensor([p for t in targets for p in t], dtype=torch.long)
        ctc = F.ctc_loss(logp.transpose(0, 1), tgt, in_len, tgt_len, blank=0, zero_infinity=True)
        sat = (z.float().abs() - 1.5).clamp_min(0).pow(2).mean()
        loss = ctc + self.cfg.saturation_weight * sat
        out = {"ctc": ctc.detach(), "saturation": sat.detach(), "codes_in_batch": torch.tensor(float(ids.unique().numel()))}
        valid = torch.arange(z.shape[1])[None] < torch.tensor(n_tok)[:, None]  # (B, n): padding excluded
        bounded = self.model.fsq.bound(z.float())
        if self.cfg.grid_weight > 0:
            grid = ((bounded - bounded.round().detach()) ** 2).mean(-1)[valid].mean()
            loss = loss + self.cfg.grid_weight * grid
            out["grid"] = grid.detach()
        if two_views:
            half = len(pick)
            a, b = bounded[:half], bounded[half:]
            cons = ((a - b) ** 2).mean(-1)[valid[:half]].mean()
            loss = loss + self.cfg.consistency_weight * cons
            same = (ids[:half] == ids[half:])[valid[:half]].float().mean()
            out.update(consistency=cons.detach(), same_code=same.detach())
        return {"loss": loss, **out}

    def _nuisance_view(self, i: int, frames: int, rng: random.Random) -> np.ndarray:
        from vivavoce.codec.mel import log_mel

        audio = self.items[i].audio[: frames * HOP]
        gain = 10 ** (rng.uniform(-self.cfg.view_gain_db, self.cfg.view_gain_db) / 20)
        snr = rng.uniform(*self.cfg.view_snr_db)
        noise = np.random.default_rng(rng.randrange(2**32)).normal(size=audio.size).astype(np.float32)
        noisy = gain * (audio + noise * np.sqrt(np.mean(audio**2) + 1e-10) * 10 ** (-snr / 20))
        return log_mel(np.clip(noisy, -1, 1)).numpy()[:, :frames]


def _spec_augment(mel: torch.Tensor, rng: random.Random) -> torch.Tensor:
    mel = mel.clone()
    for b in range(mel.shape[0]):
        f0 = rng.randrange(0, 70)
        mel[b, f0 : f0 + rng.randrange(0, 10)] = mel[b].mean()
        mel[b] += rng.uniform(-1.0, 1.0)  # level
    return mel


def _tokenize_all(tokenizer: Tokenizer, items: list[Item]) -> list[np.ndarray]:
    fpt = tokenizer.cfg.frames_per_token
    out = []
    with torch.inference_mode():
        for it in items:
            n = it.mel.shape[1] // fpt * fpt
            out.append(tokenizer.encode(torch.from_numpy(it.mel[:, :n])[None])[2][0].numpy())
    return out


def stretch_mel(mel: torch.Tensor, frames: int, speed: float) -> torch.Tensor:
    """Resample a mel (B, C, T) in time so frame j reads input time j * speed: a tempo change, pitch untouched."""
    pos = torch.arange(frames, dtype=torch.float32) * speed
    lo = pos.floor().long().clamp(max=mel.shape[-1] - 1)
    hi = (lo + 1).clamp(max=mel.shape[-1] - 1)
    w = (pos - lo.float()).clamp(0, 1)
    return mel[..., lo] * (1 - w) + mel[..., hi] * w


class DecoderRecipe(Recipe):
    kind, model_cls, config_cls = "decoder", Decoder, DecoderConfig

    def __init__(self, cfg: DecoderTrainConfig):
        self.cfg = cfg
        tok = load_model(cfg.tokenizer, Tokenizer, TokenizerConfig, "tokenizer")
        if list(tok.cfg.fsq_levels) != list(cfg.model.fsq_levels) or tok.cfg.frames_per_token != cfg.model.frames_per_token:
            raise VivavoceError("decoder config: fsq_levels / frames_per_token must match the tokenizer's")
        self.model = Decoder(cfg.model)
        self.tokenizer = tok.requires_grad_(False)
        self.items = load_items(cfg.loop.manifest, cfg.loop.cache_dir)
        self.ids = _tokenize_all(tok, self.items)
        self.by_speaker: dict[str, list[int]] = {}
        for i, it in enumerate(self.items):
            self.by_speaker.setdefault(it.speaker, []).append(i)
        self.device = "cpu"

    def to(self, device):
        self.model.to(device)
        self.tokenizer.to(device)
        self.device = device

    def step_losses(self, rng):
        fpt = self.cfg.model.frames_per_token
        speed = rng.uniform(*self.cfg.speed_range) if rng.random() < 0.7 else 1.0
        pick = [rng.randrange(len(self.items)) for _ in range(self.cfg.loop.batch_size)]
        crops = []
        for i in pick:
            n = len(self.ids[i])
            a = rng.randrange(0, max(1, n - self.cfg.crop_tokens + 1))
            crops.append((a, min(n, a + self.cfg.crop_tokens)))
        n_max = max(b - a for a, b in crops)
        J = num_frames(n_max, speed, fpt)
        ids = torch.zeros(len(pick), n_max, dtype=torch.long)
        targets, mask, spk, ctrl = [], torch.zeros(len(pick), 1, J), [], []
        for b, (i, (t0, t1)) in enumerate(zip(pick, crops)):
            it, n = self.items[i], t1 - t0
            ids[b, :n] = torch.from_numpy(self.ids[i][t0:t1])
            ref = self.items[rng.choice(self.by_speaker[it.speaker])]
            gain = rng.uniform(-self.cfg.gain_db, self.cfg.gain_db)
            mel = torch.from_numpy(it.mel[:, t0 * fpt : t1 * fpt]) + gain / 10 * math.log(10)
            mel = stretch_mel(mel, J, speed)
            targets.append(mel)
            mask[b, :, : num_frames(n, speed, fpt)] = 1
            pitch = 12 * (it.log_f0 - ref.log_f0) / math.log(2) if math.isfinite(it.log_f0 - ref.log_f0) else 0.0
            spk.append(torch.from_numpy(ref.dvector))
            ctrl.append(control_vector(speed, pitch, it.rms_db - ref.rms_db + gain))
        target = torch.stack(targets).to(self.device)
        mask = mask.to(self.device)
        pred = self.model(ids.to(self.device), torch.stack(spk).to(self.device), torch.stack(ctrl).to(self.device))
        l1 = ((pred.float() - target).abs() * mask).sum() / (mask.sum() * pred.shape[1])
        losses = {"loss": l1, "mel_l1": l1.detach()}
        if self.cfg.retoken_weight > 0:  # NaN: not measured at this speed (the log averages what was)
            nan = torch.tensor(float("nan"))
            losses.update(retoken=nan, retoken_agree=nan)
            if speed == 1.0:
                lengths = torch.tensor([b - a for a, b in crops], device=self.device)
                retoken, agree = self._retoken_loss(pred.float(), ids.to(self.device), lengths)
                losses.update(loss=l1 + self.cfg.retoken_weight * retoken, retoken=retoken.detach(), retoken_agree=agree)
        return losses

    def _retoken_loss(self, mel: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor):
        """Distance of the tokenizer's reading of `mel` to the tokens `ids` it came from, and the share of tokens
        read back exactly."""
        fsq = self.tokenizer.fsq
        z = self.tokenizer.encode(mel)[0]
        n = min(z.shape[1], ids.shape[1])
        bound, target = fsq.bound(z[:, :n]), fsq.codes(ids[:, :n]) * (fsq.lv // 2)
        pos = torch.arange(n, device=mel.device)[None]
        valid = ((pos >= self.cfg.retoken_skip) & (pos < lengths[:, None])).float()
        if valid.sum() == 0:
            return mel.new_zeros(()), mel.new_zeros(())
        dist = ((bound - target) ** 2).sum(-1)
        agree = ((torch.round(bound) == target).all(-1).float() * valid).sum() / valid.sum()
        return (dist * valid).sum() / valid.sum(), agree.detach()


class MultiResolutionSTFTLoss(torch.nn.Module):
    def __init__(self, resolutions):
        super().__init__()
        self.resolutions = [tuple(r) for r in resolutions]

    def forward(self, y, x):
        total = 0.0
        for n_fft, hop in self.resolutions:
            w = torch.hann_window(n_fft, device=y.device)
            Y = torch.stft(y, n_fft, hop, window=w, return_complex=True).abs().clamp_min(1e-7)
            X = torch.stft(x, n_fft, hop, window=w, return_complex=True).abs().clamp_min(1e-7)
            sc = torch.linalg.norm(Y - X) / torch.linalg.norm(X)
            total = total + sc + F.l1_loss(Y.log(), X.log())
        return total / len(self.resolutions)


class VocoderRecipe(Recipe):
    kind, model_cls, config_cls = "vocoder", Vocoder, VocoderConfig

    def __init__(self, cfg: VocoderTrainConfig):
        if cfg.adversarial:
            raise VivavoceError("vocoder config: adversarial training is not implemented yet (set adversarial: false)")
        self.cfg = cfg
        self.model = Vocoder(cfg.model)
        # load_items keeps the manifest's order, so item k is row k (ids may repeat across merged manifests)
        rows = read_manifest(cfg.loop.manifest)
        long_enough = [(it, row) for it, row in zip(load_items(cfg.loop.manifest, cfg.loop.cache_dir, speaker=bool(cfg.decoder)), rows)
                       if it.mel.shape[1] > cfg.segment_frames + 4]  # fmt: skip
        if not long_enough:
            raise VivavoceError("vocoder training: no utterance is longer than one training window")
        # Targets at the profile's rate. The mel stays the 16 kHz one; above 16 kHz the targets come from each row's
        # `audio_native` (the corpus's engine rate, e.g. Piper's 22.05 kHz), so the band between 8 kHz and half the
        # native rate is real and everything above it is silence the vocoder must learn to leave empty.
        if cfg.model.sample_rate == 16000:
            self.items, self.targets = [it for it, _ in long_enough], [it.audio for it, _ in long_enough]
        else:
            self.items, self.targets = self._native_targets(long_enough, cfg.model)
        self.decoded = self._decoder_mels(cfg, self.items) if cfg.decoder else None
        self.stft_loss = MultiResolutionSTFTLoss(cfg.stft_resolutions)
        # the mel loss at the output rate, up to its Nyquist (the 16 kHz input mel would ignore all above 8 kHz)
        m = cfg.model
        n_mels = 80 if m.sample_rate == 16000 else 100
        self.mel = LogMel(MelConfig(m.sample_rate, m.n_fft, m.hop, n_mels, 0.0, m.sample_rate / 2))
        self.device = "cpu"

    @staticmethod
    def _native_targets(pairs: list[tuple[Item, dict]], model: VocoderConfig) -> tuple[list[Item], list[np.ndarray]]:
        from vivavoce.audio.io import AudioLimits, read_audio

        items, targets = [], []
        for it, row in pairs:
            if row.get("audio_native"):
                audio = read_audio(row["audio_native"], model.sample_rate, AudioLimits(max_seconds=30.0))
                items.append(it)
                targets.append(np.pad(audio, (0, max(0, it.mel.shape[1] * model.hop - audio.size))))
        if not items:
            raise VivavoceError(f"vocoder training at {model.sample_rate} Hz: no manifest row has `audio_native`")
        return items, targets

    @staticmethod
    def _decoder_mels(cfg: VocoderTrainConfig, items: list[Item]) -> list[np.ndarray]:
        """The decoder's teacher-forced mel of every item (float16), aligned with item.mel's first frames."""
        if not cfg.tokenizer:
            raise VivavoceError("vocoder config: `decoder` needs `tokenizer` (the one that decoder reads)")
        tok = load_model(cfg.tokenizer, Tokenizer, TokenizerConfig, "tokenizer")
        dec = load_model(cfg.decoder, Decoder, DecoderConfig, "decoder")
        if tok.cfg.frames_per_token != dec.cfg.frames_per_token:
            raise VivavoceError("vocoder config: the decoder and tokenizer disagree on frames_per_token")
        out = []
        with torch.inference_mode():
            for it, ids in zip(items, _tokenize_all(tok, items)):
                ids = torch.from_numpy(ids)[None]
                cond = control_vector()[None]
                out.append(dec(ids, torch.from_numpy(it.dvector)[None], cond)[0].numpy().astype(np.float16))
        return out

    def to(self, device):
        self.model.to(device)
        self.stft_loss.to(device)
        self.mel.to(device)
        self.device = device

    def step_losses(self, rng):
        T, hop = self.cfg.segment_frames, self.cfg.model.hop
        mels, wavs = [], []
        for _ in range(self.cfg.loop.batch_size):
            i = rng.randrange(len(self.items))
            mel = self.items[i].mel
            if self.decoded is not None and self.decoded[i].shape[1] > T and rng.random() < self.cfg.decoder_mel_share:
                mel = self.decoded[i]  # float16: only the window is converted
            start = rng.randrange(0, mel.shape[1] - T)
            mels.append(torch.from_numpy(mel[:, start : start + T].astype(np.float32)))
            wavs.append(torch.from_numpy(self.targets[i][start * hop : (start + T) * hop]))
        mel, wav = torch.stack(mels).to(self.device), torch.stack(wavs).to(self.device)
        # the first and last frames lack context inside a window: score only the middle
        cut = self.model.cfg.n_fft
        y = self.model(mel).float()[:, cut:-cut]
        x = wav[:, cut:-cut]
        stft = self.stft_loss(y, x)
        mel_l1 = F.l1_loss(self.mel(y), self.mel(x))
        loss = stft + self.cfg.mel_weight * mel_l1
        return {"loss": loss, "stft": stft.detach(), "mel_l1": mel_l1.detach()}


RECIPES = {
    "tokenizer": (TokenizerTrainConfig, TokenizerRecipe),
    "decoder": (DecoderTrainConfig, DecoderRecipe),
    "vocoder": (VocoderTrainConfig, VocoderRecipe),
}
