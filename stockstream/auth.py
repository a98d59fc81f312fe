"""JWT authentication: verify client tokens and mint development tokens."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAudienceError,
    InvalidIssuedAtError,
    InvalidIssuerError,
    InvalidKeyError,
    InvalidSignatureError,
    InvalidSubjectError,
    MissingRequiredClaimError,
    PyJWTError,
)

from .config import Settings, SettingsError, read_setting_file
from .errors import ClientError, ErrorCode
from .symbols import SymbolError, normalize_symbol

# Refused before decoding so a client cannot make the server parse huge input.
MAX_TOKEN_CHARS = 8192
ALL_SYMBOLS = "*"
# Beyond year 9999 an `exp` is nonsense, and its milliseconds would overflow.
_MAX_EXP = 253402300799

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_SUB_MESSAGE = "token subject (sub) must be a non-empty string"


@dataclass(frozen=True)
class Identity:
    """Who a verified token speaks for and what it may subscribe to."""

    user: str
    symbols: frozenset[str] | None = None  # None: every symbol
    expires_at: float | None = None  # epoch seconds; None: never expires
    publishes: frozenset[str] | None = frozenset()  # None: every symbol; empty: none
    wildcard: bool = False  # the symbols claim holds "*": may subscribe to `*` (every symbol at once)

    def allows(self, symbol: str) -> bool:
        """Whether this identity may subscribe to `symbol` (a normalized symbol)."""
        return self.symbols is None or symbol in self.symbols

    def may_publish(self, symbol: str) -> bool:
        """Whether this identity may publish prices of `symbol` (a normalized symbol)."""
        return self.publishes is None or symbol in self.publishes

    @property
    def expires_at_ms(self) -> int | None:
        return None if self.expires_at is None else int(self.expires_at * 1000)


class TokenVerifier:
    """Checks client tokens against the keys configured in Settings."""

    def __init__(self, settings: Settings) -> None:
        # Each algorithm maps to its own key and a token is checked only with
        # the key of its algorithm: an HS256 token is never checked against the
        # public key (algorithm confusion), and "none" has no key at all.
        self._keys: dict[str, Any] = {}
        if settings.jwt_secret:
            self._keys["HS256"] = _hmac_secret(settings.jwt_secret)
        public = _public_key(settings)
        if public is not None:
            algorithm, key = public
            self._keys[algorithm] = key
        self._audience = settings.jwt_audience or None
        self._issuer = settings.jwt_issuer or None
        self._leeway = settings.jwt_leeway

    @property
    def enabled(self) -> bool:
        """Whether a verification key is configured."""
        return bool(self._keys)

    @property
    def algorithms(self) -> tuple[str, ...]:
        return tuple(sorted(self._keys))

    def verify(self, token: object) -> Identity:
        """Return the Identity of a valid token; raise ClientError(AUTH_FAILED) otherwise."""
        if not self.enabled:
            raise _auth_failed("authentication is not configured on this server")
        if not isinstance(token, str):
            raise _auth_failed("token must be a string")
        token = token.strip()
        if not token:
            raise _auth_failed("token is empty")
        if len(token) > MAX_TOKEN_CHARS:
            raise _auth_failed(f"token is too long (over {MAX_TOKEN_CHARS} characters)")
        try:
            algorithm: Any = jwt.get_unverified_header(token).get("alg")
        except PyJWTError:
            raise _auth_failed("malformed token") from None
        key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
        if key is None:
            raise _auth_failed(
                f"token algorithm {_shown(algorithm)} is not accepted"
                f" (this server accepts {', '.join(self.algorithms)})"
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
            )
        except PyJWTError as exc:
            raise _auth_failed(self._reason(exc)) from None
        return _identity(claims)

    def _reason(self, exc: PyJWTError) -> str:
        if isinstance(exc, ExpiredSignatureError):
            return "token expired"
        if isinstance(exc, ImmatureSignatureError):
            return "token not yet valid"
        if isinstance(exc, InvalidAudienceError):
            if self._audience is None:
                return "wrong audience: this server accepts only tokens without an aud claim"
            return "wrong audience"
        if isinstance(exc, InvalidIssuerError):
            return "wrong issuer"
        if isinstance(exc, MissingRequiredClaimError):
            # Only aud and iss are required, and only when configured.
            kind = "audience" if exc.claim == "aud" else "issuer"
            return f"wrong {kind}: token has no {exc.claim} claim"
        if isinstance(exc, InvalidSignatureError):
            return "invalid signature"
        if isinstance(exc, InvalidSubjectError):
            return _SUB_MESSAGE
        if isinstance(exc, (DecodeError, InvalidIssuedAtError)):
            return "malformed token"
        return "invalid token"


def _identity(claims: dict[str, Any]) -> Identity:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip():
        raise _auth_failed(_SUB_MESSAGE)
    claim = claims.get("symbols")
    wildcard = claim == ALL_SYMBOLS or (isinstance(claim, list) and ALL_SYMBOLS in claim)
    return Identity(
        user=sub,
        symbols=_symbols_claim(claims),
        expires_at=_expiry(claims),
        publishes=_publish_claim(claims),
        wildcard=wildcard,
    )


def _expiry(claims: dict[str, Any]) -> float | None:
    exp = claims.get("exp")
    if exp is None:
        return None
    if isinstance(exp, bool) or not isinstance(exp, (int, float)) or not 0 <= exp <= _MAX_EXP:
        raise _auth_failed("malformed token: exp must be a time in seconds since the epoch")
    return float(exp)


def _symbols_claim(claims: dict[str, Any]) -> frozenset[str] | None:
    if "symbols" not in claims:
        return None
    return _symbol_set("symbols", claims["symbols"])


def _publish_claim(claims: dict[str, Any]) -> frozenset[str] | None:
    """`publish`: true or "*" for every symbol, a list of symbols, absent or false for none."""
    claim = claims.get("publish", False)
    if claim is False:
        return frozenset()
    if claim is True:
        return None
    return _symbol_set("publish", claim)


def _symbol_set(name: str, claim: Any) -> frozenset[str] | None:
    """A claim holding "*" or a list of symbols (which may contain "*"); None means every symbol."""
    if claim == ALL_SYMBOLS:
        return None
    if not isinstance(claim, list):
        raise _auth_failed(f'invalid {name} claim: expected a list of symbols or "*"')
    try:
        symbols = {s if s == ALL_SYMBOLS else normalize_symbol(s) for s in claim}
    except SymbolError as exc:
        raise _auth_failed(f"invalid {name} claim: {exc}") from None
    return None if ALL_SYMBOLS in symbols else frozenset(symbols)


def _auth_failed(message: str) -> ClientError:
    return ClientError(ErrorCode.AUTH_FAILED, message)


def _shown(algorithm: object) -> str:
    """The header's alg for a message, without echoing arbitrary client input."""
    if isinstance(algorithm, str) and len(algorithm) <= 16 and algorithm.isprintable():
        return repr(algorithm)
    return "(missing or invalid)"


# -- keys ---------------------------------------------------------------------


def _hmac_secret(secret: str) -> str:
    try:
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
    except InvalidKeyError:
        raise SettingsError(
            "JWT_SECRET: looks like an asymmetric key; put a public key in JWT_PUBLIC_KEY instead"
        ) from None
    return secret


def _public_key(settings: Settings) -> tuple[str, Any] | None:
    """(algorithm, key) of the configured public key, or None."""
    if settings.jwt_public_key and settings.jwt_public_key_file:
        raise SettingsError("JWT_PUBLIC_KEY, JWT_PUBLIC_KEY_FILE: set only one of them")
    if settings.jwt_public_key:
        name = "JWT_PUBLIC_KEY"
        # A PEM squeezed onto one line of .env or the environment often
        # carries its line breaks as a literal backslash-n.
        pem = settings.jwt_public_key.replace("\\n", "\n").encode()
    elif settings.jwt_public_key_file:
        name = "JWT_PUBLIC_KEY_FILE"
        pem = read_setting_file(name, settings.jwt_public_key_file)
    else:
        return None
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            key: PublicKeyTypes = x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SettingsError(f"{name}: not a PEM public key or certificate") from None
    return _algorithm_for(name, key), key


def _signing_key(settings: Settings) -> tuple[str, Any]:
    """(algorithm, key) to mint tokens with; the private key wins over the secret."""
    name = "JWT_PRIVATE_KEY_FILE"
    if settings.jwt_private_key_file:
        pem = read_setting_file(name, settings.jwt_private_key_file)
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise SettingsError(f"{name}: not an unencrypted PEM private key") from None
        return _algorithm_for(name, key), key
    if settings.jwt_secret:
        return "HS256", _hmac_secret(settings.jwt_secret)
    raise SettingsError("no signing key: set JWT_SECRET (HS256) or JWT_PRIVATE_KEY_FILE (RS256/ES256)")


def _algorithm_for(name: str, key: Any) -> str:
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return "RS256"
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        algorithm = _EC_ALGORITHMS.get(key.curve.name)
        if algorithm:
            return algorithm
    raise SettingsError(f"{name}: expected an RSA key or an EC key on P-256, P-384 or P-521")


# -- minting ------------------------------------------------------------------


def mint_token(
    settings: Settings,
    sub: str,
    symbols: list[str] | None = None,
    ttl: float | None = 3600,
    audience: str | None = None,
    issuer: str | None = None,
    publish: bool | list[str] | None = None,
) -> str:
    """Sign a token for `sub`, valid for `ttl` seconds (None: no expiry).

    `symbols` limits what the token may subscribe to ("*" for all; None: no
    claim, which also means all). `publish` lets it publish prices over HTTP:
    True (or ["*"]) for every symbol, a list for those symbols; None: no claim,
    no publishing. `audience`/`issuer` default to the configured
    JWT_AUDIENCE/JWT_ISSUER; pass "" to leave the claim out.
    Raises SettingsError when no signing key is configured, ValueError for a
    bad `sub` or symbol.
    """
    if not isinstance(sub, str) or not sub.strip():
        raise ValueError("sub must be a non-empty string")
    algorithm, key = _signing_key(settings)
    now = time.time()
    claims: dict[str, Any] = {"sub": sub, "iat": int(now)}
    if ttl is not None:
        claims["exp"] = int(now + ttl)
    audience = settings.jwt_audience if audience is None else audience
    if audience:
        claims["aud"] = audience
    issuer = settings.jwt_issuer if issuer is None else issuer
    if issuer:
        claims["iss"] = issuer
    if symbols is not None:
        claims["symbols"] = _claim_symbols(symbols)
    if publish is True or publish == [ALL_SYMBOLS]:
        claims["publish"] = True
    elif publish:
        claims["publish"] = _claim_symbols(publish)
    return jwt.encode(claims, key, algorithm=algorithm)


def _claim_symbols(symbols: list[str]) -> list[str]:
    return [s if s == ALL_SYMBOLS else normalize_symbol(s) for s in symbols]
