"""SynthNet: synthesize trained neural-network weights from their random init."""

__version__ = "0.1.0"
