"""Faust stream agents: each processing step in its own module, wired to one app in ``streams.app``."""
