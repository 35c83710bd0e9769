"""Speech codec: causal semantic tokenizer (25 Hz shipped, one FSQ code book), token -> mel decoder, Vocos vocoder."""

from vivavoce.codec.codec import Codec, default_checkpoint_dir
from vivavoce.codec.mel import LogMel, log_mel

__all__ = ["Codec", "LogMel", "default_checkpoint_dir", "log_mel"]
