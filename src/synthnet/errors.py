"""The one exception type users see: the CLI prints its message on one line and exits non-zero."""


class SynthNetError(Exception):
    """A user-facing error whose message names the file, tensor, key or accepted values at fault."""
