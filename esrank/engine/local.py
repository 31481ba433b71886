"""The embedded local engines: OpenSearch (LTR + k-NN; the default) and Elasticsearch (the o19s
LTR plugin), each a cluster of one node or more on its own ports, side by side.

A cluster of N nodes is N processes of one installation (esrank.engine.install). Node i
answers on `port + 10 i` (transport: `transport_port + 10 i`) and has its own config, data and
log folders under `<home>/engine`, named after the node. Node 0 may manage the cluster (with
3 nodes or more, the first three may, so that any one can fail); the others hold data only, so
killing one of them leaves the cluster running. Neither engine runs as root, so when esrank
runs as root the nodes run as the system user `esrank`, started with `runuser`.
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
from dataclasses import dataclass
from pathlib import Path

from esrank.core.errors import EngineError
from esrank.core.settings import NODE_STEP, LocalEngineSettings
from esrank.engine.downloads import download, read_url
from esrank.engine.install import DISTRIBUTIONS, Installation, install, ltr_plugin, run
from esrank.engine.java import find_java

log = logging.getLogger(__name__)

ENGINE_USER = "esrank"
DEFAULT_PORTS = {f: getattr(LocalEngineSettings(), f).port for f in DISTRIBUTIONS}


@dataclass(frozen=True)
class LocalEngine(Installation):
    """Where and how one local cluster runs; see `up`, `down`, `status`, `stop_node`."""

    port: int = 9200
    transport_port: int = 9300
    nodes: int = 1
    heap: str = "1g"
    startup_timeout: float = 180.0

    @property
    def url(self) -> str:
        return self.node(0).url

    @property
    def urls(self) -> list[str]:
        """Every node's URL: what a client given several hosts is pointed at."""
        return [node.url for node in self.members]

    @property
    def members(self) -> list[Node]:
        """Its nodes, in order."""
        return [Node(self, i) for i in range(self.nodes)]

    @property
    def managers(self) -> list[int]:
        """The nodes that may manage the cluster: the first three, or the first alone when
        two nodes could not keep a majority after losing one."""
        return list(range(min(self.nodes, 3))) if self.nodes >= 3 else [0]

    def node(self, number: int) -> Node:
        if not 0 <= number < self.nodes:
            raise EngineError("engine", f"no node {number}: the {self.flavor} cluster has "
                              f"{self.nodes} (0..{self.nodes - 1})", target=self.flavor)
        return Node(self, number)


@dataclass(frozen=True)
class Node:
    """One node of a local cluster: its ports and its files."""

    engine: LocalEngine
    number: int

    @property
    def port(self) -> int:
        return self.engine.port + NODE_STEP * self.number

    @property
    def transport_port(self) -> int:
        return self.engine.transport_port + NODE_STEP * self.number

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        """The node's name, which its files carry: the flavor alone for the default node."""
        e = self.engine
        return e.flavor if self.port == DEFAULT_PORTS[e.flavor] else f"{e.flavor}-{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.engine.home / "engine" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.engine.home / "engine" / f"{self.name}.out"

    @property
    def conf_dir(self) -> Path:
        return self.engine.home / "engine" / f"conf-{self.name}"

    @property
    def logs_dir(self) -> Path:
        return self.engine.home / "engine" / f"logs-{self.name}"


# ---------------------------------------------------------------------------------------------
# up / down / status


def up(engine: LocalEngine, progress: bool = True) -> dict:
    """Download (cached), install and start the nodes that are not running; idempotent; waits
    until every node has joined and the cluster is green."""
    started = time.monotonic()
    missing = [n for n in engine.members if not _running_pid(n)]
    if missing:
        installed, java_home = _installed(engine, progress)
        for node in missing:
            if _http_ok(node.url):
                raise EngineError("engine up", f"something else already answers on {node.url}; "
                                  "stop it, pick another port (--port, or ESRANK_ENGINE__"
                                  f"{engine.flavor.upper()}__PORT), or point ESRANK_URL at it",
                                  target=node.url)
            _write_config(node, installed)
        _chown_for_engine(engine)
        for node in missing:
            _start(node, java_home)
    _wait_green(engine)
    info = {**status(engine), "started": bool(missing)}
    if missing:
        info["start_seconds"] = round(time.monotonic() - started, 1)
        info["started_nodes"] = [n.name for n in missing]
    return info


def _installed(engine: LocalEngine, progress: bool) -> tuple[str, Path]:
    """Install (or find installed) the distribution and plugins: (the plugin set, the JDK)."""
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
        return (engine.install_dir / ".esrank-installed").read_text(), java_home
    wanted = install(engine, [*zips, ltr], java_home)
    engine.plugin_record.write_text(json.dumps(plugin, indent=2) + "\n")
    return wanted, java_home


def down(engine: LocalEngine, timeout: float = 60.0) -> bool:
    """Stop the nodes this tool started (by their pid files), the managing nodes last;
    returns False if none was running."""
    nodes = sorted(engine.members,
                   key=lambda n: (n.number in engine.managers, -n.number))
    return any([stop_node(node, timeout=timeout) for node in nodes])


def stop_node(node: Node, *, kill: bool = False, timeout: float = 60.0) -> bool:
    """Stop one node (`kill`: SIGKILL at once, as a crash would); False if it was not
    running. `up` starts it again."""
    pid = _running_pid(node)
    if not pid:
        node.pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        log.warning("engine pid %d ignored SIGTERM for %.0fs; killing it", pid, timeout)
        os.kill(pid, signal.SIGKILL)
    node.pid_file.unlink(missing_ok=True)
    return True


def status(engine: LocalEngine) -> dict:
    """What runs where: flavor, url, health, version, plugins, the LTR plugin's source and
    each node (when up)."""
    nodes = [{"name": n.name, "url": n.url, "pid": _running_pid(n),
              "manager": n.number in engine.managers}
             for n in engine.members]
    live = [n for n in nodes if n["pid"]]
    info: dict = {"flavor": engine.flavor, "url": engine.url, "running": bool(live),
                  "pid": nodes[0]["pid"], "install_dir": str(engine.install_dir),
                  "version": engine.version}
    if engine.nodes > 1:
        info["nodes"] = nodes
    if live:
        url = live[0]["url"]
        try:
            health = _get_json(f"{url}/_cluster/health")
            info["health"] = health["status"]
            if engine.nodes > 1:
                info["nodes_joined"] = health["number_of_nodes"]
            info["plugins"] = sorted({p["component"] for p in
                                      _get_json(f"{url}/_cat/plugins?format=json")})
        except (OSError, ValueError, KeyError) as exc:
            info["health"] = f"unreachable ({exc})"
        if engine.plugin_record.is_file():
            info["ltr_plugin"] = json.loads(engine.plugin_record.read_text())
    return info


# ---------------------------------------------------------------------------------------------
# config


def _write_config(node: Node, installed: str) -> None:
    """The node's own config folder: the installation's, with its yml."""
    engine, dist = node.engine, node.engine.distribution
    # One data folder per plugin set: indices a plugin created (e.g. the LTR store) cannot be
    # opened by a node without that plugin, and switching back must find them intact.
    tag = hashlib.sha256(installed.encode()).hexdigest()[:8]
    data = engine.home / "engine" / f"data-{node.name}-{engine.version}-{tag}"
    for folder in (data, node.logs_dir):
        folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(engine.install_dir / "config", node.conf_dir, dirs_exist_ok=True)
    lines = [f"cluster.name: esrank-local-{engine.node(0).name}", f"node.name: {node.name}",
             "network.host: 127.0.0.1",
             f"http.port: {node.port}",
             f"transport.port: {node.transport_port}",
             f"path.data: {data}", f"path.logs: {node.logs_dir}",
             "cluster.routing.allocation.disk.threshold_enabled: false"]
    if engine.nodes == 1:
        lines.append("discovery.type: single-node")
    else:
        seeds = [f"127.0.0.1:{n.transport_port}" for n in engine.members]
        managers = [engine.node(i).name for i in engine.managers]
        roles = ([dist.manager_role] if node.number in engine.managers else []) + \
            ["data", "ingest"]
        lines += [f"discovery.seed_hosts: {json.dumps(seeds)}",
                  f"{dist.initial_managers}: {json.dumps(managers)}",
                  f"node.roles: {json.dumps(roles)}"]
    (node.conf_dir / f"{engine.flavor}.yml").write_text(
        "# written by esrank engine up\n" + "\n".join(lines) + "\n" + dist.config)


def _chown_for_engine(engine: LocalEngine) -> None:
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(ENGINE_USER)
    except KeyError:
        run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
              ENGINE_USER], None, f"create user {ENGINE_USER}")
    user = pwd.getpwnam(ENGINE_USER)
    for path in [engine.home, engine.home / "engine"]:
        path.chmod(path.stat().st_mode | 0o755)
    for root, dirs, files in os.walk(engine.home / "engine"):
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid, follow_symlinks=False)
    os.chown(engine.home / "engine", user.pw_uid, user.pw_gid)


# ---------------------------------------------------------------------------------------------
# process


def _start(node: Node, java_home: Path) -> int:
    engine, dist = node.engine, node.engine.distribution
    node.pid_file.unlink(missing_ok=True)
    env = {dist.java_env: str(java_home), dist.opts_env: f"-Xms{engine.heap} -Xmx{engine.heap}",
           dist.conf_env: str(node.conf_dir), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    cmd = [str(engine.install_dir / "bin" / engine.flavor), "-d", "-p", str(node.pid_file)]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", ENGINE_USER, "--", "env",
               *[f"{k}={v}" for k, v in env.items()], *cmd]
    node.log_file.parent.mkdir(parents=True, exist_ok=True)
    # The daemon inherits our stdio: give it a file, never a pipe we would wait on forever.
    with node.log_file.open("ab") as out:
        result = subprocess.run(cmd, env={**os.environ, **env}, stdout=out, stderr=out,
                                start_new_session=True)
    if result.returncode != 0:
        raise EngineError("engine up", f"{dist.product} did not start (exit {result.returncode})"
                          f"{_log_tail(node)}", target=str(engine.install_dir))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pid = _running_pid(node)
        if pid:
            return pid
        time.sleep(0.2)
    raise EngineError("engine up", f"no pid file appeared{_log_tail(node)}",
                      target=str(node.pid_file))


def _wait_green(engine: LocalEngine) -> None:
    """Wait until every node runs, has joined, and the cluster is green."""
    deadline = time.monotonic() + engine.startup_timeout
    last = "no answer yet"
    nodes = engine.members
    while time.monotonic() < deadline:
        for node in nodes:
            if not _running_pid(node):
                raise EngineError("engine up", f"{engine.distribution.product} node "
                                  f"{node.name} is not running{_log_tail(node)}",
                                  target=node.url)
        try:
            health = _get_json(f"{engine.url}/_cluster/health?wait_for_status=green"
                               f"&wait_for_nodes={engine.nodes}&timeout=2s")
            if health.get("status") == "green" and not health.get("timed_out"):
                return
            last = f"health {health.get('status')}, {health.get('number_of_nodes')} nodes"
        except (OSError, ValueError) as exc:
            last = str(exc)
            time.sleep(1)
    raise EngineError("engine up", f"not green with {engine.nodes} node(s) after "
                      f"{engine.startup_timeout:.0f}s ({last}){_log_tail(nodes[-1])}",
                      target=engine.url)


def _running_pid(node: Node) -> int | None:
    try:
        pid = int(node.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not _alive(pid):
        return None
    try:  # a recycled pid belongs to some other program: never signal it
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None
    return pid if str(node.engine.install_dir) in cmdline else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def _log_tail(node: Node, lines: int = 15) -> str:
    logs = sorted(node.logs_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
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
