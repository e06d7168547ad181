"""The one source of the package version (read by pyproject.toml and `spikeforge --version`)."""

__version__ = "0.2.0"
