"""Downloads for the local engines: Maven Central artifacts and plugin zips, streamed into a
cache once and checked against a pinned sha256 or Maven's .sha1."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from esrank.core.errors import EngineError

# Checksums for artifacts whose Maven .sha1 is not always served.
PINNED_SHA256 = {
    "opensearch-3.6.0.zip": "a91faa1dc1cadc78cb278b4f63847e19e1627a4e9de698e14e7efc14ee37b286",
    "opensearch-knn-3.6.0.0.zip":
        "ac392ca28a39b3bf290648a422ef30cb149dda2963a9d7feb26060e932341c9a",
    "elasticsearch-8.18.6.zip":
        "879b27d04d9be553ae23d71beddd5ba2be117ee792d9376b4b84dfd24592a687",
}


@dataclass(frozen=True)
class MavenArtifact:
    """One Maven Central artifact (a zip)."""

    group: str
    name: str
    version: str

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}.zip"

    def url(self, repo: str) -> str:
        group = self.group.replace(".", "/")
        return f"{repo.rstrip('/')}/{group}/{self.name}/{self.version}/{self.filename}"


def download(artifact: MavenArtifact, cache: Path, repo: str, progress: bool = True) -> Path:
    """Fetch an artifact into the cache once, verified by a pinned sha256 or Maven's .sha1."""
    target = cache / artifact.filename
    if target.exists():
        return target
    url = artifact.url(repo)
    if artifact.filename in PINNED_SHA256:
        expected = ("sha256", PINNED_SHA256[artifact.filename])
    else:
        try:
            expected = ("sha1", read_url(url + ".sha1").decode().split()[0])
        except urllib.error.HTTPError as exc:
            raise EngineError("download", f"HTTP {exc.code} for {url}.sha1",
                              target=f"{artifact.group}:{artifact.name}:{artifact.version}",
                              status=exc.code) from exc
        except OSError as exc:
            raise EngineError("download", str(exc), target=url) from exc
    return download_url(url, target, expected, progress)


def download_url(url: str, target: Path, expected: tuple[str, str] | None,
                 progress: bool = True) -> Path:
    """Stream a URL to `target` (via a .part file), checking the (algorithm, hex) digest."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(".part")
    digest = hashlib.new(expected[0] if expected else "sha256")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, part.open("wb") as out:
            total = int(resp.headers.get("Content-Length") or 0)
            from tqdm import tqdm

            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name,
                      disable=not progress) as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        part.unlink(missing_ok=True)
        raise EngineError("download", f"HTTP {exc.code} for {url}", target=url,
                          status=exc.code) from exc
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise EngineError("download", str(exc), target=url) from exc
    if expected and digest.hexdigest() != expected[1]:
        part.unlink(missing_ok=True)
        raise EngineError("download", f"{expected[0]} mismatch (expected {expected[1]}, got "
                          f"{digest.hexdigest()})", target=url)
    part.rename(target)
    return target


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_url(url: str, timeout: float = 30) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()
