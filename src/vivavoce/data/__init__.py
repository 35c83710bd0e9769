"""Synthetic spoken-dialogue corpus: user turns from built-in templates, answers by the frozen backbone, many user
voices, emotions and spoken control commands, rendered by Piper / espeak-ng / WORLD (see corpus.py)."""
