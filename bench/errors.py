"""The one error a benchmark step raises when it cannot measure honestly."""


class BenchError(Exception):
    """A scenario could not be set up, verified or measured; the message says why."""
