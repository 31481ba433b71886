"""Credentials for a cluster; repr never shows secrets."""

from __future__ import annotations

from dataclasses import dataclass, field


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
