"""Emotions as prosody, and spoken control commands with the control values they ask for.

An utterance's style is a `Style`: emotion + intensity, and the speed factor and pitch shift (semitones) relative
to its voice's neutral delivery. Emotions change mean F0, F0 range, rate and loudness: the labels must be
learnable from the audio alone, so the same sentence is rendered in several emotions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vivavoce.data.world import WorldEdit

EMOTIONS = ("neutral", "happy", "sad", "angry", "surprised")
SPEED_RANGE = (0.5, 2.0)
PITCH_RANGE = (-8.0, 8.0)  # semitones


@dataclass(frozen=True)
class Prosody:
    semitones: float
    f0_range: float
    speed: float
    gain_db: float


# Full-intensity prosody of each emotion, from the acoustic-correlates literature (e.g. Scherer 2003): joy and
# surprise raise F0 and widen its range, sadness lowers, flattens, slows and softens, anger speeds up and is loud.
EMOTION_PROSODY = {
    "neutral": Prosody(0.0, 1.0, 1.0, 0.0),
    "happy": Prosody(2.5, 1.45, 1.08, 2.0),
    "sad": Prosody(-2.0, 0.55, 0.82, -6.0),
    "angry": Prosody(1.0, 1.35, 1.12, 4.0),
    "surprised": Prosody(4.0, 1.8, 0.98, 2.0),
}


@dataclass(frozen=True)
class Style:
    emotion: str = "neutral"
    intensity: float = 0.0  # 0 (neutral delivery) .. 1 (full emotion)
    speed: float = 1.0  # extra speed factor on top of the emotion's, e.g. from "speak slower"
    pitch_shift: float = 0.0  # extra semitones on top of the emotion's, e.g. from "use a deeper voice"

    def prosody(self) -> Prosody:
        """The emotion scaled by intensity, combined with the explicit speed and pitch."""
        p, k = EMOTION_PROSODY[self.emotion], self.intensity
        return Prosody(
            semitones=p.semitones * k + self.pitch_shift,
            f0_range=p.f0_range**k,
            speed=p.speed**k * self.speed,
            gain_db=p.gain_db * k,
        )

    def labels(self) -> dict:
        """What the manifest records: total speed factor and pitch shift, as heard."""
        p = self.prosody()
        return {"emotion": self.emotion, "intensity": round(self.intensity, 3), "speed": round(p.speed, 4),
                "pitch_shift": round(p.semitones, 3)}  # fmt: skip

    def world_edit(self, include_speed: bool = True) -> WorldEdit:
        p = self.prosody()
        return WorldEdit(f0_scale=2 ** (p.semitones / 12), f0_range=p.f0_range,
                         speed=p.speed if include_speed else 1.0, gain_db=p.gain_db)  # fmt: skip


NEUTRAL = Style()


@dataclass(frozen=True)
class Control:
    """What a spoken control command asks of the assistant's following replies."""

    speed: float = 1.0
    pitch_shift: float = 0.0
    emotion: str = "neutral"
    intensity: float = 0.0

    def style(self) -> Style:
        return Style(self.emotion, self.intensity, self.speed, self.pitch_shift)

    def to_dict(self) -> dict:
        return asdict(self)


_SLOWER, _MUCH_SLOWER = Control(speed=0.8), Control(speed=0.65)
_FASTER, _MUCH_FASTER = Control(speed=1.2), Control(speed=1.4)
_LOWER, _MUCH_LOWER, _HIGHER, _MUCH_HIGHER = (Control(pitch_shift=-3.0), Control(pitch_shift=-5.0),
                                              Control(pitch_shift=3.0), Control(pitch_shift=5.0))  # fmt: skip
_NORMAL = Control()

CONTROL_COMMANDS: tuple[tuple[str, Control], ...] = (
    ("Speak slower.", _SLOWER), ("Please slow down.", _SLOWER), ("Could you talk a little slower?", _SLOWER),
    ("A bit slower please.", _SLOWER), ("You are talking too fast.", _SLOWER),
    ("Speak much more slowly.", _MUCH_SLOWER), ("Slow down a lot, please.", _MUCH_SLOWER),
    ("Speak faster.", _FASTER), ("A bit faster please.", _FASTER), ("Can you speed up a little?", _FASTER),
    ("You can talk quicker.", _FASTER), ("Hurry up a bit.", _FASTER),
    ("Talk much faster.", _MUCH_FASTER), ("Speak as fast as you can.", _MUCH_FASTER),
    ("Use a deeper voice.", _LOWER), ("Lower your voice please.", _LOWER), ("Can you sound deeper?", _LOWER),
    ("Speak in a much lower voice.", _MUCH_LOWER), ("Make your voice really deep.", _MUCH_LOWER),
    ("Use a higher voice.", _HIGHER), ("Raise your pitch a little.", _HIGHER), ("Can you sound higher?", _HIGHER),
    ("Speak in a much higher voice.", _MUCH_HIGHER), ("Make your voice really high.", _MUCH_HIGHER),
    ("Sound more excited.", Control(emotion="happy", intensity=0.9)),
    ("Be more cheerful please.", Control(emotion="happy", intensity=0.7)),
    ("Say it happily.", Control(emotion="happy", intensity=0.8)),
    ("Sound a little happier.", Control(emotion="happy", intensity=0.4)),
    ("Sound sad.", Control(emotion="sad", intensity=0.8)),
    ("Say it in a sad voice.", Control(emotion="sad", intensity=0.9)),
    ("Sound a bit gloomy.", Control(emotion="sad", intensity=0.4)),
    ("Sound angry.", Control(emotion="angry", intensity=0.8)),
    ("Say it like you are annoyed.", Control(emotion="angry", intensity=0.5)),
    ("Sound really furious.", Control(emotion="angry", intensity=1.0)),
    ("Sound surprised.", Control(emotion="surprised", intensity=0.8)),
    ("Say it as if you are amazed.", Control(emotion="surprised", intensity=0.9)),
    ("Sound a little astonished.", Control(emotion="surprised", intensity=0.4)),
    ("Calm down.", _NORMAL), ("Speak normally again.", _NORMAL), ("Go back to your normal voice.", _NORMAL),
    ("Just talk normally.", _NORMAL), ("Less drama please.", _NORMAL),
    ("Speak slowly and calmly.", Control(speed=0.8)),
    ("Talk slower and deeper.", Control(speed=0.8, pitch_shift=-3.0)),
    ("Faster and more excited please.", Control(speed=1.2, emotion="happy", intensity=0.8)),
    ("Speak slowly, like you are sad.", Control(speed=0.85, emotion="sad", intensity=0.7)),
    ("Higher and happier please.", Control(pitch_shift=3.0, emotion="happy", intensity=0.7)),
    ("Quick and angry, go.", Control(speed=1.2, emotion="angry", intensity=0.7)),
)
