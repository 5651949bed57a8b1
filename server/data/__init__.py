"""Data sets: rendering the music21 corpus to piano audio, a user's own folder, the manifest."""
