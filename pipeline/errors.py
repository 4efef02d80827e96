"""Error types that the command-line layer maps to exit codes."""


class InputError(Exception):
    """Bad input from the user (missing file, not a video, unservable size...).

    The CLI prints ``error: <message>`` and exits with status 2.
    """


class BitstreamError(InputError):
    """A ``.bin`` file that is not a valid bitstream of this format."""
