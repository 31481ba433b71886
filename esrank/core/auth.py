"""Credentials for a cluster or an endpoint; repr never shows secrets, and neither do URLs in
messages."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit, urlunsplit

from esrank.core.errors import ConfigError

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class Auth:
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    ca_certs: str | None = None
    verify_certs: bool = True

    @property
    def basic(self) -> tuple[str, str] | None:
        return (self.username, self.password or "") if self.username else None

    def header(self, key_scheme: str) -> dict[str, str]:
        """The Authorization header for an HTTP client that takes none of these settings:
        the API key under `key_scheme` ("ApiKey", "Bearer"), else basic auth; {} for none."""
        if self.api_key:
            return {"Authorization": f"{key_scheme} {self.api_key}"}
        if self.basic:
            token = base64.b64encode(":".join(self.basic).encode()).decode()
            return {"Authorization": f"Basic {token}"}
        return {}


def redact(url: str) -> str:
    """`url` (or several, separated by commas) with the credentials it may carry hidden, with
    or without a scheme: user:password@ shows as user:***@, a username alone (often a token)
    as ***@.

    >>> redact("https://elastic:hunter2@host:9200"), redact("TOKEN@host:9200")
    ('https://elastic:***@host:9200', '***@host:9200')

    Everything before the last "@" counts as credentials, so a password with a raw "/" or "@"
    stays hidden (an "@" in a path hides more than it needs to, never less)."""
    if "," in url:
        return ",".join(map(redact, url.split(",")))
    start = m.end() if (m := _SCHEME.match(url)) else 0
    at = url.rfind("@")
    if at < start:
        return url
    user, colon, _ = url[start:at].partition(":")
    return f"{url[:start]}{user + ':***' if colon else '***'}@{url[at + 1:]}"


def url_problem(url: str) -> str | None:
    """Why `url` cannot address a cluster or an endpoint, or None: it needs http:// or
    https://, a host, and a port (if any) in 1-65535."""
    try:
        parts = urlsplit(url)
        if parts.port == 0:
            raise ValueError("port 0")
    except ValueError:  # a port that is no number or out of range, a broken [IPv6] host
        return "has no valid host and port (a port is a number in 1-65535)"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "needs http:// or https:// before the host"
    if not parts.hostname:
        return "has no host"
    if parts.password is not None and not parts.username:
        return "has a password but no username"
    return None


def hosts(url: str) -> list[str]:
    """The URLs of a cluster given as one, or several separated by commas."""
    return [u.strip() for u in url.split(",") if u.strip()]


def split_hosts(url: str, auth: Auth | None = None) -> tuple[list[str], Auth]:
    """`split_credentials` for a cluster given by several URLs (separated by commas): the URLs
    without credentials and the one `auth` they carry (they must agree)."""
    found = [split_credentials(u, auth) for u in hosts(url)]
    if not found:
        raise ConfigError("no URL given")
    if len({a for _, a in found}) > 1:
        raise ConfigError(f"the URLs {redact(url)} carry different credentials: give them once, "
                          "as ESRANK_USERNAME/ESRANK_PASSWORD or ESRANK_API_KEY")
    return [u for u, _ in found], found[0][1]


def split_credentials(url: str, auth: Auth | None = None) -> tuple[str, Auth]:
    """`url` without the credentials it carries, and `auth` with them as basic auth:
    user:password@, or a username alone with an empty password (as curl reads it).

    >>> split_credentials("https://elastic:hunter2@host:9200")
    ('https://host:9200', Auth(username='elastic', ca_certs=None, verify_certs=True))

    Raises ConfigError (showing the URL redacted) for a URL that `url_problem` refuses, and
    for credentials given both in the URL and in `auth`."""
    auth = auth or Auth()
    if problem := url_problem(url):
        raise ConfigError(f"the URL {redact(url)} {problem}")
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, auth
    if auth.username or auth.password or auth.api_key:
        raise ConfigError(f"the URL {redact(url)} carries credentials, and a username, password "
                          "or API key is set as well: give them one way")
    user, _, password = userinfo.partition(":")
    return (urlunsplit(parts._replace(netloc=host)),
            replace(auth, username=unquote(user), password=unquote(password)))
