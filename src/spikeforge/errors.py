"""Error types. Every user-facing failure is one of these, with a message that names the problem and the fix.

The CLI catches :class:`SpikeforgeError` and prints only its message (no traceback)."""


class SpikeforgeError(Exception):
    """Base class for errors whose message is meant for the user."""


class ConfigError(SpikeforgeError, ValueError):
    """A recipe, CLI option or constructor argument has a bad value or an unknown key."""


class DataError(SpikeforgeError):
    """A dataset is missing, corrupt, or in an unexpected format."""


class CheckpointError(SpikeforgeError):
    """A checkpoint is missing, corrupt, or does not match the model."""


class ConversionError(SpikeforgeError):
    """A network cannot be converted faithfully into a spiking network."""


class ShapeError(SpikeforgeError, ValueError):
    """A tensor has the wrong shape for the layer or model it was given to."""
