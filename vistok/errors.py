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


class DamagedShard(DatasetError):
    """A shard of a dataset is missing, truncated, foreign or corrupt: the message names the dataset, the shard
    and, for damage inside it, the member (or sample), so that a user with thousands of shards knows which
    file to replace. Raised before any work when a check can see it, else where the reader meets it."""

    def __init__(self, dataset: str, shard: str, detail: str, member: str = ""):
        self.dataset, self.shard, self.detail, self.member = dataset, shard, detail, member
        where = f"shard {shard}, member {member}:" if member else f"shard {shard}"
        super().__init__(f"{dataset}: {where} {detail}")

    def __reduce__(self):  # travels between processes (Ray tasks, loader workers) with its fields
        return (DamagedShard, (self.dataset, self.shard, self.detail, self.member))


class StorageError(VistokError):
    """Object storage refused or failed a request (missing bucket, bad credentials, unreachable endpoint, a
    write that kept failing after its retries). The message never includes credentials."""


class UsageError(VistokError):
    """The caller asked for something inconsistent (bad option combination, unknown name)."""


class Interrupted(VistokError):
    """SIGINT or SIGTERM stopped a command after it saved what it had (a training run's checkpoint); the message
    says how to go on. The CLI exits 130."""


def one_line(exc: BaseException) -> str:
    """The message on a single line (whitespace folded, at most 500 characters; the type name when there is
    no message), for error rows and logs."""
    msg = " ".join(str(exc).split()) or exc.__class__.__name__
    return msg[:500]
