"""The project's error types: one base class, one subclass per kind of bad input.

Every message names what was wrong (the file, the key, the value) so a musician reading it on
stage, or a client receiving it over the wire, knows what to fix.
"""

from __future__ import annotations


class ContinuoError(Exception):
    """Base class of every error Continuo raises on purpose."""


class AudioError(ContinuoError):
    """Audio that cannot be used: missing, empty, corrupt, silent, NaN/inf, too long, unknown."""


class ConfigError(ContinuoError):
    """A config, preset or command-line value that is out of range or inconsistent."""


class CheckpointError(ContinuoError):
    """A model folder or checkpoint that is missing, corrupt or does not match its config."""


class DataError(ContinuoError):
    """A data set folder or manifest that cannot be used."""
