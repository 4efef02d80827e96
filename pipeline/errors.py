"""Error types that the command-line layer maps to exit codes."""


class InputError(Exception):
    """Bad input from the user (missing file, not a video, unservable size...).

    The CLI prints ``error: <message>`` and exits with status 2.
    """


class BitstreamError(InputError):
    """A ``.bin`` file that is not a valid bitstream of this format."""


class OutputClosed(Exception):
    """The reader of a stream being written (standard output into a pipe) closed it early.

    Not a failure of the tool: the command line ends quietly with status 141 (128 + SIGPIPE),
    as a command killed by SIGPIPE would.
    """
