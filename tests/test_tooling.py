"""The checks the repository runs on itself: lint, types and warnings as configured."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings

import pytest

from tests.support.servers import REPO_ROOT


def test_warnings_from_the_package_are_errors() -> None:
    """A warning issued from a stockstream module fails the test (tests/pytest.ini);
    the same warning from another module stays a warning."""
    with pytest.raises(UserWarning):
        warnings.warn_explicit("from the package", UserWarning, "stockstream/hub.py", 1, module="stockstream.hub")
    with pytest.warns(UserWarning):
        warnings.warn_explicit("from a library", UserWarning, "library.py", 1, module="library")


def test_ci_runs_lint_and_types_before_the_tests() -> None:
    """.ci/run checks with ruff and mypy, and both come before pytest."""
    script = (REPO_ROOT / ".ci/run").read_text()
    lines = [line.strip() for line in script.splitlines()]
    tests = lines.index("python3 -m pytest tests")
    assert lines.index("python3 -m ruff check stockstream tests") < tests
    assert lines.index("python3 -m ruff format --check stockstream tests") < tests
    assert lines.index("python3 -m mypy") < tests


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "stockstream", "tests"], ["ruff", "format", "--check", "stockstream", "tests"], ["mypy"]],
)
def test_the_tree_passes_its_checks(command: list[str]) -> None:
    """`ruff check`, `ruff format --check` and `mypy` (strict on the core) pass on the tree."""
    if importlib.util.find_spec(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed (pip install .[test])")
    done = subprocess.run([sys.executable, "-m", *command], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
