"""The bottom layer: settings and server clients that every other package shares.

It imports nothing of the project's own, so ``schemas``, ``streams``, ``sinks``, ``api`` and
the ``fleetstream`` CLI above them can all depend on it without a cycle.
"""
