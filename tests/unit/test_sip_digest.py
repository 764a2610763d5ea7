"""Unit tests for core/sip/digest.py: known-answer vectors and the client/server round trip."""

from __future__ import annotations

import hashlib

import pytest

from core.errors import BadRequest
from core.sip.digest import (
    ALGORITHMS,
    algorithm_of,
    authorization,
    challenge,
    compute_ha1,
    make_nonce,
    parse_digest,
    user_ha1s,
    verify,
)

# RFC 2617 §3.5.
RFC2617_AUTHORIZATION = (
    'Digest username="Mufasa", realm="testrealm@host.com", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, '
    'nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)

# RFC 7616 §3.9.1.
RFC7616_REALM = "http-auth@example.org"
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_RESPONSES = {
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}


def _rfc7616_challenge(algorithm: str) -> str:
    return (
        f'Digest realm="{RFC7616_REALM}", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )


def test_compute_ha1_md5_known_answer() -> None:
    expected = hashlib.md5(b"Mufasa:testrealm@host.com:Circle Of Life").hexdigest()
    assert compute_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life") == expected
    assert expected == "939e7578ed9e3c518a452acee763bce9"


def test_compute_ha1_rejects_unknown_algorithm() -> None:
    with pytest.raises(ValueError):
        compute_ha1("SHA-512-256", "u", "r", "p")


def test_rfc2617_md5_vector_verifies() -> None:
    params = parse_digest(RFC2617_AUTHORIZATION)
    ha1 = compute_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    assert verify(params, "GET", ha1, nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093")
    assert not verify(params, "POST", ha1, nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093")
    assert not verify(params, "GET", ha1, nonce="dcd98b7102dd2f0e8b11d0f600bfb0c094")


def test_rfc2617_md5_vector_from_client_side() -> None:
    value = authorization(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"',
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle Of Life",
        cnonce="0a4f113b",
    )
    params = parse_digest(value)
    assert params["response"] == "6629fae49393a05397450978507c4ef1"
    assert params["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"
    assert (params["qop"], params["nc"], params["algorithm"]) == ("auth", "00000001", "MD5")


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_vectors(algorithm: str) -> None:
    value = authorization(
        _rfc7616_challenge(algorithm),
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle of Life",
        cnonce=RFC7616_CNONCE,
    )
    params = parse_digest(value)
    assert params["response"] == RFC7616_RESPONSES[algorithm]
    assert params["algorithm"] == algorithm
    ha1 = compute_ha1(algorithm, "Mufasa", RFC7616_REALM, "Circle of Life")
    assert verify(params, "GET", ha1, nonce=RFC7616_NONCE)


def test_user_ha1s_keys_and_values() -> None:
    ha1s = user_ha1s("sip:alice@example.com", "example.com", "secret")
    assert set(ha1s) == {f"{a}:{u}" for a in ALGORITHMS for u in ("alice@example.com", "alice")}
    assert ha1s["MD5:alice"] == compute_ha1("MD5", "alice", "example.com", "secret")
    assert ha1s["SHA-256:alice@example.com"] == compute_ha1(
        "SHA-256", "alice@example.com", "example.com", "secret"
    )
    assert user_ha1s("alice@example.com", "example.com", "secret") == ha1s


def test_make_nonce_is_fresh() -> None:
    nonces = {make_nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(len(n) >= 32 and '"' not in n and "\\" not in n for n in nonces)


def test_challenge_format() -> None:
    assert challenge("example.com", "n1", "MD5") == (
        'Digest realm="example.com", nonce="n1", qop="auth", algorithm=MD5'
    )
    value = challenge("example.com", "n1", "SHA-256", opaque="op")
    assert value.endswith(', algorithm=SHA-256, opaque="op"')
    assert parse_digest(value) == {
        "realm": "example.com",
        "nonce": "n1",
        "qop": "auth",
        "algorithm": "SHA-256",
        "opaque": "op",
    }
    with pytest.raises(ValueError):
        challenge("example.com", "n1", "SHA-1")


def test_parse_digest_quoting_and_case() -> None:
    params = parse_digest(
        r'digest UserName="a\"b", realm="x, y", nc=00000001,, qop=auth ,uri="sip:p@d",'
    )
    assert params == {
        "username": 'a"b',
        "realm": "x, y",
        "nc": "00000001",
        "qop": "auth",
        "uri": "sip:p@d",
    }


@pytest.mark.parametrize(
    "value",
    ["", "Basic dXNlcjpwYXNz", 'Digest realm="unterminated', "Digest realm", "Digest a=1 b=2"],
)
def test_parse_digest_rejects(value: str) -> None:
    with pytest.raises(BadRequest):
        parse_digest(value)


def test_parse_digest_rejects_repeated_params() -> None:
    with pytest.raises(BadRequest):
        parse_digest('Digest nonce="a", nonce="b"')


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_client_authorization_is_accepted_by_verify(algorithm: str) -> None:
    nonce = make_nonce()
    ha1s = user_ha1s("sip:alice@example.com", "example.com", "pw")
    value = authorization(
        challenge("example.com", nonce, algorithm),
        "INVITE",
        "sip:pchat@example.com",
        "alice@example.com",
        "pw",
        nc=3,
    )
    params = parse_digest(value)
    assert params["nc"] == "00000003"
    assert algorithm_of(params) == algorithm
    key = f"{algorithm_of(params)}:{params['username']}"
    assert verify(params, "INVITE", ha1s[key], nonce=nonce)
    assert not verify(params, "SUBSCRIBE", ha1s[key], nonce=nonce)


def test_wrong_password_fails() -> None:
    nonce = make_nonce()
    value = authorization(challenge("d", nonce, "MD5"), "INVITE", "sip:p@d", "alice", "wrong")
    good_ha1 = compute_ha1("MD5", "alice", "d", "right")
    assert not verify(parse_digest(value), "INVITE", good_ha1, nonce=nonce)


def test_wrong_nonce_fails() -> None:
    value = authorization(challenge("d", "old", "SHA-256"), "INVITE", "sip:p@d", "alice", "pw")
    ha1 = compute_ha1("SHA-256", "alice", "d", "pw")
    assert verify(parse_digest(value), "INVITE", ha1, nonce="old")
    assert not verify(parse_digest(value), "INVITE", ha1, nonce="new")


def test_verify_without_qop_rfc2069() -> None:
    value = authorization('Digest realm="d", nonce="n"', "OPTIONS", "sip:p@d", "alice", "pw")
    params = parse_digest(value)
    assert "qop" not in params and "cnonce" not in params
    ha1 = compute_ha1("MD5", "alice", "d", "pw")
    assert verify(params, "OPTIONS", ha1, nonce="n")
    assert not verify(params, "OPTIONS", compute_ha1("MD5", "alice", "d", "x"), nonce="n")


def _good_params() -> tuple[dict[str, str], str]:
    value = authorization(challenge("d", "n", "MD5"), "INFO", "sip:p@d", "alice", "pw")
    return parse_digest(value), compute_ha1("MD5", "alice", "d", "pw")


@pytest.mark.parametrize(
    "change",
    [
        {"algorithm": "SHA-512"},
        {"algorithm": "MD5-sess"},
        {"qop": "auth-int"},
        {"nc": ""},
        {"cnonce": ""},
        {"response": "é" * 32},
        {"uri": "sip:other@d"},
    ],
)
def test_verify_rejects_tampered_params(change: dict[str, str]) -> None:
    params, ha1 = _good_params()
    assert verify(params, "INFO", ha1, nonce="n")
    assert not verify({**params, **change}, "INFO", ha1, nonce="n")


@pytest.mark.parametrize("missing", ["response", "uri", "nonce"])
def test_verify_rejects_missing_params(missing: str) -> None:
    params, ha1 = _good_params()
    del params[missing]
    assert not verify(params, "INFO", ha1, nonce="n")


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@pytest.mark.parametrize(("qop", "nc", "cnonce"), [("auth-int", "1", "c"), ("auth", "", "c")])
def test_verify_refuses_qop_it_did_not_offer(qop: str, nc: str, cnonce: str) -> None:
    # A response computed honestly for these params still fails: we only accept qop=auth
    # with nc and cnonce present.
    ha1 = compute_ha1("MD5", "alice", "d", "pw")
    ha2 = _md5("INFO:sip:p@d")
    params = {"nonce": "n", "uri": "sip:p@d", "qop": qop, "nc": nc, "cnonce": cnonce}
    params["response"] = _md5(f"{ha1}:n:{nc}:{cnonce}:{qop}:{ha2}")
    assert not verify(params, "INFO", ha1, nonce="n")
    if qop == "auth":
        fixed = {**params, "nc": "1", "response": _md5(f"{ha1}:n:1:c:auth:{ha2}")}
        assert verify(fixed, "INFO", ha1, nonce="n")


def test_verify_accepts_uppercase_response_hex_and_algorithm_case() -> None:
    params, ha1 = _good_params()
    params = {**params, "response": params["response"].upper(), "algorithm": "md5"}
    assert verify(params, "INFO", ha1, nonce="n")


def test_authorization_rejects_unusable_challenges() -> None:
    with pytest.raises(BadRequest):
        authorization('Digest realm="d", nonce="n", qop="auth-int"', "INFO", "u", "a", "p")
    with pytest.raises(BadRequest):
        authorization('Digest realm="d", nonce="n", algorithm=SHA-1', "INFO", "u", "a", "p")
    with pytest.raises(BadRequest):
        authorization('Digest nonce="n"', "INFO", "u", "a", "p")


def test_authorization_quotes_special_characters() -> None:
    value = authorization('Digest realm="r\\"1", nonce="n"', "INFO", "u", 'a"b', "p")
    params = parse_digest(value)
    assert params["username"] == 'a"b' and params["realm"] == 'r"1'
    assert verify(params, "INFO", compute_ha1("MD5", 'a"b', 'r"1', "p"), nonce="n")
