"""The embedded default engine: one local OpenSearch node with the LTR and k-NN plugins.

Everything comes from Maven Central and is cached under `<home>/downloads`; the node lives in
`<home>/engine/opensearch-<version>`. OpenSearch refuses to run as root, so when esrank runs as
root the node runs as the system user `esrank`, started with `runuser`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from esrank.errors import ConfigError, EngineError

log = logging.getLogger(__name__)

ENGINE_USER = "esrank"


@dataclass(frozen=True)
class Artifact:
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


@dataclass(frozen=True)
class LocalEngine:
    """Where and how the local node runs; see `up`, `down`, `status`."""

    home: Path
    version: str = "3.6.0"
    port: int = 9200
    heap: str = "1g"
    java_home: Path | None = None
    maven_repo: str = "https://repo1.maven.org/maven2"
    startup_timeout: float = 180.0
    ltr_plugin: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def install_dir(self) -> Path:
        return self.home / "engine" / f"opensearch-{self.version}"

    @property
    def pid_file(self) -> Path:
        return self.home / "engine" / "opensearch.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "engine" / "opensearch.out"

    def artifacts(self) -> list[Artifact]:
        """The distribution and k-NN, which must come; LTR is `ltr_artifact`."""
        return [
            Artifact("org.opensearch.distribution.integ-test-zip", "opensearch", self.version),
            Artifact("org.opensearch.plugin", "opensearch-knn", f"{self.version}.0"),
        ]

    @property
    def ltr_artifact(self) -> Artifact:
        return Artifact("org.opensearch", "ltr", f"{self.version}.0")


# Checksums for artifacts whose Maven .sha1 is not always served.
PINNED_SHA256 = {
    "opensearch-3.6.0.zip": "a91faa1dc1cadc78cb278b4f63847e19e1627a4e9de698e14e7efc14ee37b286",
    "opensearch-knn-3.6.0.0.zip":
        "ac392ca28a39b3bf290648a422ef30cb149dda2963a9d7feb26060e932341c9a",
}


# ---------------------------------------------------------------------------------------------
# up / down / status


def up(engine: LocalEngine, progress: bool = True) -> dict:
    """Download (cached), install and start the node; idempotent; waits for green health."""
    running = _running_pid(engine)
    if running:
        _wait_green(engine, running)
        return {**status(engine), "started": False}
    if _http_ok(engine.url):
        raise EngineError("engine up", f"something else already answers on {engine.url}; "
                          "stop it, pick another ESRANK_ENGINE__PORT, or point ESRANK_URL at it",
                          target=engine.url)
    java_home = find_java(engine.java_home)
    cache = engine.home / "downloads"
    zips = [download(a, cache, engine.maven_repo, progress) for a in engine.artifacts()]
    ltr = _ltr_zip(engine, cache, progress)
    install(engine, zips + ([ltr] if ltr else []), java_home)
    pid = _start(engine, java_home)
    _wait_green(engine, pid)
    return {**status(engine), "started": True}


def down(engine: LocalEngine, timeout: float = 60.0) -> bool:
    """Stop the node this tool started (by its pid file); returns False if none was running."""
    pid = _running_pid(engine)
    if not pid:
        engine.pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.5)
    if _alive(pid):
        log.warning("engine pid %d ignored SIGTERM for %.0fs; killing it", pid, timeout)
        os.kill(pid, signal.SIGKILL)
    engine.pid_file.unlink(missing_ok=True)
    return True


def status(engine: LocalEngine) -> dict:
    """What runs where: pid, url, health, version and plugins (when up)."""
    pid = _running_pid(engine)
    info: dict = {"url": engine.url, "running": bool(pid), "pid": pid,
                  "install_dir": str(engine.install_dir), "version": engine.version}
    if pid:
        try:
            info["health"] = _get_json(f"{engine.url}/_cluster/health")["status"]
            info["plugins"] = sorted({p["component"] for p in
                                      _get_json(f"{engine.url}/_cat/plugins?format=json")})
        except (OSError, ValueError, KeyError) as exc:
            info["health"] = f"unreachable ({exc})"
    return info


# ---------------------------------------------------------------------------------------------
# install


def _ltr_zip(engine: LocalEngine, cache: Path, progress: bool) -> Path | None:
    """The LTR plugin zip: the configured file/URL, else Maven Central; None if unobtainable."""
    source = engine.ltr_plugin
    if source and not source.startswith(("http://", "https://")):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ConfigError(f"ESRANK_ENGINE__LTR_PLUGIN={source}: no such file")
        return path
    artifact = engine.ltr_artifact
    try:
        if source:
            return download_url(source, cache / Path(source).name, None, progress)
        return download(artifact, cache, engine.maven_repo, progress)
    except EngineError as exc:
        if exc.status != 404:
            raise
        log.warning("the LTR plugin %s:%s:%s is not on %s; the engine starts without it. Set "
                    "ESRANK_ENGINE__LTR_PLUGIN to a plugin zip (path or URL) for OpenSearch %s",
                    artifact.group, artifact.name, artifact.version, engine.maven_repo,
                    engine.version)
        return None


def find_java(explicit: Path | None = None) -> Path:
    """A JDK >= 21 (OpenSearch 3.x needs it): the configured one, else the newest installed."""
    candidates = [explicit] if explicit else sorted(
        Path("/usr/lib/jvm").glob("*"), key=lambda p: _java_major(p) or 0, reverse=True)
    for home in candidates:
        if home and (_java_major(home) or 0) >= 21:
            return home
    raise ConfigError("OpenSearch 3.x needs a JDK 21 or newer: install one (e.g. Temurin) under "
                      "/usr/lib/jvm or set ESRANK_ENGINE__JAVA_HOME")


def _java_major(home: Path) -> int | None:
    release = home / "release"
    if not (home / "bin" / "java").exists() or not release.exists():
        return None
    for line in release.read_text().splitlines():
        if line.startswith("JAVA_VERSION="):
            version = line.split("=", 1)[1].strip('"')
            return int(version.split(".")[0])
    return None


def download(artifact: Artifact, cache: Path, repo: str, progress: bool = True) -> Path:
    """Fetch an artifact into the cache once, verified by a pinned sha256 or Maven's .sha1."""
    target = cache / artifact.filename
    if target.exists():
        return target
    url = artifact.url(repo)
    if artifact.filename in PINNED_SHA256:
        expected = ("sha256", PINNED_SHA256[artifact.filename])
    else:
        try:
            expected = ("sha1", _read_url(url + ".sha1").decode().split()[0])
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


def install(engine: LocalEngine, zips: list[Path], java_home: Path) -> None:
    """Unpack the distribution, check its modules, install the plugins, write the config."""
    marker = engine.install_dir / ".esrank-installed"
    wanted = "\n".join(sorted(z.name for z in zips))
    if marker.exists() and marker.read_text() == wanted:
        _write_config(engine, wanted)
        return
    if engine.install_dir.exists():
        shutil.rmtree(engine.install_dir)
    engine.install_dir.parent.mkdir(parents=True, exist_ok=True)
    distribution, plugin_zips = zips[0], zips[1:]
    with zipfile.ZipFile(distribution) as zf:
        top = zf.namelist()[0].split("/")[0]
        modules = {n.split("/")[2] for n in zf.namelist() if n.count("/") >= 3 and "/modules/" in n}
        missing = {"lang-painless", "lang-mustache"} - modules
        if missing:
            raise EngineError("engine install", f"OpenSearch {engine.version}'s integ-test zip "
                              f"lacks {sorted(missing)} (k-NN and LTR need them); use 3.5.0 or "
                              "newer", target=distribution.name)
        zf.extractall(engine.install_dir.parent / ".unpack")
    (engine.install_dir.parent / ".unpack" / top).rename(engine.install_dir)
    shutil.rmtree(engine.install_dir.parent / ".unpack")
    for script in (engine.install_dir / "bin").iterdir():
        script.chmod(0o755)
    _write_config(engine, wanted)
    env = {**os.environ, "OPENSEARCH_JAVA_HOME": str(java_home)}
    for plugin in plugin_zips:
        _run([str(engine.install_dir / "bin" / "opensearch-plugin"), "install", "--batch",
              plugin.resolve().as_uri()], env, f"install plugin {plugin.name}")
    marker.write_text(wanted)


def _write_config(engine: LocalEngine, installed: str) -> None:
    # One data folder per plugin set: indices a plugin created (e.g. the LTR store) cannot be
    # opened by a node without that plugin, and switching back must find them intact.
    tag = hashlib.sha256(installed.encode()).hexdigest()[:8]
    data = engine.home / "engine" / f"data-{engine.version}-{tag}"
    data.mkdir(parents=True, exist_ok=True)
    (engine.install_dir / "config" / "opensearch.yml").write_text(
        "# written by esrank engine up\n"
        "cluster.name: esrank-local\n"
        "node.name: esrank-local\n"
        "discovery.type: single-node\n"
        "network.host: 127.0.0.1\n"
        f"http.port: {engine.port}\n"
        f"path.data: {data}\n"
        "cluster.routing.allocation.disk.threshold_enabled: false\n"
    )


def _chown_for_engine(engine: LocalEngine) -> None:
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(ENGINE_USER)
    except KeyError:
        _run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
              ENGINE_USER], None, f"create user {ENGINE_USER}")
    user = pwd.getpwnam(ENGINE_USER)
    for path in [engine.home, engine.home / "engine"]:
        path.chmod(path.stat().st_mode | 0o755)
    for root, dirs, files in os.walk(engine.home / "engine"):
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid, follow_symlinks=False)
    os.chown(engine.home / "engine", user.pw_uid, user.pw_gid)


def _run(cmd: list[str], env: dict | None, what: str) -> None:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise EngineError("engine install", f"{what}: {(result.stderr or result.stdout)[-800:]}")


# ---------------------------------------------------------------------------------------------
# process


def _start(engine: LocalEngine, java_home: Path) -> int:
    _chown_for_engine(engine)
    engine.pid_file.unlink(missing_ok=True)
    env = {"OPENSEARCH_JAVA_HOME": str(java_home),
           "OPENSEARCH_JAVA_OPTS": f"-Xms{engine.heap} -Xmx{engine.heap}",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    cmd = [str(engine.install_dir / "bin" / "opensearch"), "-d", "-p", str(engine.pid_file)]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", ENGINE_USER, "--", "env",
               *[f"{k}={v}" for k, v in env.items()], *cmd]
    engine.log_file.parent.mkdir(parents=True, exist_ok=True)
    # The daemon inherits our stdio: give it a file, never a pipe we would wait on forever.
    with engine.log_file.open("ab") as out:
        result = subprocess.run(cmd, env={**os.environ, **env}, stdout=out, stderr=out,
                                start_new_session=True)
    if result.returncode != 0:
        raise EngineError("engine up", f"OpenSearch did not start (exit {result.returncode})"
                          f"{_log_tail(engine)}", target=str(engine.install_dir))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pid = _running_pid(engine)
        if pid:
            return pid
        time.sleep(0.2)
    raise EngineError("engine up", f"no pid file appeared{_log_tail(engine)}",
                      target=str(engine.pid_file))


def _wait_green(engine: LocalEngine, pid: int) -> None:
    deadline = time.monotonic() + engine.startup_timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not _alive(pid):
            raise EngineError("engine up", f"OpenSearch exited during startup{_log_tail(engine)}",
                              target=engine.url)
        try:
            health = _get_json(f"{engine.url}/_cluster/health?wait_for_status=green&timeout=2s")
            if health.get("status") == "green":
                return
            last = f"health {health.get('status')}"
        except (OSError, ValueError) as exc:
            last = str(exc)
            time.sleep(1)
    raise EngineError("engine up", f"not green after {engine.startup_timeout:.0f}s ({last})"
                      f"{_log_tail(engine)}", target=engine.url)


def _running_pid(engine: LocalEngine) -> int | None:
    try:
        pid = int(engine.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not _alive(pid):
        return None
    try:  # a recycled pid belongs to some other program: never signal it
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None
    return pid if str(engine.install_dir) in cmdline else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def _log_tail(engine: LocalEngine, lines: int = 15) -> str:
    logs = sorted((engine.install_dir / "logs").glob("*.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return ""
    tail = logs[-1].read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {logs[-1]} ---\n" + "\n".join(tail)


def _read_url(url: str, timeout: float = 30) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def _get_json(url: str) -> dict | list:
    return json.loads(_read_url(url, timeout=10))


def _http_ok(url: str) -> bool:
    try:
        _read_url(url, timeout=2)
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
