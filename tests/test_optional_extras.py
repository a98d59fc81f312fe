"""The command line loads a feature only when its command runs, and a command whose
optional dependency is missing says which extra installs it.

Each test runs the real command line in a fresh interpreter (`python -c`) in which
the named packages cannot be imported, as on a machine where they were never
installed, and reads back which modules were loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import REPO_ROOT, server_environment

COMMANDS = ("serve", "publish", "simulate", "kafka-bridge", "token", "bench")
HEAVY = ("psutil", "aiokafka", "stockstream.bench")

# Makes the packages in argv[1] (comma-separated) not importable, runs the command line
# with the rest of argv, and writes the names of the loaded modules to argv[2].
RUN_WITHOUT = """
import json, sys
blocked = set(filter(None, sys.argv[1].split(",")))
class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, NotInstalled())
report, argv = sys.argv[2], sys.argv[3:]
try:
    from stockstream.cli import main
    code = main(argv)
except SystemExit as exc:
    code = exc.code
finally:
    with open(report, "w") as out:
        json.dump(sorted(sys.modules), out)
sys.exit(code)
"""


def run_without(
    blocked: tuple[str, ...], argv: list[str], tmp_path: Path
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    report = tmp_path / "modules.json"
    done = run_python([RUN_WITHOUT, ",".join(blocked), str(report), *argv], tmp_path)
    return done, set(json.loads(report.read_text()))


def run_python(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -c args[0] args[1:]` in a server's environment, its output captured."""
    return subprocess.run(
        [sys.executable, "-c", *args],
        cwd=cwd,
        env=server_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"]])
def test_help_loads_neither_the_benchmark_nor_kafka(argv: list[str], tmp_path: Path) -> None:
    """`--help` and `serve --help` work without aiokafka and psutil, list every command,
    and load neither them nor the benchmark."""
    done, modules = run_without(("aiokafka", "psutil"), argv, tmp_path)
    assert done.returncode == 0, done.stderr
    if argv == ["--help"]:
        assert all(command in done.stdout for command in COMMANDS), done.stdout
    else:
        assert "--simulate" in done.stdout
    assert not loaded(modules, HEAVY), loaded(modules, HEAVY)


def test_the_server_loads_neither_the_benchmark_nor_kafka(tmp_path: Path) -> None:
    """Building the server (`create_app`, what `serve` runs) imports neither the benchmark,
    psutil nor aiokafka, so the server runs with only the base dependencies installed."""
    probe = (
        "import json, sys\n"
        "from stockstream.app import create_app\n"
        "from stockstream.config import Settings\n"
        "import stockstream.server\n"
        "create_app(Settings.from_env())\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = run_python([probe], tmp_path)
    assert done.returncode == 0, done.stderr
    modules = set(json.loads(done.stdout.splitlines()[-1]))
    assert "stockstream.node" in modules
    assert not loaded(modules, HEAVY), loaded(modules, HEAVY)


@pytest.mark.parametrize("argv", [["bench", "--quick"], ["bench", "--help"]])
def test_bench_without_psutil_says_how_to_install_it(argv: list[str], tmp_path: Path) -> None:
    """`bench` on a machine without psutil exits 1 naming the `bench` extra, without a traceback."""
    done, _ = run_without(("psutil",), argv, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert 'pip install "stockstream[bench]"' in done.stderr
    assert "Traceback" not in done.stderr


def test_bench_help_lists_its_options(tmp_path: Path) -> None:
    """With psutil installed, `bench --help` shows the benchmark's own options."""
    done, modules = run_without((), ["bench", "--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--scenario" in done.stdout and "--compare" in done.stdout
    assert "stockstream.bench" in modules


@pytest.mark.parametrize(
    "argv",
    [
        ["kafka-bridge", "--bootstrap", "127.0.0.1:9", "--redis-url", "redis://127.0.0.1:9/0"],
        ["publish", "AAPL", "1.5", "--kafka", "--bootstrap", "127.0.0.1:9"],
        ["simulate", "--kafka", "--bootstrap", "127.0.0.1:9", "--duration", "1"],
    ],
)
def test_kafka_commands_without_aiokafka_say_how_to_install_it(argv: list[str], tmp_path: Path) -> None:
    """A Kafka command on a machine without aiokafka exits 1 naming the `kafka` extra,
    without a traceback and before connecting anywhere."""
    done, _ = run_without(("aiokafka",), argv, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert 'pip install "stockstream[kafka]"' in done.stderr
    assert "Traceback" not in done.stderr


def test_the_test_extra_installs_both_extras() -> None:
    """`pip install .[test]` is enough to run the whole suite: it pulls in the kafka and
    bench extras, and requirements.txt pins every package the extras name."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert "stockstream[kafka,bench]" in extras["test"]
    assert not any(d.split(">")[0].split("=")[0] in ("aiokafka", "psutil") for d in project["dependencies"])
    pinned = {
        line.split("==")[0].lower()
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    for requirement in extras["kafka"] + extras["bench"]:
        assert requirement.split(">")[0].lower() in pinned, requirement
