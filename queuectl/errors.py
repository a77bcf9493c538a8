"""Every failure a user can act on, as one exception class with a stable wire code.

The daemon raises these; the server sends `code` and `message` as a JSON-RPC error; the client
turns the code back into the same class. The docstring is the default message and says what to
do next. This module imports nothing heavy: the client's fast path loads it.
"""

from __future__ import annotations


class QueuectlError(Exception):
    """Something went wrong in queuectl."""

    code: int = 1000
    #: Process exit status the CLI uses for this error.
    exit_status: int = 1
    #: Facts for programs, sent as the JSON-RPC error's `data` beside its type (ProtocolMismatch:
    #: the daemon's `protocol_version` and `version`); None: none.
    data: dict[str, object] | None = None

    def __init__(self, message: str | None = None, **fields: object) -> None:
        template = message if message is not None else (self.__doc__ or "").strip()
        self.fields = fields
        try:
            self.message = template.format(**fields) if fields else template
        except (KeyError, IndexError, ValueError):
            self.message = template
        super().__init__(self.message)


# -- JSON-RPC 2.0's own errors -------------------------------------------------------------------


class ParseError(QueuectlError):
    """The request is not valid JSON (or not UTF-8). Send one JSON object per line."""

    code = -32700


class InvalidRequest(QueuectlError):
    """The request is not a JSON-RPC 2.0 request object."""

    code = -32600


class MethodNotFound(QueuectlError):
    """Unknown method {method!r}. See the README's protocol section for the method list."""

    code = -32601


class InvalidParams(QueuectlError):
    """Invalid parameters: {detail}"""

    code = -32602


class InternalError(QueuectlError):
    """queuectld hit an internal error; it is still running. Its log has the details."""

    code = -32603


# -- queuectl's own errors ---------------------------------------------------------------------


class DaemonUnreachable(QueuectlError):
    """queuectld is not running at {address}. Start it with `queuectld --detach`."""

    code = 1001


class JobNotFound(QueuectlError):
    """No job with id {job_id!r}. `queuectl list` shows the jobs there are."""

    code = 1002


class DuplicateJob(QueuectlError):
    """A job with id {job_id!r} already exists. Use --replace to overwrite it, or pick another id."""

    code = 1003


class InvalidState(QueuectlError):
    """Job {job_id!r} is {state}: {action} is not possible in that state."""

    code = 1004


class UnknownConfigKey(QueuectlError):
    """Unknown config key {key!r}. Valid keys: {valid}."""

    code = 1005


class ConfigFileInvalid(QueuectlError):
    """Config file {path}: {detail}"""

    code = 1040  #: never sent: queuectld says it and exits before it serves
    exit_status = 2


class InvalidValue(QueuectlError):
    """Invalid value for {key}: {detail}"""

    code = 1006


class StoreBusy(QueuectlError):
    """The job store is locked by another process; nothing was changed. Try again in a moment."""

    code = 1007


class PermissionDenied(QueuectlError):
    """Permission denied: {detail}"""

    code = 1008


class AuthenticationRequired(QueuectlError):
    """This connection must authenticate first: send `auth.login` with the daemon's token."""

    code = 1009


class ProtocolMismatch(QueuectlError):
    """Protocol version mismatch: {detail}. Upgrade queuectl and queuectld to the same version."""

    code = 1010


class RequestTooLarge(QueuectlError):
    """The request is larger than {limit} bytes; the connection is closed. Split it (enqueue --file does)."""

    code = 1011


class WaitTimeout(QueuectlError):
    """Timed out after {seconds}s; {pending} job(s) not finished yet."""

    code = 1012
    exit_status = 2


class DaemonAlreadyRunning(QueuectlError):
    """queuectld is already running (pid {pid}) on {where}. Stop it with `queuectl daemon stop`."""

    code = 1013


class UnsafePath(QueuectlError):
    """Refusing to use {path}: {detail}"""

    code = 1014


class StoreUnavailable(QueuectlError):
    """The job store failed: {detail}. Check the daemon log and the database."""

    code = 1016


class StoreDamaged(QueuectlError):
    """The job store is damaged ({detail}); this request was not served. The daemon keeps serving what it can: stop it, restore the database from its backup, or start afresh with `queuectld --new-store`."""

    code = 1019


class DiskFull(QueuectlError):
    """The disk holding {path} is full; nothing was stored. Free some space and try again."""

    code = 1020


class OutcomeUnknown(QueuectlError):
    """The store lost its answer to a commit ({detail}): the change may or may not have been made. Check with `queuectl show ID` or `queuectl list`; repeating an enqueue with the same id is safe."""

    code = 1021


class StoreRefused(QueuectlError):
    """Refusing to open the job store {path}: {detail}"""

    code = 1022


class TooManyConnections(QueuectlError):
    """queuectld already serves {limit} connections; this one is closed. Try again shortly."""

    code = 1017


class InvalidAddress(QueuectlError, ValueError):
    """Bad daemon address {address!r}: expected a socket path, unix:/path or tcp://HOST:PORT."""

    code = 1018


class QueueNotFound(QueuectlError):
    """No queue named {name!r}. Add it with `queuectl queue add {name}`; `queuectl queue list` shows the queues."""

    code = 1023


class QueueExists(QueuectlError):
    """A queue named {name!r} already exists. Change its limit with `queuectl queue set {name} --concurrency N`."""

    code = 1024


class QueueNotEmpty(QueuectlError):
    """Queue {name!r} still holds {count} unfinished job(s); nothing was removed. Cancel or move them first (`queuectl list --queue {name}`)."""

    code = 1025


class DependencyNotFound(QueuectlError):
    """Job {job_id!r} depends on {dependency!r}, which does not exist; nothing was enqueued. Enqueue it first (or earlier in the same batch)."""

    code = 1026


class DependencyCycle(QueuectlError):
    """Job {job_id!r} cannot run after {dependency!r}: {dependency!r} already waits for {job_id!r}; nothing was changed."""

    code = 1027


class DependencyFailed(QueuectlError):
    """Job {job_id!r} depends on {dependency!r}, which ended {state} and so can never complete; nothing was enqueued. Retry it first (`queuectl dlq retry {dependency}`), or use --after-any."""

    code = 1028


class HandoverFailed(QueuectlError):
    """Could not take over with --replace: {detail}"""

    code = 1029


class RestartFailed(QueuectlError):
    """queuectld was not restarted: {detail}"""

    code = 1030


class CronUnavailable(QueuectlError):
    """Cron schedules need croniter, which this queuectld lacks: pip install 'queuectl[cron]' where queuectld runs, then restart it."""

    code = 1031


class CronNotFound(QueuectlError):
    """No cron schedule named {name!r}. `queuectl cron list` shows the schedules there are."""

    code = 1032


class CronExists(QueuectlError):
    """A cron schedule named {name!r} already exists. Remove it first (`queuectl cron rm {name}`) or pick another name."""

    code = 1033


class WebUnavailable(QueuectlError):
    """The web dashboard needs its extra: pip install 'queuectl[web]'"""

    code = 1034


class WebListenRefused(QueuectlError):
    """queuectl web will not listen on {address}: {detail}"""

    code = 1035


def _all_subclasses(cls: type[QueuectlError]) -> list[type[QueuectlError]]:
    out: list[type[QueuectlError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


#: Wire code -> exception class, used by the client to raise the daemon's error as itself.
ERRORS_BY_CODE: dict[int, type[QueuectlError]] = {c.code: c for c in _all_subclasses(QueuectlError)}


def from_wire(code: int, message: str, data: object = None) -> QueuectlError:
    """Rebuild the exception a daemon sent as a JSON-RPC error object (with its `data`, if any)."""
    cls = ERRORS_BY_CODE.get(code, QueuectlError)
    err = cls(message)
    err.code = code
    if isinstance(data, dict):
        err.data = data
    return err
