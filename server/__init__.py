"""Continuo's server side: audio, tokenizers, the AudioLM stages, training and serving."""

__version__ = "0.1.0"
