"""Audio in and out: reading, checking, resampling, writing, and PCM16 framing for streams."""

from vivavoce.audio.io import AudioLimits, check_audio, read_audio, resample, to_mono, write_audio
from vivavoce.audio.stream import FrameChunker, float_to_pcm16, pcm16_to_float

__all__ = [
    "AudioLimits",
    "FrameChunker",
    "check_audio",
    "float_to_pcm16",
    "pcm16_to_float",
    "read_audio",
    "resample",
    "to_mono",
    "write_audio",
]
