"""The dashboard's pure parts: the chart's arithmetic, the listen rules, the login token, the
one-line message without the extra, and the CLI's wiring."""

from __future__ import annotations

import subprocess
import sys

import pytest

from queuectl import errors
from queuectl.web import chart, serve
from queuectl.web.auth import Sessions, csrf_ok


def test_throughput_counts_per_minute_and_ignores_drops() -> None:
    t = chart.Throughput()
    t.sample(1000.0, [{"name": "a", "completed": 10, "dead": 1}])
    t.sample(1030.0, [{"name": "a", "completed": 14, "dead": 2}, {"name": "new", "completed": 3}])
    t.sample(1090.0, [{"name": "a", "completed": 2, "dead": 0}])  # retention deleted ended jobs
    counts = t.per_minute(1090.0)
    assert len(counts) == chart.BUCKETS and sum(counts) == 5
    assert counts[-2] == 5 and counts[-1] == 0
    assert t.covered_s(1090.0) == 90.0
    bars, top = chart.bars(counts)
    assert top == 5 and bars[-2].h == chart.HEIGHT and bars[0].h == 0


def test_throughput_starts_from_the_stores_hour_and_samples_from_then_on() -> None:
    t = chart.Throughput()
    assert not t.seeded
    store_says = [0] * chart.BUCKETS
    store_says[-1], store_says[-3], store_says[0] = 7, 4, 2  # the minute just ended, 3 ago, 60 ago
    t.seed(5000.0, store_says)
    t.sample(5000.0, [{"name": "a", "completed": 100}])
    t.sample(5020.0, [{"name": "a", "completed": 103}])
    counts = t.per_minute(5020.0)  # 20 s later: each seeded minute falls in the bucket of its end
    assert t.seeded and t.covered_s(5020.0) == chart.WINDOW_S
    assert counts[-1] == 3 + 7  # sampled since, and the store's minute that ended at the seed
    assert counts[-3] == 4 and counts[0] == 2 and sum(counts) == 3 + 7 + 4 + 2
    assert sum(t.per_minute(5000.0 + 70.0)) == 3 + 7 + 4  # later, the oldest seeded minute has left the hour
    t.seed(5000.0, None)  # a daemon without job.ended_per_minute: the samples alone
    assert t.per_minute(5020.0)[-1] == 3 and sum(t.per_minute(5020.0)) == 3 and t.covered_s(5020.0) == 20.0


@pytest.mark.parametrize(("listen", "allow", "tls", "ok"), [
    ("127.0.0.1:8765", False, False, True),
    ("localhost:0", False, False, True),
    ("[::1]:8765", False, False, True),
    ("0.0.0.0:8765", False, False, False),
    ("0.0.0.0:8765", True, False, False),
    ("0.0.0.0:8765", True, True, True),
    ("8765", False, False, False),
    ("127.0.0.1:99999", False, False, False),
])
def test_a_non_loopback_listen_needs_the_flag_and_tls(listen: str, allow: bool, tls: bool, ok: bool) -> None:
    options = serve.WebOptions(listen, allow, "c.pem" if tls else None, "k.pem" if tls else None)
    if ok:
        assert serve.check_listen(options)[1] in (0, 8765)
    else:
        with pytest.raises(errors.WebListenRefused):
            serve.check_listen(options)


def test_login_token_sources(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUEUECTL_WEB_TOKEN", raising=False)
    made, fresh = serve.login_token(serve.WebOptions())
    assert fresh and len(made) >= 24
    monkeypatch.setenv("QUEUECTL_WEB_TOKEN", "from-env")
    assert serve.login_token(serve.WebOptions()) == ("from-env", False)
    path = f"{tmp_path}/token"
    with open(path, "w") as fh:
        fh.write("from-file\n")
    assert serve.login_token(serve.WebOptions(web_token_file=path)) == ("from-file", False)
    with pytest.raises(errors.AuthenticationRequired):
        serve.login_token(serve.WebOptions(web_token_file=f"{tmp_path}/missing"))


def test_sessions_and_csrf() -> None:
    now = [0.0]
    sessions = Sessions("right", clock=lambda: now[0])
    assert sessions.login("wrong") is None and sessions.login("") is None
    s = sessions.login("right")
    assert s is not None and sessions.get(s.id) is s
    assert csrf_ok(s, s.csrf) and not csrf_ok(s, "") and not csrf_ok(s, "x")
    now[0] += 13 * 3600
    assert sessions.get(s.id) is None


def test_without_the_extra_queuectl_web_says_how_to_install_it() -> None:
    # A fresh interpreter in which starlette cannot be found.
    code = ("import importlib.util, sys; real = importlib.util.find_spec\n"
            "importlib.util.find_spec = lambda n, *a: None if n == 'starlette' else real(n, *a)\n"
            "sys.argv = ['queuectl', 'web']\nfrom queuectl.cli import main\nmain()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == ["error: The web dashboard needs its extra: pip install 'queuectl[web]'"]


def test_an_older_daemon_without_newest_first_is_listed_oldest_first() -> None:
    import asyncio

    from starlette.datastructures import QueryParams

    from queuectl.web import pages

    sent: list[dict[str, object]] = []

    class OldDaemon:
        async def call(self, method: str, params: dict[str, object] | None = None) -> object:
            sent.append({"method": method, **(params or {})})
            if (params or {}).get("newest_first") is not None:
                raise errors.InvalidParams(detail="newest_first: Extra inputs are not permitted")
            if method == "queue.list":
                return {"queues": []}
            return {"jobs": [{"id": "a", "command": "x"}], "next_cursor": None}

    ctx = asyncio.run(pages.jobs(OldDaemon(), QueryParams(""), chart.Throughput()))  # type: ignore[arg-type]
    assert [j["id"] for j in ctx["jobs"]] == ["a"] and ctx["filters"]["order"] == "oldest"
    assert [s.get("newest_first") for s in sent if s["method"] == "job.list"] == [True, None]
