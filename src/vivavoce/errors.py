"""The one exception type a user sees: its message is printed as a single line, never a traceback."""


class VivavoceError(Exception):
    """A problem with the user's input or set-up, explained in one line."""


class AudioError(VivavoceError):
    """Input that is not usable audio: not audio, empty, truncated, NaN/inf, too long, silent, wrong format."""
