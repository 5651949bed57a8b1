"""Objective metrics: codec reconstruction now, continuation quality later."""
