"""Settings: one frozen object, built once from the environment (and `.env`)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from .symbols import SymbolError, normalize_symbol


class SettingsError(ValueError):
    """A setting has a value stockstream cannot use; the message names it."""


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _int(raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError("expected a whole number") from None


def _float(raw: str) -> float:
    try:
        return float(raw.strip())
    except ValueError:
        raise ValueError("expected a number") from None


def _positive_int(raw: str) -> int:
    value = _int(raw)
    if value <= 0:
        raise ValueError("expected a whole number above 0")
    return value


def _non_negative_int(raw: str) -> int:
    value = _int(raw)
    if value < 0:
        raise ValueError("expected a whole number, 0 or more")
    return value


def _port(raw: str) -> int:
    value = _int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("expected a port number from 0 to 65535")
    return value


def _positive_float(raw: str) -> float:
    value = _float(raw)
    if not value > 0 or value == float("inf"):
        raise ValueError("expected a number above 0")
    return value


def _non_negative_float(raw: str) -> float:
    value = _float(raw)
    if not value >= 0 or value == float("inf"):
        raise ValueError("expected a number of 0 or more")
    return value


# Heartbeat periods a client (or LIVE_PRICE_HEARTBEAT) may ask for; 0 is off.
MIN_HEARTBEAT_SECONDS = 1
MAX_HEARTBEAT_SECONDS = 3600


def check_heartbeat(value: object) -> int:
    """A heartbeat period as a client may ask for it: 0 (off) or whole seconds
    from MIN_HEARTBEAT_SECONDS to MAX_HEARTBEAT_SECONDS; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("heartbeat must be a whole number of seconds")
    if value != 0 and not MIN_HEARTBEAT_SECONDS <= value <= MAX_HEARTBEAT_SECONDS:
        raise ValueError(
            f"heartbeat must be 0 (off) or from {MIN_HEARTBEAT_SECONDS} to {MAX_HEARTBEAT_SECONDS} seconds"
        )
    return value


def _heartbeat(raw: str) -> int:
    return check_heartbeat(_int(raw))


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return value

    return parse


def _symbol_list(raw: str) -> tuple[str, ...]:
    symbols = tuple(normalize_symbol(s.strip()) for s in raw.split(",") if s.strip())
    if not symbols:
        raise ValueError("expected a comma-separated list of symbols")
    return symbols


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in raw.split(",") if s.strip())


def _text(raw: str) -> str:
    return raw


def _setting(default: Any, parse: Callable[[str], Any] = _text, doc: str = "") -> Any:
    return field(default=default, metadata={"parse": parse, "doc": doc})


# The shortest HS256 secret accepted: as long as the hash, as RFC 7518 requires.
MIN_HS256_SECRET_BYTES = 32

DEFAULT_SYMBOLS = "AAPL,MSFT,GOOGL,AMZN,NVDA,META,TSLA,BRK.B,JPM,V,JNJ,WMT,XOM,PG,MA,HD,KO,PEP,^GSPC,BTC-USD"


@dataclass(frozen=True)
class Settings:
    """Every setting, named as its environment variable (lower-cased)."""

    host: str = _setting("0.0.0.0", doc="Interface to listen on")
    port: int = _setting(5000, _port, "TCP port")
    redis_url: str = _setting(
        "", doc="Redis URL; wins over REDIS_HOST/REDIS_PORT. Empty with both unset: embedded in-process backend"
    )
    redis_cluster: bool = _setting(
        False, _bool, "REDIS_URL names a node of a Redis Cluster (7+): keys hash-tagged per symbol, sharded pub/sub"
    )
    redis_host: str = _setting("", doc="Redis host, as in the original design")
    redis_port: int = _setting(6379, _port, "Redis port, used with REDIS_HOST")
    cors_origins: tuple[str, ...] = _setting(("*",), _csv, "Allowed CORS origins, comma-separated; * for any")
    jwt_secret: str = _setting("", doc="HS256 secret, at least 32 bytes")
    jwt_public_key: str = _setting("", doc="PEM public key for RS256/ES256 (or use JWT_PUBLIC_KEY_FILE)")
    jwt_public_key_file: str = _setting("", doc="Path to a PEM public key")
    jwt_private_key_file: str = _setting(
        "", doc="Path to a PEM private key, used only by `token` to mint development tokens"
    )
    jwt_audience: str = _setting("", doc="Required `aud` claim, if set")
    jwt_issuer: str = _setting("", doc="Required `iss` claim, if set")
    jwt_leeway: float = _setting(0.0, _non_negative_float, "Seconds of clock skew tolerated on exp/nbf")
    require_auth: bool = _setting(False, _bool, "Refuse subscribe until the client authenticated (needs a JWT key)")
    max_subscriptions: int = _setting(200, _positive_int, "Symbols one connection may subscribe to")
    wildcard_enabled: bool = _setting(
        True, _bool, 'Allow subscribing to `*` (every symbol; with auth on, only tokens whose symbols claim holds "*")'
    )
    wildcard_snapshot_max: int = _setting(
        1000,
        _non_negative_int,
        "Most symbols whose snapshot a `*` subscription starts with (the first ones in alphabetical order)",
    )
    wildcard_discovery_interval: float = _setting(
        2.0,
        _positive_float,
        "Redis Cluster: seconds between the scans of every master for symbols new to a `*` subscription",
    )
    max_message_bytes: int = _setting(16384, _positive_int, "Largest inbound message on either transport")
    request_rate: float = _setting(20.0, _positive_float, "Control requests per second per connection (sustained)")
    request_burst: int = _setting(50, _positive_int, "Control requests a connection may send at once")
    max_connections_per_user: int = _setting(
        0, _non_negative_int, "Concurrent connections per authenticated user; 0 for no limit"
    )
    outbound_buffer_bytes: int = _setting(
        262144, _positive_int, "Bytes queued to one client before it counts as behind (then updates are conflated)"
    )
    write_delay: float = _setting(
        0.0,
        _non_negative_float,
        "Seconds updates may wait so several share one write to a client (0: at once); trades latency for CPU",
    )
    slow_client_timeout: float = _setting(
        10.0, _positive_float, "Seconds a client may stay behind before it is disconnected with slow_client"
    )
    ping_interval: int = _setting(
        25,
        _positive_int,
        "Whole seconds between heartbeats: Socket.IO pings and /live-price ping frames (below the load balancer's idle timeout)",
    )
    ping_timeout: int = _setting(
        20,
        _positive_int,
        "Whole seconds a client (Socket.IO or /live-price) has to answer a heartbeat before it is disconnected",
    )
    live_price_heartbeat: int = _setting(
        0,
        _heartbeat,
        "Seconds between heartbeat frames on every /live-price connection, unless its subscribe asks otherwise (1-3600); 0: only for clients that ask",
    )
    history_max_entries: int = _setting(10000, _non_negative_int, "Updates kept per symbol; 0 keeps no history")
    history_max_age: float = _setting(86400.0, _positive_float, "Seconds an update is kept in history")
    candle_min_interval_ms: int = _setting(
        250,
        _non_negative_int,
        "Milliseconds between two `candle` events of one live candle while it changes (the latest state is sent; 0: every change)",
    )
    token_expiry_warning: float = _setting(
        60.0,
        _non_negative_float,
        "Seconds before a connection's token expires that it is sent `tokenExpiring` (0: no warning)",
    )
    recovery_window: float = _setting(
        0.0,
        _non_negative_float,
        "Seconds a Socket.IO client that lost its connection may recover its session (subscriptions and missed updates) on any instance; 0 turns connection state recovery off",
    )
    kafka_bootstrap: str = _setting("", doc="Kafka bootstrap servers HOST:PORT[,HOST:PORT]")
    kafka_topic: str = _setting("stock-prices", doc="Kafka topic of price updates")
    kafka_group: str = _setting("stockstream", doc="Kafka consumer group of the bridge")
    kafka_dead_letter_topic: str = _setting("", doc="Topic for records the bridge rejects; empty to only log them")
    simulate: bool = _setting(False, _bool, "Run the built-in price simulator inside the server")
    simulate_rate: float = _setting(5.0, _positive_float, "Simulated updates per second per symbol")
    simulate_symbols: tuple[str, ...] = _setting(
        _symbol_list(DEFAULT_SYMBOLS), _symbol_list, "Symbols the simulator moves"
    )
    shutdown_timeout: float = _setting(10.0, _positive_float, "Seconds a graceful shutdown may take")
    socketio_channel: str = _setting("socketio", doc="Redis channel the Socket.IO manager shares emits on")
    admin_ui: bool = _setting(False, _bool, "Serve the Socket.IO Admin UI instrumentation")
    admin_user: str = _setting("admin", doc="Admin UI user name")
    admin_password: str = _setting("", doc="Admin UI password; required when ADMIN_UI is on")
    tls_cert_file: str = _setting(
        "", doc="PEM certificate (chain: the server's first) to serve HTTPS and wss:// directly; needs TLS_KEY_FILE"
    )
    tls_key_file: str = _setting("", doc="Unencrypted PEM private key of TLS_CERT_FILE")
    log_level: str = _setting("info", _choice("debug", "info", "warning", "error"), "Log level")
    log_format: str = _setting("text", _choice("text", "json"), "text, or json for one JSON object per line")
    event_loop: str = _setting(
        "auto", _choice("auto", "asyncio", "uvloop"), "Event loop; auto uses uvloop when installed"
    )

    @property
    def backend_url(self) -> str | None:
        """The Redis URL to use, or None for the embedded backend."""
        if self.redis_url:
            return self.redis_url
        if self.redis_host:
            return f"redis://{self.redis_host}:{self.redis_port}/0"
        return None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from `environ` (default: os.environ), then `overrides`.

        Raises SettingsError naming the first setting whose value is unusable.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.name.upper())
            if raw is None:
                continue
            values[f.name] = parse_setting(f.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.check()
        return settings

    def replace(self, **changes: Any) -> "Settings":
        settings = dataclasses.replace(self, **changes)
        settings.check()
        return settings

    def check(self) -> None:
        """Combinations that cannot work; SettingsError names the settings involved."""
        if self.recovery_window > 0 and self.history_max_entries == 0:
            raise SettingsError("RECOVERY_WINDOW: needs history to replay from (HISTORY_MAX_ENTRIES is 0)")
        if self.admin_ui and not self.admin_password:
            raise SettingsError("ADMIN_PASSWORD: must be set when ADMIN_UI is on")
        if self.jwt_public_key_file and not os.path.isfile(self.jwt_public_key_file):
            raise SettingsError(f"JWT_PUBLIC_KEY_FILE: no such file: {self.jwt_public_key_file}")
        self._check_jwt()
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            given, missing = (
                ("TLS_CERT_FILE", "TLS_KEY_FILE") if self.tls_cert_file else ("TLS_KEY_FILE", "TLS_CERT_FILE")
            )
            raise SettingsError(f"{missing}: must be set as well when {given} is (HTTPS needs both)")
        url = self.backend_url
        if self.redis_cluster and not url:
            raise SettingsError("REDIS_CLUSTER: needs REDIS_URL (or REDIS_HOST) naming a node of the cluster")
        if url and not url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError("REDIS_URL: expected redis://, rediss:// or unix://")
        if url:
            try:
                urlsplit(url).port  # noqa: B018 - reading the port is what checks it
            except ValueError as exc:  # the message quotes the port only, never the password
                raise SettingsError(f"REDIS_URL: {exc}") from None

    @property
    def has_verification_key(self) -> bool:
        """Whether tokens can be verified: a secret or a public key is configured."""
        return bool(self.jwt_secret or self.jwt_public_key or self.jwt_public_key_file)

    def _check_jwt(self) -> None:
        if not self.jwt_leeway >= 0:
            raise SettingsError(f"JWT_LEEWAY={self.jwt_leeway!r}: expected a number of 0 or more")
        secret_bytes = len(self.jwt_secret.encode())
        # RFC 7518 section 3.2: an HS256 key must be at least as long as the hash (256 bits);
        # a shorter one can be brute-forced from any token the server issued or accepted.
        if self.jwt_secret and secret_bytes < MIN_HS256_SECRET_BYTES:
            raise SettingsError(
                f"JWT_SECRET: {secret_bytes} bytes is too short for HS256, use at least"
                f" {MIN_HS256_SECRET_BYTES} (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if self.require_auth and not self.has_verification_key:
            raise SettingsError(
                "REQUIRE_AUTH: needs a key to verify tokens:"
                " set JWT_SECRET (HS256) or JWT_PUBLIC_KEY / JWT_PUBLIC_KEY_FILE (RS256/ES256)"
            )
        if not (self.has_verification_key or self.jwt_private_key_file):
            for name, value in (("JWT_AUDIENCE", self.jwt_audience), ("JWT_ISSUER", self.jwt_issuer)):
                if value:
                    raise SettingsError(
                        f"{name}: has no effect without a JWT key:"
                        " set JWT_SECRET or JWT_PUBLIC_KEY / JWT_PUBLIC_KEY_FILE"
                    )


def parse_setting(name: str, raw: str) -> Any:
    """Parse one setting's text value; SettingsError names the setting."""
    f = {f.name: f for f in dataclasses.fields(Settings)}[name]
    try:
        return f.metadata["parse"](raw)
    except (ValueError, SymbolError) as exc:
        raise SettingsError(f"{name.upper()}={raw!r}: {exc}") from None


def read_setting_file(name: str, path: str) -> bytes:
    """The contents of the file a setting names; SettingsError names the setting."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise SettingsError(f"{name}: cannot read {path}: {exc.strerror or exc}") from None


def redact_url(url: str) -> str:
    """A URL as it may be logged: its password (in the user part or a
    `password=` query parameter) replaced by ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        # Without a colon the whole user part may be the secret.
        netloc = f"{user}:***@{host}" if colon else f"***@{host}"
    query = "&".join(
        f"{name}=***" if name.lower() == "password" else item
        for item in parts.query.split("&")
        if item
        for name in [item.partition("=")[0]]
    )
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def describe_settings() -> list[tuple[str, str, str]]:
    """(ENV_NAME, default as text, description) for every setting."""
    rows = []
    for f in dataclasses.fields(Settings):
        default = f.default
        if isinstance(default, tuple):
            default = ",".join(default)
        elif isinstance(default, bool):
            default = str(default).lower()
        rows.append((f.name.upper(), str(default), f.metadata["doc"]))
    return rows
