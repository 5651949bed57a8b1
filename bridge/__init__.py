"""Continuo's bridge: OSC, MIDI, tempo clocks and playback between a DAW or patch and the server."""
