"""TokenVerifier and mint_token with real HS256, RS256 and ES256 keys."""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from stockstream.auth import (
    MAX_TOKEN_CHARS,
    Identity,
    TokenVerifier,
    mint_token,
)
from stockstream.commands.token import add_token_arguments, token_command
from stockstream.config import Settings, SettingsError
from stockstream.errors import ClientError, ErrorCode

SECRET = "a-test-secret-that-is-at-least-32-bytes-long"
OTHER_SECRET = "another-secret-that-is-at-least-32-bytes-long"


@dataclass(frozen=True)
class KeyKind:
    """One way of signing: what the server verifies with, what `token` signs with."""

    algorithm: str
    private: Any  # the key jwt.encode signs with
    other_private: Any  # an unrelated key of the same kind
    public_pem: str  # "" for HS256

    def settings(self, tmp_path: Path, **overrides: Any) -> Settings:
        if self.algorithm == "HS256":
            return Settings.from_env({}, jwt_secret=SECRET, **overrides)
        key_file = tmp_path / "private.pem"
        key_file.write_bytes(
            self.private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return Settings.from_env({}, jwt_public_key=self.public_pem, jwt_private_key_file=str(key_file), **overrides)

    def sign(self, claims: dict[str, Any], other: bool = False) -> str:
        key = self.other_private if other else self.private
        return jwt.encode(claims, key, algorithm=self.algorithm)


def _public_pem(private: Any) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def kinds(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> dict[str, KeyKind]:
    return {
        "HS256": KeyKind("HS256", SECRET, OTHER_SECRET, ""),
        "RS256": KeyKind(
            "RS256",
            rsa_key,
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            _public_pem(rsa_key),
        ),
        "ES256": KeyKind("ES256", ec_key, ec.generate_private_key(ec.SECP256R1()), _public_pem(ec_key)),
    }


@pytest.fixture(params=["HS256", "RS256", "ES256"])
def kind(request: pytest.FixtureRequest, kinds: dict[str, KeyKind]) -> KeyKind:
    return kinds[request.param]


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 600, **extra}


def assert_refused(verifier: TokenVerifier, token: object, fragment: str) -> ClientError:
    with pytest.raises(ClientError) as caught:
        verifier.verify(token)
    error = caught.value
    assert error.code is ErrorCode.AUTH_FAILED
    assert error.to_dict()["code"] == "auth_failed"
    assert fragment in error.message
    assert "Error" not in error.message and "Traceback" not in error.message
    return error


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """An HMAC-SHA256 token built by hand, for keys PyJWT refuses to sign with."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


# -- valid tokens -------------------------------------------------------------


def test_minted_token_verifies(kind: KeyKind, tmp_path: Path) -> None:
    settings = kind.settings(tmp_path)
    before = time.time()
    token = mint_token(settings, "alice", symbols=["aapl", "MSFT"], ttl=60)
    assert jwt.get_unverified_header(token)["alg"] == kind.algorithm

    verifier = TokenVerifier(settings)
    assert verifier.enabled
    identity = verifier.verify(token)
    assert identity.user == "alice"
    assert identity.symbols == frozenset({"AAPL", "MSFT"})
    assert identity.expires_at is not None
    assert before + 58 <= identity.expires_at <= time.time() + 60
    assert identity.expires_at_ms == int(identity.expires_at * 1000)
    assert identity.allows("AAPL") and not identity.allows("TSLA")


def test_token_signed_elsewhere_verifies(kind: KeyKind, tmp_path: Path) -> None:
    identity = TokenVerifier(kind.settings(tmp_path)).verify(kind.sign(claims()))
    assert identity == Identity("alice", None, identity.expires_at)


def test_public_key_from_file(kinds: dict[str, KeyKind], tmp_path: Path) -> None:
    kind = kinds["RS256"]
    key_file = tmp_path / "public.pem"
    key_file.write_text(kind.public_pem)
    verifier = TokenVerifier(Settings.from_env({}, jwt_public_key_file=str(key_file)))
    assert verifier.algorithms == ("RS256",)
    assert verifier.verify(kind.sign(claims())).user == "alice"


def test_public_key_with_escaped_newlines(kinds: dict[str, KeyKind]) -> None:
    kind = kinds["ES256"]
    one_line = kind.public_pem.replace("\n", "\\n")
    verifier = TokenVerifier(Settings.from_env({"JWT_PUBLIC_KEY": one_line}))
    assert verifier.verify(kind.sign(claims())).user == "alice"


def test_token_without_exp_never_expires(kind: KeyKind, tmp_path: Path) -> None:
    settings = kind.settings(tmp_path)
    identity = TokenVerifier(settings).verify(mint_token(settings, "bob", ttl=None))
    assert identity == Identity("bob", None, None)
    assert identity.expires_at_ms is None


def test_leeway_tolerates_small_clock_skew(kind: KeyKind, tmp_path: Path) -> None:
    token = kind.sign(claims(exp=int(time.time()) - 5))
    assert TokenVerifier(kind.settings(tmp_path, jwt_leeway=30)).verify(token).user == "alice"


def test_surrounding_whitespace_is_ignored(kind: KeyKind, tmp_path: Path) -> None:
    token = kind.sign(claims())
    assert TokenVerifier(kind.settings(tmp_path)).verify(f"  {token}\n").user == "alice"


# -- refused tokens -----------------------------------------------------------


def test_wrong_signature(kind: KeyKind, tmp_path: Path) -> None:
    verifier = TokenVerifier(kind.settings(tmp_path))
    assert_refused(verifier, kind.sign(claims(), other=True), "invalid signature")


def test_tampered_payload(kind: KeyKind, tmp_path: Path) -> None:
    header, _, signature = kind.sign(claims()).split(".")
    forged = f"{header}.{b64(json.dumps(claims(sub='mallory')).encode())}.{signature}"
    assert_refused(TokenVerifier(kind.settings(tmp_path)), forged, "invalid signature")


def test_expired(kind: KeyKind, tmp_path: Path) -> None:
    settings = kind.settings(tmp_path)
    assert_refused(TokenVerifier(settings), mint_token(settings, "alice", ttl=-10), "token expired")


def test_not_yet_valid(kind: KeyKind, tmp_path: Path) -> None:
    token = kind.sign(claims(nbf=int(time.time()) + 300))
    assert_refused(TokenVerifier(kind.settings(tmp_path)), token, "token not yet valid")


def test_issued_in_the_future(kind: KeyKind, tmp_path: Path) -> None:
    token = kind.sign(claims(iat=int(time.time()) + 300))
    assert_refused(TokenVerifier(kind.settings(tmp_path)), token, "token not yet valid")


def test_wrong_audience(kind: KeyKind, tmp_path: Path) -> None:
    verifier = TokenVerifier(kind.settings(tmp_path, jwt_audience="stockstream"))
    assert_refused(verifier, kind.sign(claims(aud="other-service")), "wrong audience")
    assert_refused(verifier, kind.sign(claims()), "wrong audience: token has no aud claim")
    assert verifier.verify(kind.sign(claims(aud=["x", "stockstream"]))).user == "alice"


def test_audience_claim_refused_when_none_configured(kind: KeyKind, tmp_path: Path) -> None:
    verifier = TokenVerifier(kind.settings(tmp_path))
    assert_refused(verifier, kind.sign(claims(aud="other-service")), "wrong audience")


def test_wrong_issuer(kind: KeyKind, tmp_path: Path) -> None:
    verifier = TokenVerifier(kind.settings(tmp_path, jwt_issuer="https://login.example"))
    assert_refused(verifier, kind.sign(claims(iss="https://evil.example")), "wrong issuer")
    assert_refused(verifier, kind.sign(claims()), "wrong issuer: token has no iss claim")
    assert verifier.verify(kind.sign(claims(iss="https://login.example"))).user == "alice"


@pytest.mark.parametrize(
    "garbage",
    ["not-a-token", "a.b.c", "a.b", "eyJhbGciOiJIUzI1NiJ9.!!!.sig", "...", "\x00\x01"],
)
def test_garbage(kind: KeyKind, tmp_path: Path, garbage: str) -> None:
    assert_refused(TokenVerifier(kind.settings(tmp_path)), garbage, "malformed token")


def test_payload_that_is_not_an_object(kinds: dict[str, KeyKind]) -> None:
    token = hand_made({"alg": "HS256", "typ": "JWT"}, ["sub"], SECRET.encode())  # type: ignore[arg-type]  # the wrong type is the test
    assert_refused(TokenVerifier(Settings.from_env({}, jwt_secret=SECRET)), token, "malformed token")


def test_empty_and_oversized(kind: KeyKind, tmp_path: Path) -> None:
    verifier = TokenVerifier(kind.settings(tmp_path))
    assert_refused(verifier, "", "token is empty")
    assert_refused(verifier, "   ", "token is empty")
    huge = kind.sign(claims(padding="x" * MAX_TOKEN_CHARS))
    assert_refused(verifier, huge, "token is too long")


@pytest.mark.parametrize("value", [None, 42, 1.5, True, b"bytes", ["a.b.c"], {"token": "a.b.c"}])
def test_non_string(kind: KeyKind, tmp_path: Path, value: object) -> None:
    assert_refused(TokenVerifier(kind.settings(tmp_path)), value, "token must be a string")


def test_alg_none(kind: KeyKind, tmp_path: Path) -> None:
    unsigned = jwt.encode(claims(), None, algorithm="none")
    verifier = TokenVerifier(kind.settings(tmp_path))
    assert_refused(verifier, unsigned, "token algorithm 'none' is not accepted")


def test_missing_alg(kind: KeyKind, tmp_path: Path) -> None:
    token = hand_made({"typ": "JWT"}, claims(), SECRET.encode())
    assert_refused(TokenVerifier(kind.settings(tmp_path)), token, "not accepted")


def test_other_asymmetric_algorithm_refused(kinds: dict[str, KeyKind], tmp_path: Path) -> None:
    rs_verifier = TokenVerifier(kinds["RS256"].settings(tmp_path))
    assert_refused(rs_verifier, kinds["ES256"].sign(claims()), "token algorithm 'ES256' is not accepted")
    assert_refused(rs_verifier, kinds["HS256"].sign(claims()), "token algorithm 'HS256' is not accepted")


def test_algorithm_confusion_refused(kinds: dict[str, KeyKind], tmp_path: Path) -> None:
    """An HS256 token whose HMAC secret is the server's public key."""
    for name in ("RS256", "ES256"):
        kind = kinds[name]
        header = {"alg": "HS256", "typ": "JWT"}
        forged = hand_made(header, claims(sub="mallory"), kind.public_pem.encode())
        verifier = TokenVerifier(kind.settings(tmp_path))
        assert_refused(verifier, forged, "token algorithm 'HS256' is not accepted")

        # With a secret configured too, HS256 is checked against the secret only.
        both = Settings.from_env({}, jwt_secret=SECRET, jwt_public_key=kind.public_pem)
        verifier = TokenVerifier(both)
        assert verifier.algorithms == tuple(sorted(("HS256", name)))
        assert_refused(verifier, forged, "invalid signature")
        assert verifier.verify(kind.sign(claims())).user == "alice"
        assert verifier.verify(kinds["HS256"].sign(claims())).user == "alice"


def test_not_configured() -> None:
    verifier = TokenVerifier(Settings.from_env({}))
    assert not verifier.enabled
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert_refused(verifier, token, "authentication is not configured on this server")


# -- claims -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        (["aapl", "BRK.B", "^gspc", "EUR/USD"], frozenset({"AAPL", "BRK.B", "^GSPC", "EUR/USD"})),
        (["AAPL", "aapl"], frozenset({"AAPL"})),
        ([], frozenset()),
        ("*", None),
        (["*"], None),
        (["AAPL", "*"], None),
    ],
)
def test_symbols_claim(kind: KeyKind, tmp_path: Path, claim: object, expected: frozenset[str] | None) -> None:
    identity = TokenVerifier(kind.settings(tmp_path)).verify(kind.sign(claims(symbols=claim)))
    assert identity.symbols == expected
    assert identity.allows("AAPL") is (expected is None or "AAPL" in expected)


@pytest.mark.parametrize(
    "claim",
    [["AAPL", "not a symbol!"], ["AAPL", 7], [None], [["AAPL"]], "AAPL", "AAPL,MSFT", 1, None, {"AAPL": 1}],
)
def test_invalid_symbols_claim(kind: KeyKind, tmp_path: Path, claim: object) -> None:
    token = kind.sign(claims(symbols=claim))
    assert_refused(TokenVerifier(kind.settings(tmp_path)), token, "invalid symbols claim")


@pytest.mark.parametrize("sub", [None, "", "  ", 42, ["alice"]])
def test_bad_sub(kind: KeyKind, tmp_path: Path, sub: object) -> None:
    payload = claims()
    if sub is None:
        del payload["sub"]
    else:
        payload["sub"] = sub
    # PyJWT refuses to encode some of these, so build the HS256 case by hand.
    if kind.algorithm == "HS256":
        token = hand_made({"alg": "HS256"}, payload, SECRET.encode())
    else:
        token = kind.sign(payload)
    verifier = TokenVerifier(kind.settings(tmp_path))
    assert_refused(verifier, token, "token subject (sub) must be a non-empty string")


@pytest.mark.parametrize(
    ("exp", "message"),
    [
        ("soon", "malformed token"),
        (True, "token expired"),
        (1e300, "malformed token: exp must be"),
        (-1, "token expired"),
    ],
)
def test_bad_exp(kinds: dict[str, KeyKind], tmp_path: Path, exp: object, message: str) -> None:
    token = hand_made({"alg": "HS256"}, claims(exp=exp), SECRET.encode())
    assert_refused(TokenVerifier(kinds["HS256"].settings(tmp_path)), token, message)


# -- minting ------------------------------------------------------------------


def test_mint_sets_claims(tmp_path: Path) -> None:
    settings = Settings.from_env({}, jwt_secret=SECRET, jwt_audience="stockstream", jwt_issuer="dev")
    token = mint_token(settings, "alice", symbols=["*"], ttl=100)
    payload = jwt.decode(token, SECRET, algorithms=["HS256"], audience="stockstream", issuer="dev")
    assert payload["sub"] == "alice"
    assert payload["aud"] == "stockstream" and payload["iss"] == "dev"
    assert payload["symbols"] == ["*"]
    assert payload["exp"] - payload["iat"] in (99, 100, 101)
    assert TokenVerifier(settings).verify(token).symbols is None

    explicit = mint_token(settings, "alice", audience="other", issuer="")
    payload = jwt.decode(explicit, SECRET, algorithms=["HS256"], audience="other")
    assert payload["aud"] == "other" and "iss" not in payload
    wrong_audience = mint_token(settings, "alice", audience="other")
    assert_refused(TokenVerifier(settings), wrong_audience, "wrong audience")


def test_mint_without_key() -> None:
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        mint_token(Settings.from_env({}), "alice")
    # A public key verifies but cannot sign.
    with pytest.raises(SettingsError, match="JWT_PRIVATE_KEY_FILE"):
        mint_token(Settings.from_env({}, jwt_public_key_file=__file__), "alice")


def test_mint_refuses_bad_input(tmp_path: Path) -> None:
    settings = Settings.from_env({}, jwt_secret=SECRET)
    with pytest.raises(ValueError, match="sub"):
        mint_token(settings, "")
    with pytest.raises(ValueError, match="not a valid symbol"):
        mint_token(settings, "alice", symbols=["AAPL", "bad symbol"])
    missing = Settings.from_env({}, jwt_private_key_file=str(tmp_path / "missing.pem"))
    with pytest.raises(SettingsError, match="JWT_PRIVATE_KEY_FILE: cannot read"):
        mint_token(missing, "alice")


# -- configuration ------------------------------------------------------------


def test_unusable_keys_stop_start_up(kinds: dict[str, KeyKind], tmp_path: Path) -> None:
    pem = kinds["RS256"].public_pem
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        TokenVerifier(Settings.from_env({}, jwt_secret=pem))
    with pytest.raises(SettingsError, match="JWT_PUBLIC_KEY: not a PEM public key"):
        TokenVerifier(Settings.from_env({}, jwt_public_key="hello"))
    key_file = tmp_path / "public.pem"
    key_file.write_text(pem)
    with pytest.raises(SettingsError, match="set only one"):
        TokenVerifier(Settings.from_env({}, jwt_public_key=pem, jwt_public_key_file=str(key_file)))
    with pytest.raises(SettingsError, match="P-256"):
        secp256k1 = _public_pem(ec.generate_private_key(ec.SECP256K1()))
        TokenVerifier(Settings.from_env({}, jwt_public_key=secp256k1))


# -- command line -------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stockstream token")
    add_token_arguments(parser)
    return parser.parse_args(argv)


def test_token_command(kind: KeyKind, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = kind.settings(tmp_path)
    args = parse("--sub", "alice", "--symbols", "aapl, MSFT", "--ttl", "120", "--aud", "x", "--iss", "y")
    assert token_command(args, settings) == 0
    token = capsys.readouterr().out.strip()
    verifier = TokenVerifier(kind.settings(tmp_path, jwt_audience="x", jwt_issuer="y"))
    identity = verifier.verify(token)
    assert identity.user == "alice"
    assert identity.symbols == frozenset({"AAPL", "MSFT"})
    assert identity.expires_at is not None and identity.expires_at <= time.time() + 120


def test_token_command_ttl_zero_never_expires(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings.from_env({}, jwt_secret=SECRET)
    assert token_command(parse("--sub", "alice", "--ttl", "0"), settings) == 0
    assert TokenVerifier(settings).verify(capsys.readouterr().out.strip()).expires_at is None


def test_token_command_without_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert token_command(parse("--sub", "alice"), Settings.from_env({})) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "JWT_SECRET" in captured.err and len(captured.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        (),
        ("--sub", ""),
        ("--sub", "a", "--symbols", "bad symbol"),
        ("--sub", "a", "--ttl", "-1"),
        ("--sub", "a", "--ttl", "x"),
    ],
)
def test_token_arguments_refused(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse(*argv)
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err
