"""Starting, pinning, measuring and stopping the processes a benchmark needs.

Servers run in their own process group so Ctrl-C in the terminal
reaches only the benchmark, which then stops them in order; pinning is done
with `taskset` at exec time so every thread of the server (Node's included)
stays on the server's cores.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional

import psutil

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE_SOURCE = Path(__file__).resolve().parent / "reference"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
NPM_INSTALL_TIMEOUT_S = 600.0


class BenchSetupError(RuntimeError):
    """Something the benchmark needs could not be started; the message says what."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def parse_cpu_list(text: str) -> list[int]:
    """ "0", "1,3", "2-5" -> sorted CPU numbers."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return sorted(cpus)


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left."""
        if self.popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)  # children the server may have left behind
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)  # it leads its own process group: the group id is its pid
        except (ProcessLookupError, PermissionError):
            pass


def spawn(
    name: str,
    argv: list[str],
    log_dir: Path,
    cpus: Optional[list[int]] = None,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[Path] = None,
) -> ManagedProcess:
    if cpus:
        if shutil.which("taskset"):
            argv = ["taskset", "-c", ",".join(map(str, cpus))] + argv
            preexec = None
        else:
            pinned = set(cpus)
            preexec = lambda: os.sched_setaffinity(0, pinned)  # noqa: E731 - runs in the child before exec
    else:
        preexec = None
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=str(cwd or log_dir),
            start_new_session=True,
            preexec_fn=preexec,
        )
    return ManagedProcess(name, popen, log_path)


def wait_http_ready(proc: ManagedProcess, url: str, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchSetupError(f"{proc.name} exited with code {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}"
        except (OSError, urllib.error.URLError) as exc:
            last_error = str(exc)
        time.sleep(0.1)
    raise BenchSetupError(f"{proc.name} not ready at {url} after {timeout:.0f}s ({last_error}):\n{proc.log_tail()}")


def start_redis(log_dir: Path, cpus: Optional[list[int]]) -> tuple[ManagedProcess, str]:
    """A private, throwaway redis-server (no persistence) on a free port."""
    if shutil.which("redis-server") is None:
        raise BenchSetupError("redis-server is not on PATH; install it or pass --redis-url")
    port = free_port()
    proc = spawn(
        "redis",
        _redis_argv(port, log_dir),
        log_dir,
        cpus,
    )
    try:
        _wait_redis(proc, port)
    except BenchSetupError:
        proc.stop()
        raise
    return proc, f"redis://127.0.0.1:{port}/0"


def _redis_argv(port: int, directory: Path) -> list[str]:
    """A throwaway redis-server on loopback: nothing kept on disk."""
    return [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        "--dir",
        str(directory),
    ]


def start_redis_cluster(
    log_dir: Path, cpus: Optional[list[int]], masters: int = 3
) -> tuple[list[ManagedProcess], str, list[str]]:
    """A private, throwaway Redis Cluster of `masters` masters (no replicas: the
    benchmark measures traffic, not failover). Returns the processes, a node's
    URL and every master's URL."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        raise BenchSetupError("redis-server and redis-cli must be on PATH for --redis-cluster")
    import subprocess

    procs, ports = [], []
    for index in range(masters):
        port = free_port()
        node_dir = log_dir / f"cluster-{index}"
        node_dir.mkdir(parents=True, exist_ok=True)
        procs.append(
            spawn(
                f"redis-{index}",
                [
                    *_redis_argv(port, node_dir),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    str(free_port()),
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                ],
                log_dir,
                cpus,
            )
        )
        ports.append(port)
    try:
        for proc, port in zip(procs, ports):
            _wait_redis(proc, port)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        import redis

        deadline = time.monotonic() + 15
        while True:
            client = redis.Redis(host="127.0.0.1", port=ports[0], socket_timeout=1)
            try:
                if b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"):
                    break
            finally:
                client.close()
            if time.monotonic() > deadline:
                raise BenchSetupError("the Redis Cluster did not become healthy")
            time.sleep(0.1)
    except Exception:
        for proc in procs:
            proc.stop()
        raise
    urls = [f"redis://127.0.0.1:{p}/0" for p in ports]
    return procs, urls[0], urls


def _wait_redis(proc: ManagedProcess, port: int) -> None:
    """Until the redis-server on `port` answers (BenchSetupError if it never does)."""
    import redis  # here, not at import time: only this path needs the sync client

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + 15
    try:
        while True:
            if not proc.alive():
                raise BenchSetupError(f"redis-server exited:\n{proc.log_tail()}")
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise BenchSetupError(f"redis-server did not answer on port {port}:\n{proc.log_tail()}") from None
                time.sleep(0.05)
    finally:
        client.close()


def start_stockstream(
    log_dir: Path,
    redis_url: str,
    cpus: Optional[list[int]],
    extra_env: Mapping[str, str],
    name: str = "stockstream",
    cluster: bool = False,
) -> tuple[ManagedProcess, int]:
    port = free_port()
    env = dict(os.environ)
    # Quiet by default: per-connection log lines would cost the server CPU the Node reference does not spend.
    env.setdefault("LOG_LEVEL", "warning")
    env.update(extra_env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    argv = [
        sys.executable,
        "-m",
        "stockstream",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--redis-url",
        redis_url,
    ] + (["--redis-cluster"] if cluster else [])
    return _ready(spawn(name, argv, log_dir, cpus, env), port), port


def _ready(proc: ManagedProcess, port: int) -> ManagedProcess:
    """Wait until the server answers /readyz; stop it if it never does."""
    try:
        wait_http_ready(proc, f"http://127.0.0.1:{port}/readyz")
    except BaseException:
        proc.stop()
        raise
    return proc


def reference_cache_dir() -> Path:
    configured = os.environ.get("STOCKSTREAM_BENCH_CACHE")
    base = Path(configured) if configured else Path.home() / ".cache" / "stockstream" / "bench-reference"
    return base


def ensure_reference(cache_dir: Optional[Path] = None, log: Optional[Callable[[str], None]] = None) -> Path:
    """Copy the reference server into a cache dir and install its npm packages there.

    Installs once, and again whenever package.json or the lock file changes;
    `npm ci` from the lock file keeps every machine on the same versions.
    """
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise BenchSetupError(f"{tool} is not on PATH: the Node.js reference needs Node 18+ and npm")
    target = cache_dir or reference_cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    manifests = [f for f in ("package.json", "package-lock.json") if (REFERENCE_SOURCE / f).exists()]
    stamp = hashlib.sha256(b"".join((REFERENCE_SOURCE / f).read_bytes() for f in manifests)).hexdigest()
    stamp_file = target / ".installed"
    installed = stamp_file.read_text().strip() if stamp_file.exists() else ""
    if installed != stamp or not (target / "node_modules").is_dir():
        if log:
            log(f"installing the Node.js reference's packages into {target} (once)")
        stamp_file.unlink(missing_ok=True)
        for name in manifests:
            shutil.copyfile(REFERENCE_SOURCE / name, target / name)
        command = "ci" if "package-lock.json" in manifests else "install"
        try:
            done = subprocess.run(
                ["npm", command, "--no-audit", "--no-fund", "--omit=dev"],
                cwd=target,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=NPM_INSTALL_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchSetupError(f"npm {command} of the reference server timed out") from exc
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).decode(errors="replace").splitlines()[-15:]
            raise BenchSetupError(f"npm {command} of the reference server failed:\n" + "\n".join(tail))
        stamp_file.write_text(stamp + "\n")
    shutil.copyfile(REFERENCE_SOURCE / "server.js", target / "server.js")
    return target


def start_reference(
    log_dir: Path,
    redis_url: str,
    cpus: Optional[list[int]],
    log: Optional[Callable[[str], None]] = None,
    name: str = "node-reference",
) -> tuple[ManagedProcess, int]:
    directory = ensure_reference(log=log)
    port = free_port()
    env = dict(os.environ, PORT=str(port), HOST="127.0.0.1", REDIS_URL=redis_url, NODE_ENV="production")
    return _ready(spawn(name, ["node", "server.js"], log_dir, cpus, env, cwd=directory), port), port


@dataclass
class CpuSample:
    at: float
    per_pid: dict[int, float] = field(default_factory=dict)  # CPU seconds, children included

    @property
    def total(self) -> float:
        return sum(self.per_pid.values())


class ProcessMeter:
    """CPU time and memory of some processes, via psutil.

    `children=True` adds each process's descendants (a server may fork
    workers); it must be False for the benchmark's own process, whose children
    are the workers and the servers it started.
    """

    def __init__(self, pids: list[int], children: bool = True) -> None:
        self._children = children
        self._procs: dict[int, psutil.Process] = {}
        for pid in pids:
            try:
                self._procs[pid] = psutil.Process(pid)
            except psutil.Error:
                pass

    @property
    def pids(self) -> list[int]:
        return list(self._procs)

    def _family(self, proc: psutil.Process) -> list[psutil.Process]:
        if not self._children:
            return [proc]
        try:
            return [proc] + proc.children(recursive=True)
        except psutil.Error:
            return [proc]

    def sample(self) -> CpuSample:
        sample = CpuSample(time.monotonic())
        for pid, proc in self._procs.items():
            seconds = 0.0
            for member in self._family(proc):
                try:
                    times = member.cpu_times()
                    seconds += times.user + times.system
                except psutil.Error:
                    pass
            sample.per_pid[pid] = seconds
        return sample

    def rss_bytes(self) -> Optional[int]:
        total = 0
        found = False
        for proc in self._procs.values():
            for member in self._family(proc):
                try:
                    total += member.memory_info().rss
                    found = True
                except psutil.Error:
                    pass
        return total if found else None


def utilisation(before: CpuSample, after: CpuSample) -> dict[int, float]:
    """Fraction of one core each process used between two samples."""
    elapsed = max(after.at - before.at, 1e-9)
    return {pid: (after.per_pid.get(pid, 0.0) - before.per_pid.get(pid, 0.0)) / elapsed for pid in after.per_pid}


def cores_busy_seconds(cpus: list[int]) -> float:
    """CPU seconds the given cores spent busy so far, whoever ran on them."""
    per_cpu = psutil.cpu_times(percpu=True)
    total = 0.0
    for cpu in cpus:
        if cpu < len(per_cpu):
            t = per_cpu[cpu]
            total += (
                t.user
                + t.nice
                + t.system
                + getattr(t, "irq", 0.0)
                + getattr(t, "softirq", 0.0)
                + getattr(t, "steal", 0.0)
            )
    return total
