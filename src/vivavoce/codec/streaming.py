"""Streaming encode and decode with explicit per-stream state (one object per stream, nothing shared).

EncodeStream: push audio in any pieces (a token, 40 ms at 25 Hz, is the natural size); the tokenizer is causal, so
the tokens equal those of encoding the whole file at once (`Codec.encode`, which pads the end to a whole token the
same way `flush` does).

DecodeStream: push token ids as they arrive; every `chunk` tokens (default 5 = 0.2 s at 25 Hz) it decodes once the
bounded look-ahead the models need is in (decoder token and frame look-ahead + vocoder look-ahead, about two
tokens), recomputing a window of past context instead of carrying every layer's cache, and overlap-adds the
iSTFT frames onto the tail kept from the previous chunk. All receptive fields are finite and known, so the
streamed waveform equals offline decoding up to float rounding.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from vivavoce.codec.decoder import Decoder, frame_token_index, num_frames
from vivavoce.codec.mel import LogMel, MelStream
from vivavoce.codec.tokenizer import Tokenizer
from vivavoce.codec.vocoder import Vocoder



class EncodeStream:
    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.mel = MelStream(LogMel())
        self.state = tokenizer.initial_state(1)
        self.samples = 0
        self.samples_per_token = tokenizer.cfg.frames_per_token * self.mel.mel.cfg.hop

    @torch.inference_mode()
    def push(self, audio: np.ndarray) -> np.ndarray:
        """16 kHz mono float samples -> the token ids they complete (possibly none)."""
        audio = torch.as_tensor(np.asarray(audio, dtype=np.float32)).reshape(-1)
        self.samples += audio.numel()
        frames = self.mel.push(audio)
        if frames.shape[-1] == 0:
            return np.zeros(0, dtype=np.int64)
        _, _, ids, self.state = self.tokenizer.encode(frames[None], self.state)
        return ids[0].numpy()

    def flush(self) -> np.ndarray:
        """End of stream: pad to a whole token with silence and return the last ids."""
        short = -self.samples % self.samples_per_token
        return self.push(np.zeros(short, dtype=np.float32)) if short else np.zeros(0, dtype=np.int64)


class DecodeStream:
    def __init__(self, decoder: Decoder, vocoder: Vocoder, speaker: torch.Tensor, control: torch.Tensor,
                 chunk: int = 5):  # fmt: skip
        self.dec, self.voc, self.chunk = decoder, vocoder, chunk
        self.cond = torch.cat([speaker.reshape(1, -1), control.reshape(1, -1)], -1)
        self.speed = float(torch.exp(control.reshape(-1)[0]))
        self.fpt = decoder.cfg.frames_per_token
        self.tokens = torch.zeros(1, 0, dtype=torch.long)
        self.base = 0  # token index of self.tokens[:, 0] (old tokens are dropped)
        self.next_token = 0  # first token of the next chunk to decode
        self.frames_done = 0  # vocoder frames overlap-added so far
        hop, n_fft = vocoder.cfg.hop, vocoder.cfg.n_fft
        self.tail = torch.zeros(1, n_fft - hop)  # overlap-add buffer from frames_done * hop on
        self.env_tail = torch.zeros(1, n_fft - hop)
        self.discard = n_fft - hop  # samples before time 0 in the causal framing, still to drop
        self.finished = False

    @property
    def lookahead_tokens(self) -> int:
        """Tokens past a chunk's end that must arrive before the chunk can be decoded."""
        frames = self.voc.rf[1] + self.dec.frame_rf[1]  # frames of look-ahead past the chunk's last frame
        return math.ceil(frames * self.speed / self.fpt) + self.dec.token_rf[1]

    def push(self, ids) -> np.ndarray:
        ids = torch.as_tensor(np.asarray(ids, dtype=np.int64)).reshape(1, -1)
        self.tokens = torch.cat([self.tokens, ids], 1)
        out = []
        while True:
            audio = self._step(final=False)
            if audio is None:
                break
            out.append(audio)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def flush(self) -> np.ndarray:
        """End of stream: decode what is left and release the overlap-add tail."""
        out = []
        while (audio := self._step(final=True)) is not None:
            out.append(audio)
        if not self.finished:  # the last chunk was decoded by push: release its tail
            audio = (self.tail / self.env_tail.clamp_min(1e-3))[0, self.discard :]
            self.discard, self.finished = max(0, self.discard - self.tail.shape[1]), True
            out.append(audio.numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    @torch.inference_mode()
    def _step(self, final: bool) -> np.ndarray | None:
        n = self.base + self.tokens.shape[1]
        if self.next_token >= n:
            return None
        end_token = min(self.next_token + self.chunk, n)
        if end_token - self.next_token < self.chunk and not final:
            return None
        total = num_frames(n, self.speed, self.fpt) if final else None
        ja, jb = self.frames_done, num_frames(end_token, self.speed, self.fpt)
        if total is not None:
            jb = min(jb, total)
        (Lv, Rv), (Lf, Rf), (Lt, Rt) = self.voc.rf, self.dec.frame_rf, self.dec.token_rf
        ma, mb = max(0, ja - Lv), jb + Rv
        fa, fb = max(0, ma - Lf), mb + Rf
        if total is not None:
            mb, fb = min(mb, total), min(fb, total)
        idx, _ = frame_token_index(fa, fb, self.speed, self.fpt)
        ta, tb = int(idx[0]), int(idx[-1]) + 1
        sa, sb = max(0, ta - Lt), tb + Rt
        if sb > n and not final:
            return None  # look-ahead not here yet
        sb = min(sb, n)
        tokens = self.tokens[:, sa - self.base : sb - self.base]
        lat = self.dec.token_latents(tokens, self.cond)
        mel = self.dec.frames(lat, sa, fa, fb, self.speed, self.cond)[..., ma - fa : mb - fa]
        spec = self.voc.spectra(mel)[..., ja - ma : jb - ma]
        audio = self._overlap_add(spec, last=final and jb == total)
        self.frames_done, self.next_token = jb, end_token
        keep_from = max(0, int(max(0, jb - Lv - Lf) * self.speed / self.fpt) - Lt - 1)  # next chunk's context
        if keep_from > self.base:
            self.tokens, self.base = self.tokens[:, keep_from - self.base :], keep_from
        return audio

    def _overlap_add(self, spec: torch.Tensor, last: bool) -> np.ndarray:
        frames, env = self.voc.overlap_add(spec)  # starts at sample frames_done * hop of the buffer
        keep = self.tail.shape[1]
        frames[:, :keep] += self.tail
        env[:, :keep] += self.env_tail
        ready = frames.shape[1] if last else frames.shape[1] - keep
        audio = frames[:, :ready] / env[:, :ready].clamp_min(1e-3)
        self.tail, self.env_tail = frames[:, ready:], env[:, ready:]
        self.finished = self.finished or last
        drop = min(self.discard, audio.shape[1])
        self.discard -= drop
        return audio[0, drop:].numpy()
