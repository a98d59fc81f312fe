"""What the commands say when they start and stop: the server's URL a person can
open, and what `python -m stockstream simulate` publishes where, and how much."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from stockstream.server import public_url
from tests.support.redis_server import RedisServer
from tests.support.servers import server_environment
from tests.support.waiting import eventually, free_port

SERVING = re.compile(r"stockstream serving on (\S+)")


@pytest.mark.parametrize(
    "host, port, tls, url",
    [
        ("0.0.0.0", 5000, False, "http://localhost:5000"),
        ("::", 5000, False, "http://localhost:5000"),
        ("", 8080, False, "http://localhost:8080"),
        ("127.0.0.1", 5000, False, "http://127.0.0.1:5000"),
        ("prices.example.com", 5000, True, "https://prices.example.com:5000"),
        ("0.0.0.0", 443, True, "https://localhost"),
        ("::1", 5000, False, "http://[::1]:5000"),
        ("0.0.0.0", 80, False, "http://localhost"),
    ],
)
def test_public_url_is_one_a_person_can_open(host: str, port: int, tls: bool, url: str) -> None:
    assert public_url(host, port, tls) == url


async def served_url(server) -> str:
    found = await eventually(lambda: SERVING.search(server.output()), 20.0, "the start-up line")
    return found.group(1)


@pytest.mark.parametrize("host, shown", [("0.0.0.0", "localhost"), ("127.0.0.1", "127.0.0.1")])
async def test_start_up_line_prints_a_url_that_opens_the_server(servers, host: str, shown: str) -> None:
    """Bound to every interface the line says http://localhost:PORT, otherwise the real host;
    either way the URL it prints answers."""
    server = servers.launch({"LOG_LEVEL": "info"}, args=["--host", host])
    url = await served_url(server)
    assert url == f"http://{shown}:{server.port}", server.output()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        async with http.get(url + "/healthz") as resp:
            assert resp.status == 200


def run_simulate(redis_url: str, workdir: Path, *extra: str, stop_after_start: bool) -> tuple[int, str]:
    argv = [
        sys.executable,
        "-m",
        "stockstream",
        "simulate",
        "--redis-url",
        redis_url,
        "--symbols",
        "AAPL,msft",
        "--rate",
        "20",
        *extra,
    ]
    log_path = workdir / "simulate.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            env=server_environment({"LOG_LEVEL": "info"}),
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        if stop_after_start:
            deadline = time.monotonic() + 20
            while "simulating" not in log_path.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # let it publish for a moment
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, log_path.read_text()


def published_in_redis(redis_server: RedisServer) -> int:
    client = redis_server.client()
    try:
        return sum(int(client.get(f"stock:{s}:seq") or 0) for s in ("AAPL", "MSFT"))
    finally:
        client.close()


@pytest.mark.parametrize("how", ["ctrl-c", "duration"])
def test_simulate_says_what_it_does_and_how_much_it_published(
    redis_server: RedisServer, redis_url: str, tmp_path: Path, how: str
) -> None:
    """At start: the symbols, the rate and the target (the password kept out); at stop
    (Ctrl-C or --duration): how many updates it published, which is what Redis received."""
    extra = () if how == "ctrl-c" else ("--duration", "1")
    code, output = run_simulate(redis_url, tmp_path, *extra, stop_after_start=how == "ctrl-c")
    assert code == 0, output
    lines = output.splitlines()
    start = [line for line in lines if "simulating" in line]
    assert len(start) == 1, output
    assert "2 symbols (AAPL, MSFT)" in start[0] and "20 updates/s" in start[0], start[0]
    assert f"REDIS_URL={redis_url}" in start[0], start[0]
    stop = [line for line in lines if "simulator stopped" in line]
    assert len(stop) == 1, output
    count = int(re.search(r"published (\d+) updates", stop[0]).group(1))
    assert count > 0 and count == published_in_redis(redis_server), (count, output)
    assert ("SIGINT received" if how == "ctrl-c" else "duration reached") in stop[0]
    assert "Traceback" not in output


def test_simulate_names_its_redis_without_the_password(tmp_path: Path) -> None:
    """The start line shows where it publishes, with the password redacted."""
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"  # nothing listens there
    code, output = run_simulate(url, tmp_path, "--duration", "0.5", stop_after_start=False)
    assert code == 0, output
    assert "REDIS_URL=redis://:***@127.0.0.1:" in output and "hunter2-secret" not in output, output
    assert "published 0 updates" in output, output
