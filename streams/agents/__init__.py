"""Built-in agents written on the SDK (``streams.sdk``): the worker lists them in ``streams.worker``."""
