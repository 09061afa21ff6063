"""The few error types vistok raises. Messages name the thing that is wrong and, where there is one, the fix."""


class VistokError(Exception):
    """Base class: the CLI turns these into a one-line message and a non-zero exit."""


class InputError(VistokError):
    """A source file cannot be turned into tokens (undecodable, truncated, too large, wrong kind).

    The pipeline records these in `errors.jsonl` and goes on with the next input.
    """


class CodecError(VistokError):
    """A token stream or codec configuration is invalid (bad grammar, unknown codec, out-of-range value)."""


class DatasetError(VistokError):
    """A dataset folder is missing, incomplete, foreign, or does not match the requested configuration."""


class StorageError(VistokError):
    """Object storage refused or failed a request (missing bucket, bad credentials, unreachable endpoint, a
    write that kept failing after its retries). The message never includes credentials."""


class UsageError(VistokError):
    """The caller asked for something inconsistent (bad option combination, unknown name)."""


def one_line(exc: BaseException) -> str:
    """The message on a single line (whitespace folded, at most 500 characters; the type name when there is
    no message), for error rows and logs."""
    msg = " ".join(str(exc).split()) or exc.__class__.__name__
    return msg[:500]
