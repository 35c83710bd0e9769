"""The codec facade: load the three checkpoints, audio <-> token ids, streaming, resynthesis.

    codec = Codec.load()                       # shipped lite-16k checkpoints
    ids = codec.encode(audio16k)               # int64 ids at codec.token_rate (25 Hz shipped)
    audio = codec.decode(ids, voice_ref=ref16k, speed=1.3)   # at codec.sample_rate
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch

from vivavoce.audio.io import check_audio
from vivavoce.codec.checkpoint import load_model
from vivavoce.codec.decoder import Decoder, DecoderConfig, control_vector
from vivavoce.codec.mel import log_mel
from vivavoce.audio.speaker import speaker_embedding
from vivavoce.codec.streaming import DecodeStream, EncodeStream
from vivavoce.codec.tokenizer import Tokenizer, TokenizerConfig
from vivavoce.codec.vocoder import Vocoder, VocoderConfig
from vivavoce.errors import VivavoceError

INPUT_RATE = 16000


def default_checkpoint_dir(profile: str = "lite-16k") -> Path:
    return Path(str(resources.files("vivavoce"))) / "checkpoints" / f"codec-{profile}"


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(tokenizer.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class Codec:
    def __init__(self, tokenizer: Tokenizer, decoder: Decoder, vocoder: Vocoder):
        if list(decoder.cfg.fsq_levels) != list(tokenizer.cfg.fsq_levels):
            raise VivavoceError("decoder and tokenizer checkpoints disagree on the code book (fsq_levels)")
        self.tokenizer, self.decoder, self.vocoder = tokenizer.eval(), decoder.eval(), vocoder.eval()

    @classmethod
    def load(cls, directory: str | Path | None = None, profile: str = "lite-16k") -> "Codec":
        """`profile="hq-48k"`: the same tokenizer and decoder, with the 48 kHz vocoder of checkpoints/codec-hq-48k
        (or of `directory`/vocoder-hq-48k.safetensors when a directory is given)."""
        d = Path(directory) if directory else default_checkpoint_dir()
        vocoder = d / "vocoder.safetensors"
        if profile == "hq-48k":
            vocoder = d / "vocoder-hq-48k.safetensors" if directory else default_checkpoint_dir("hq-48k") / "vocoder.safetensors"
        elif profile != "lite-16k":
            raise VivavoceError(f"unknown codec profile {profile!r} (lite-16k or hq-48k)")
        return cls(
            load_model(d / "tokenizer.safetensors", Tokenizer, TokenizerConfig, "tokenizer"),
            load_model(d / "decoder.safetensors", Decoder, DecoderConfig, "decoder"),
            load_model(vocoder, Vocoder, VocoderConfig, "vocoder"),
        )

    @property
    def tokenizer_fingerprint(self) -> str:
        """A short hash of the tokenizer's weights: a speech LM trained on its codes records it, so that a codec
        whose tokenizer was retrained is caught instead of silently turning the LM's speech into noise."""
        return tokenizer_fingerprint(self.tokenizer)

    @property
    def sample_rate(self) -> int:
        return self.vocoder.cfg.sample_rate

    @property
    def token_rate(self) -> float:
        return self.tokenizer.cfg.token_rate

    @property
    def bitrate(self) -> float:
        return self.token_rate * float(np.log2(self.tokenizer.codebook_size))

    @torch.inference_mode()
    def encode(self, audio16k: np.ndarray) -> np.ndarray:
        """16 kHz mono float audio -> token ids (the end is padded with silence to a whole token)."""
        audio = np.asarray(audio16k, dtype=np.float32).reshape(-1)
        check_audio(audio, INPUT_RATE, "input", _no_silence_check())
        per_token = self.tokenizer.cfg.frames_per_token * 160
        audio = np.pad(audio, (0, -audio.size % per_token))
        _, _, ids, _ = self.tokenizer.encode(log_mel(audio)[None])
        return ids[0].numpy()

    def speaker(self, voice_ref: np.ndarray) -> torch.Tensor:
        """d-vector of a 16 kHz reference clip, or a (256,) d-vector passed through."""
        ref = np.asarray(voice_ref, dtype=np.float32).reshape(-1)
        if ref.size == 256:
            return torch.from_numpy(ref)
        check_audio(ref, INPUT_RATE, "voice reference")
        return torch.from_numpy(speaker_embedding(ref))

    def _check(self, ids, speed: float) -> torch.Tensor:
        if not 0.5 <= speed <= 2.0:
            raise VivavoceError(f"speed {speed} is outside 0.5..2.0")
        ids = torch.as_tensor(np.asarray(ids, dtype=np.int64)).reshape(1, -1)
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.tokenizer.codebook_size):
            raise VivavoceError(f"token ids must lie in 0..{self.tokenizer.codebook_size - 1}")
        return ids

    @torch.inference_mode()
    def decode(self, ids, voice_ref: np.ndarray, speed: float = 1.0, pitch: float = 0.0,
               energy: float = 0.0) -> np.ndarray:  # fmt: skip
        """Token ids -> audio at `sample_rate`, in the voice of `voice_ref` (16 kHz clip or d-vector)."""
        ids = self._check(ids, speed)
        if ids.numel() == 0:
            return np.zeros(0, dtype=np.float32)
        mel = self.decoder(ids, self.speaker(voice_ref)[None], control_vector(speed, pitch, energy)[None])
        return self.vocoder(mel)[0].numpy()

    def resynth(self, audio16k: np.ndarray, voice_ref: np.ndarray | None = None, speed: float = 1.0) -> np.ndarray:
        return self.decode(self.encode(audio16k), audio16k if voice_ref is None else voice_ref, speed)

    def encode_stream(self) -> EncodeStream:
        return EncodeStream(self.tokenizer)

    def decode_stream(self, voice_ref: np.ndarray, speed: float = 1.0, pitch: float = 0.0, energy: float = 0.0,
                      chunk: int = 5) -> DecodeStream:  # fmt: skip
        self._check([], speed)
        return DecodeStream(self.decoder, self.vocoder, self.speaker(voice_ref), control_vector(speed, pitch, energy),
                            chunk)  # fmt: skip


def _no_silence_check():
    from vivavoce.audio.io import AudioLimits

    return AudioLimits(max_seconds=600.0, reject_silence=False)
