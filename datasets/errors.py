"""Errors raised while finding, verifying and decoding dataset files.

SourceError        a source file is corrupt, truncated, unsafe or not in the expected format
ChecksumError      a file's md5 differs from the published one (a SourceError)
MissingDataError   a file is absent and cannot be downloaded (a FileNotFoundError)
"""


class SourceError(ValueError):
    """A source file is corrupt, truncated, unsafe to extract or not in the expected format."""


class ChecksumError(SourceError):
    """A file's md5 differs from the one published for it."""


class MissingDataError(FileNotFoundError):
    """A source file is not on this machine and could not be downloaded."""
