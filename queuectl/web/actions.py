"""What each button and form does: one function per action, from a form to one daemon request.

Each returns the message to show and where to go next; the daemon's errors (QueuectlError)
are left to the caller, which shows their message. Values are checked here as the CLI checks
its flags (durations, numbers), with one-line InvalidValue errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from queuectl import errors, ids, times
from queuectl.web.daemon import Daemon
from queuectl.web.forms import Form

Action = Callable[[Daemon, Form, dict[str, str]], Awaitable[tuple[str, str]]]


def job_url(job_id: str) -> str:
    """The page of a job."""
    return f"/jobs/{quote(job_id, safe='')}"


def _int(form: Form, name: str, label: str) -> int | None:
    text = form.get(name)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise errors.InvalidValue(key=label, detail=f"{text!r} is not a whole number") from None


def _labels(form: Form) -> list[str]:
    return [part.strip() for part in form.get("labels").split(",") if part.strip()]


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


async def enqueue(daemon: Daemon, form: Form, path: dict[str, str]) -> tuple[str, str]:
    """A new job from the enqueue form. It runs in the daemon's environment (the browser has
    none to capture), in `cwd` or the daemon's state dir."""
    command = form.raw("command").strip("\r\n")
    if not command.strip():
        raise errors.InvalidValue(key="command", detail="give the shell command to run")
    fields = _present({
        "command": command, "id": form.get("id") or ids.new_stem(), "queue": form.get("queue") or None,
        "priority": _int(form, "priority", "priority"), "max_retries": _int(form, "max_retries", "max retries"),
        "timeout_s": times.duration_flag("timeout", form.get("timeout") or None, positive=True),
        "delay_s": times.duration_flag("delay", form.get("delay") or None),
        "labels": _labels(form) or None, "cwd": form.get("cwd") or None, "hold": form.flag("hold") or None,
    })
    job = await daemon.call("job.enqueue", fields)
    return f"enqueued {job['id']}", job_url(job["id"])


def _job(method: str, verb: str, *, ids_list: bool = False) -> Action:
    async def act(daemon: Daemon, form: Form, path: dict[str, str]) -> tuple[str, str]:
        job_id = path["id"]
        await daemon.call(method, {"ids": [job_id]} if ids_list else {"id": job_id})
        return f"{verb} {job_id}", job_url(job_id)
    act.__doc__ = f"{method} of the job in the path."
    return act


async def delete(daemon: Daemon, form: Form, path: dict[str, str]) -> tuple[str, str]:
    """job.delete: the job, its history and output go (not while it runs)."""
    await daemon.call("job.delete", {"id": path["id"]})
    return f"deleted {path['id']}", "/jobs"


async def edit(daemon: Daemon, form: Form, path: dict[str, str]) -> tuple[str, str]:
    """job.edit of a waiting job from its edit form: command, priority, queue, max retries,
    labels; a delay reschedules it; an empty timeout goes back to the config's."""
    job_id = path["id"]
    timeout = times.duration_flag("timeout", form.get("timeout") or None, positive=True)
    fields = _present({
        "command": form.raw("command").strip("\r\n") or None, "priority": _int(form, "priority", "priority"),
        "queue": form.get("queue") or None, "max_retries": _int(form, "max_retries", "max retries"),
        "timeout_s": timeout, "clear_timeout": True if timeout is None and form.flag("had_timeout") else None,
        "delay_s": times.duration_flag("delay", form.get("delay") or None), "labels": _labels(form),
    })
    await daemon.call("job.edit", {"id": job_id, **fields})
    return f"edited {job_id}", job_url(job_id)


def _dead_filter(form: Form) -> dict[str, Any]:
    return _present({"outcome": form.get("outcome") or None, "queue": form.get("queue") or None,
                     "label": form.get("label") or None})


async def dlq_retry_all(daemon: Daemon, form: Form, path: dict[str, str]) -> tuple[str, str]:
    """dlq.retry_all of every dead job the filter matches (all of them without one)."""
    answer = await daemon.call("dlq.retry_all", {"filter": _dead_filter(form)})
    return f"moved {answer['count']} dead job(s) back to pending", "/dlq"


async def dlq_purge(daemon: Daemon, form: Form, path: dict[str, str]) -> tuple[str, str]:
    """dlq.purge of the ids given, or of every dead job the filter matches: that one needs the
    `confirm` box ticked, as the CLI needs --all."""
    chosen = form.all("id")
    if chosen:
        answer = await daemon.call("dlq.purge", {"ids": chosen})
    else:
        if not form.flag("confirm"):
            raise errors.InvalidValue(key="purge", detail="tick the box to confirm; nothing was purged")
        wanted = _dead_filter(form)
        answer = await daemon.call("dlq.purge", {"filter": wanted} if wanted else {"all": True})
    return f"purged {answer['count']} dead job(s)", "/dlq"


async def dlq_retry(daemon: Daemon, form: Form, path: dict[str, str]) -> tuple[str, str]:
    """dlq.retry of the ids given (all or none)."""
    chosen = form.all("id")
    if not chosen:
        raise errors.InvalidValue(key="retry", detail="say which dead jobs; nothing was retried")
    answer = await daemon.call("dlq.retry", {"ids": chosen})
    return f"moved {answer['count']} dead job(s) back to pending", "/dlq"


async def queue_add(daemon: Daemon, form: Form, path: dict[str, str]) -> tuple[str, str]:
    """queue.add, with a limit or none."""
    name = form.get("name")
    await daemon.call("queue.add", _present({"name": name, "concurrency": _int(form, "concurrency", "concurrency")}))
    return f"added queue {name}", "/queues"


def _queue(method: str, verb: str) -> Action:
    async def act(daemon: Daemon, form: Form, path: dict[str, str]) -> tuple[str, str]:
        await daemon.call(method, {"names": [path["name"]]})
        return f"{verb} queue {path['name']}", "/queues"
    act.__doc__ = f"{method} of the queue in the path."
    return act


async def queue_limit(daemon: Daemon, form: Form, path: dict[str, str]) -> tuple[str, str]:
    """queue.set: a new concurrency limit, or none when the field is empty."""
    limit = _int(form, "concurrency", "concurrency")
    await daemon.call("queue.set", {"name": path["name"], **({"concurrency": limit} if limit is not None
                                                             else {"unlimited": True})})
    return f"queue {path['name']}: limit {limit if limit is not None else 'none'}", "/queues"


def _cron(method: str, verb: str) -> Action:
    async def act(daemon: Daemon, form: Form, path: dict[str, str]) -> tuple[str, str]:
        answer = await daemon.call(method, {"name": path["name"]})
        if method == "cron.run":
            return f"schedule {path['name']} enqueued {answer['id']}", job_url(answer["id"])
        return f"{verb} schedule {path['name']}", "/cron"
    act.__doc__ = f"{method} of the schedule in the path."
    return act


#: (path, action): every POST the dashboard serves but the login and logout.
ACTIONS: list[tuple[str, Action]] = [
    ("/jobs/enqueue", enqueue),
    ("/jobs/{id}/cancel", _job("job.cancel", "canceled")),
    ("/jobs/{id}/retry", _job("dlq.retry", "moved back to pending:", ids_list=True)),
    ("/jobs/{id}/restart", _job("job.restart", "restarted", ids_list=True)),
    ("/jobs/{id}/hold", _job("job.hold", "held", ids_list=True)),
    ("/jobs/{id}/release", _job("job.release", "released", ids_list=True)),
    ("/jobs/{id}/edit", edit),
    ("/jobs/{id}/delete", delete),
    ("/dlq/retry", dlq_retry),
    ("/dlq/retry-all", dlq_retry_all),
    ("/dlq/purge", dlq_purge),
    ("/queues/add", queue_add),
    ("/queues/{name}/pause", _queue("queue.pause", "paused")),
    ("/queues/{name}/resume", _queue("queue.resume", "resumed")),
    ("/queues/{name}/limit", queue_limit),
    ("/cron/{name}/run", _cron("cron.run", "ran")),
    ("/cron/{name}/pause", _cron("cron.pause", "paused")),
    ("/cron/{name}/resume", _cron("cron.resume", "resumed")),
]
