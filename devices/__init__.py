"""Instrument drivers: plain Python classes, usable with or without a pyroinst server."""
