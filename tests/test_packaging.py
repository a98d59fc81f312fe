"""Installing from a checkout: `pip install .` gives a `stockstream` command (the same
as `python -m stockstream`) whose package carries the demo page and the benchmark's
Node.js reference, and the version comes from one place."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import stockstream
from tests.support.servers import REPO_ROOT, server_environment
from tests.support.waiting import free_port

COMMANDS = ("serve", "publish", "simulate", "kafka-bridge", "token", "bench")
# What a checkout holds that is not part of the package or its build.
NOT_SHIPPED = shutil.ignore_patterns(
    ".git", "node_modules", "__pycache__", ".pytest_cache", "build", "dist", "*.egg-info", ".venv", "tests", ".env"
)


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, (
        f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def outside_environment() -> dict[str, str]:
    """An environment in which only an installed copy can be imported."""
    env = server_environment()
    env.pop("PYTHONPATH", None)
    return env


def test_python_m_stockstream_prints_the_package_version() -> None:
    """`python -m stockstream --version` prints the package's version."""
    result = run([sys.executable, "-m", "stockstream", "--version"], REPO_ROOT, server_environment())
    assert result.stdout.strip() == f"stockstream {stockstream.__version__}"


@pytest.mark.slow
def test_pip_install_gives_the_stockstream_command_and_its_files(tmp_path: Path) -> None:
    """`pip install .` of a copy of the checkout into a fresh virtual environment: the
    installed `stockstream` command prints the version and the command list, the
    installed package holds the demo page's files and the Node.js reference (without
    node_modules), and a server started by the command serves them from there."""
    source = tmp_path / "checkout"
    shutil.copytree(REPO_ROOT, source, ignore=NOT_SHIPPED)
    # As on a machine where the benchmark has run: its npm packages must not be shipped.
    installed_modules = source / "stockstream/bench/reference/node_modules/express/lib"
    installed_modules.mkdir(parents=True)
    (installed_modules / "express.js").write_text("module.exports = {};\n")
    (installed_modules.parent / "package.json").write_text("{}\n")
    venv = tmp_path / "venv"
    env = outside_environment()
    # System site-packages: the runtime dependencies are already installed there, so
    # pip checks them against the package's metadata instead of downloading them.
    run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path, env)
    python, command = venv / "bin" / "python", venv / "bin" / "stockstream"
    run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input", str(source)],
        tmp_path,
        env,
        timeout=480,
    )
    shutil.rmtree(source)  # nothing below may come from the copy either

    version = run([str(command), "--version"], tmp_path, env).stdout.strip()
    assert version == f"stockstream {stockstream.__version__}"
    usage = run([str(command), "--help"], tmp_path, env).stdout
    assert usage.startswith("usage: stockstream")
    for name in COMMANDS:
        assert name in usage, name

    located = run([str(python), "-c", "import stockstream; print(stockstream.__file__)"], tmp_path, env)
    package = Path(located.stdout.strip()).parent
    assert package.is_relative_to(venv), f"imported from {package}, not the installed copy"
    for name in (
        "index.html",
        "app.js",
        "chart.js",
        "style.css",
        "favicon.svg",
        "vendor/lightweight-charts.standalone.production.js",
        "vendor/lightweight-charts.LICENSE.txt",
    ):
        assert (package / "static" / name).read_bytes() == (REPO_ROOT / "stockstream/static" / name).read_bytes()
    reference = package / "bench" / "reference"
    for name in ("server.js", "package.json", "package-lock.json"):
        assert (reference / name).is_file(), name
    assert not (reference / "node_modules").exists()

    port = free_port()
    server = subprocess.Popen(
        [str(command), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        page = fetch_when_up(f"http://127.0.0.1:{port}/", server)
        assert page == (package / "static" / "index.html").read_bytes()
        script = fetch_when_up(f"http://127.0.0.1:{port}/static/app.js", server)
        assert script == (package / "static" / "app.js").read_bytes()
    finally:
        server.terminate()
        server.wait(timeout=20)


def fetch_when_up(url: str, server: subprocess.Popen, timeout: float = 30) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except (urllib.error.URLError, OSError):
            if server.poll() is not None:
                raise AssertionError(
                    f"the installed server exited {server.returncode}: "
                    f"{server.stderr.read().decode(errors='replace')[-2000:]}"
                ) from None
            if time.monotonic() > deadline:
                raise AssertionError(f"the installed server did not answer {url} within {timeout}s") from None
            time.sleep(0.1)
