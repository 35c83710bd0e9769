"""Real third-party speech engines we drive but do not train: Whisper ASR, Piper and espeak-ng TTS.

Piper and espeak-ng are GPL-3.0: they only ever run as separate processes (`python -m piper`, `espeak-ng`),
never imported, so the core of vivavoce stays Apache-2.0.
"""
