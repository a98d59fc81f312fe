"""Settings: every one documented, defaults safe, bad values stop start-up with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stockstream.config import Settings, SettingsError, describe_settings, redact_url
from tests.support.waiting import free_port

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


@pytest.mark.parametrize(
    "name, value",
    [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("MAX_SUBSCRIPTIONS", "0"),
        ("REQUEST_RATE", "-1"),
        ("REQUIRE_AUTH", "perhaps"),
        ("LOG_LEVEL", "loud"),
        ("SIMULATE_SYMBOLS", "not a symbol!"),
        ("REDIS_URL", "http://x"),
        ("REDIS_URL", "redis://:pw@host:abc/0"),
        ("REDIS_URL", "redis://host:99999/0"),
        ("JWT_LEEWAY", "-1"),
        ("JWT_LEEWAY", "nan"),
    ],
)
def test_bad_value_names_the_setting(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_bad_value_stops_start_up_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stockstream", "serve"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "PORT": "abc"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "PORT" in lines[0], result.stderr


SECRET = "settings-test-secret-of-at-least-32-bytes"

# Combinations that cannot work, each with the setting its one line must name.
UNWORKABLE = [
    pytest.param({"REQUIRE_AUTH": "true"}, "REQUIRE_AUTH", id="require-auth-without-key"),
    pytest.param({"JWT_SECRET": "short-secret"}, "JWT_SECRET", id="short-hs256-secret"),
    pytest.param({"JWT_SECRET": SECRET, "JWT_LEEWAY": "-5"}, "JWT_LEEWAY", id="negative-leeway"),
    pytest.param({"JWT_AUDIENCE": "stockstream"}, "JWT_AUDIENCE", id="audience-without-key"),
    pytest.param({"JWT_ISSUER": "https://login.example"}, "JWT_ISSUER", id="issuer-without-key"),
    pytest.param(
        {"RECOVERY_WINDOW": "60", "HISTORY_MAX_ENTRIES": "0"}, "RECOVERY_WINDOW", id="recovery-without-history"
    ),
]


@pytest.mark.parametrize("environ, name", UNWORKABLE)
def test_unworkable_combination_names_the_setting(environ: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name}"):
        Settings.from_env(environ)


def test_unworkable_combination_is_refused_however_settings_are_built() -> None:
    """The checks live with the Settings: flags and replace() cannot get around them."""
    with pytest.raises(SettingsError, match="REQUIRE_AUTH"):
        Settings.from_env({}, require_auth=True)
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        Settings.from_env({}).replace(jwt_secret="x" * 31)
    with pytest.raises(SettingsError, match="JWT_LEEWAY"):
        Settings.from_env({"JWT_SECRET": SECRET}).replace(jwt_leeway=-0.5)


def test_short_secret_message_gives_its_length_not_the_secret() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"JWT_SECRET": "hunter2-hunter2"})
    assert "15 bytes" in str(caught.value) and "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "environ",
    [
        {"REQUIRE_AUTH": "true", "JWT_SECRET": "s" * 32},
        {"JWT_SECRET": "é" * 16},  # 32 bytes in UTF-8: the limit is on bytes, not characters
        {"JWT_LEEWAY": "0"},
        {"JWT_LEEWAY": "30", "JWT_SECRET": SECRET},
        {"JWT_AUDIENCE": "stockstream", "JWT_ISSUER": "dev", "JWT_SECRET": SECRET},
        {"JWT_AUDIENCE": "stockstream", "JWT_PRIVATE_KEY_FILE": "/nonexistent/key.pem"},  # minting only
    ],
)
def test_workable_combinations_are_accepted(environ: dict[str, str]) -> None:
    Settings.from_env(environ)


def test_require_auth_with_a_public_key_only_is_accepted(tmp_path: Path) -> None:
    key_file = tmp_path / "public.pem"
    key_file.write_text("-----BEGIN PUBLIC KEY-----\n")
    Settings.from_env({"REQUIRE_AUTH": "true", "JWT_PUBLIC_KEY_FILE": str(key_file)})
    Settings.from_env({"REQUIRE_AUTH": "true", "JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----"})


@pytest.mark.parametrize("environ, name", UNWORKABLE)
def test_unworkable_combination_stops_run_py_with_one_line(tmp_path: Path, environ: dict[str, str], name: str) -> None:
    """`python run.py` with settings that cannot work exits 2 before serving, with one line naming them."""
    port = str(free_port())
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--host", "127.0.0.1", "--port", port],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", **environ},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"stockstream: bad setting: {name}"), result.stderr
    assert result.stdout == ""


def test_bad_argument_prints_usage_and_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stockstream", "publish", "AAPL"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("usage:")


def test_dotenv_is_read_and_flags_win(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PORT=6001\nMAX_SUBSCRIPTIONS=7\n")
    probe = (
        "from stockstream.cli import build_parser, settings_from;"
        "s = settings_from(build_parser().parse_args(['serve', '--port', '6002']));"
        "print(s.port, s.max_subscriptions)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.stdout.split() == ["6002", "7"], result.stderr


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://app:s3cret@redis/0", "rediss://app:***@redis/0"),
        ("redis://s3cret@redis/0", "redis://***@redis/0"),
        ("unix:///run/redis.sock?db=0&password=s3cret", "unix:///run/redis.sock?db=0&password=***"),
    ],
)
def test_redis_urls_are_logged_without_their_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
