"""SIP digest authentication (protocol layer): RFC 2617 / RFC 7616, SHA-256 per RFC 8760."""

from __future__ import annotations

import hashlib
import hmac
import re

from core.errors import BadRequest
from core.sip import tokens
from core.sip.message import address_of

ALGORITHMS: tuple[str, ...] = ("MD5", "SHA-256")

# Digest algorithm token -> hashlib name.
_HASHES = {"MD5": "md5", "SHA-256": "sha256"}

# One auth-param: token "=" (token / quoted-string), then a comma or the end (RFC 7616 §3.3).
# Empty list elements (", ,") are allowed by the #rule of RFC 7230 §7.
_PARAM = re.compile(
    r'[\s,]*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)',
    re.DOTALL,
)
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def _hash(algorithm: str, text: str) -> str:
    return hashlib.new(_HASHES[algorithm], text.encode()).hexdigest()


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def algorithm_of(params: dict[str, str]) -> str | None:
    """The canonical algorithm named in parsed digest params (MD5 if absent); None if unknown."""
    name = params.get("algorithm", "MD5").upper()
    return name if name in _HASHES else None


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password) as hex; ValueError for an algorithm not in ALGORITHMS."""
    if algorithm not in _HASHES:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return _hash(algorithm, f"{username}:{realm}:{password}")


def user_ha1s(uri: str, realm: str, password: str) -> dict[str, str]:
    """Stored credentials: HA1 keyed "ALG:username" for the address and the bare user part."""
    address = address_of(uri)
    names = (address, address.partition("@")[0])
    return {
        f"{alg}:{name}": compute_ha1(alg, name, realm, password)
        for alg in ALGORITHMS
        for name in names
    }


def make_nonce() -> str:
    """A fresh unguessable nonce (192 bits, URL-safe text)."""
    return tokens.token_urlsafe(24)


def challenge(realm: str, nonce: str, algorithm: str, *, opaque: str = "") -> str:
    """A WWW-Authenticate value offering qop=auth with one algorithm."""
    if algorithm not in _HASHES:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    value = (
        f'Digest realm={_quote(realm)}, nonce={_quote(nonce)}, qop="auth", algorithm={algorithm}'
    )
    if opaque:
        value += f", opaque={_quote(opaque)}"
    return value


def parse_digest(value: str) -> dict[str, str]:
    """Params of a Digest challenge or credentials, keys lower-cased; BadRequest if malformed."""
    words = value.split(None, 1)
    if not words or words[0].lower() != "digest":
        raise BadRequest("not a Digest credential")
    rest = words[1].rstrip(" \t,") if len(words) > 1 else ""
    params: dict[str, str] = {}
    pos, end = 0, len(rest)
    while pos < end:
        found = _PARAM.match(rest, pos)
        if found is None or found.end() == pos:
            raise BadRequest("malformed Digest parameters")
        key = found.group(1).lower()
        quoted = found.group(2)
        if key in params:
            raise BadRequest(f"repeated Digest parameter {key}")
        params[key] = _ESCAPED.sub(r"\1", quoted) if quoted is not None else found.group(3)
        pos = found.end()
    return params


def _response(
    algorithm: str, ha1: str, nonce: str, method: str, uri: str, qop: str, nc: str, cnonce: str
) -> str:
    ha2 = _hash(algorithm, f"{method}:{uri}")
    if qop:
        return _hash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _hash(algorithm, f"{ha1}:{nonce}:{ha2}")  # RFC 2069 compatibility


def verify(params: dict[str, str], method: str, ha1: str, *, nonce: str) -> bool:
    """True when the credentials answer our nonce for this method with the given HA1.

    The caller picks ``ha1`` by ``algorithm_of(params)`` and the username, and tracks nc.
    """
    algorithm = algorithm_of(params)
    given_nonce = params.get("nonce")
    response = params.get("response")
    uri = params.get("uri")
    if algorithm is None or given_nonce is None or response is None or uri is None:
        return False
    # Compare bytes: compare_digest rejects non-ASCII str, and these values come from the peer.
    if not hmac.compare_digest(given_nonce.encode(), nonce.encode()):
        return False
    qop = params.get("qop", "")
    nc = params.get("nc", "")
    cnonce = params.get("cnonce", "")
    if qop and (qop != "auth" or not nc or not cnonce):
        return False  # auth-int would need the body hash; we only offer auth
    expected = _response(algorithm, ha1, nonce, method, uri, qop, nc, cnonce)
    return hmac.compare_digest(expected.encode(), response.lower().encode())


def authorization(
    challenge_value: str,
    method: str,
    uri: str,
    username: str,
    password: str,
    *,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """Client side: the Authorization value answering one WWW-Authenticate challenge."""
    params = parse_digest(challenge_value)
    algorithm = algorithm_of(params)
    realm = params.get("realm")
    nonce = params.get("nonce")
    if algorithm is None or realm is None or nonce is None:
        raise BadRequest("unusable Digest challenge")
    offered = [item.strip() for item in params.get("qop", "").split(",") if item.strip()]
    if offered and "auth" not in offered:
        raise BadRequest("Digest challenge offers no qop=auth")
    qop = "auth" if offered else ""
    nc_text = f"{nc:08x}"
    cnonce = cnonce if cnonce is not None else tokens.token_hex(8)
    ha1 = compute_ha1(algorithm, username, realm, password)
    response = _response(algorithm, ha1, nonce, method, uri, qop, nc_text, cnonce)
    parts = [
        f"Digest username={_quote(username)}",
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
        f"algorithm={algorithm}",
    ]
    if qop:
        parts += [f"qop={qop}", f"nc={nc_text}", f"cnonce={_quote(cnonce)}"]
    if "opaque" in params:
        parts.append(f"opaque={_quote(params['opaque'])}")
    return ", ".join(parts)
