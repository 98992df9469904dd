"""Simulated instruments on pseudo-terminals, for tests, CI and demos without hardware."""
