"""Credentials for a cluster; repr never shows secrets, and neither do URLs in messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit


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


def redact(url: str) -> str:
    """The URL without the password it may carry (https://user:***@host:9200)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def scrub(text: str, url: str) -> str:
    """`text` with `url`'s password replaced, wherever it appears."""
    password = urlsplit(url).password
    return text.replace(url, redact(url)).replace(password, "***") if password else text
