"""Settings: every one documented, defaults safe, bad values stop start-up with one line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stockstream.config import Settings, SettingsError, describe_settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_in_env_example_and_readme() -> None:
    env_example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for name, default, _ in describe_settings():
        assert f"\n{name}={default}\n" in env_example, f"{name} missing from .env.example (or its default differs)"
        assert f"`{name}`" in readme, f"{name} missing from the README's settings table"


def test_env_example_as_environment_gives_the_defaults() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    environ = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert Settings.from_env(environ) == Settings.from_env({})


def test_redis_url_wins_over_host_and_port() -> None:
    assert Settings.from_env({"REDIS_HOST": "a", "REDIS_PORT": "1"}).backend_url == "redis://a:1/0"
    both = Settings.from_env({"REDIS_HOST": "a", "REDIS_URL": "redis://b:2/3"})
    assert both.backend_url == "redis://b:2/3"
    assert Settings.from_env({}).backend_url is None


@pytest.mark.parametrize("name, value", [
    ("PORT", "abc"), ("PORT", "70000"), ("MAX_SUBSCRIPTIONS", "0"), ("REQUEST_RATE", "-1"),
    ("REQUIRE_AUTH", "perhaps"), ("LOG_LEVEL", "loud"), ("SIMULATE_SYMBOLS", "not a symbol!"),
    ("REDIS_URL", "http://x"),
])
def test_bad_value_names_the_setting(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_bad_value_stops_start_up_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "stockstream", "serve"], cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "PORT": "abc"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "PORT" in lines[0], result.stderr


def test_bad_argument_prints_usage_and_exits_2(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "stockstream", "publish", "AAPL"], cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith("usage:")


def test_dotenv_is_read_and_flags_win(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PORT=6001\nMAX_SUBSCRIPTIONS=7\n")
    probe = ("from stockstream.cli import build_parser, settings_from;"
             "s = settings_from(build_parser().parse_args(['serve', '--port', '6002']));"
             "print(s.port, s.max_subscriptions)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=30)
    assert result.stdout.split() == ["6002", "7"], result.stderr
