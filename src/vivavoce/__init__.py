"""vivavoce: a true speech-to-speech dialogue system over a frozen text LLM."""

__version__ = "0.1.0"
