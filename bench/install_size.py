"""Install size and start-up of the edge and central installs, each in a fresh virtualenv.

    python bench/install_size.py                  # both, in a temporary directory
    python bench/install_size.py --flavor edge    # only `pip install .`
    python bench/install_size.py --keep /tmp/sz   # keep the virtualenvs there
    python bench/install_size.py --json           # one JSON object instead of the table

edge is ``pip install .`` (what a device carries), central is ``pip install '.[central]'``. Sizes
are disk usage (allocated blocks, like ``du``) in MB of 2^20 bytes, for the whole virtualenv and
per installed distribution (the files its RECORD lists, bytecode and bundled ``.libs`` included).
Start-up is the best of five wall-clock runs of ``fieldcap --version`` and ``fieldcap --help``.
pip's cache is used, so a second run does not download again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1 << 20
FLAVORS = {"edge": ".", "central": ".[central]"}

# Run inside the new virtualenv: disk usage per installed distribution, from its RECORD.
PER_DIST = r"""
import json, os, sys
from importlib import metadata
site = sys.prefix
out = {}
for dist in metadata.distributions():
    total = 0
    for f in dist.files or ():
        p = f.locate()
        try:
            st = os.stat(p)
        except OSError:
            continue
        total += st.st_blocks * 512
    out[dist.metadata["Name"]] = total
print(json.dumps(out))
"""


def disk_usage(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(Path(dirpath) / name).st_blocks * 512
            except OSError:
                continue
    return total


def best_of(argv: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return min(times)


def build(flavor: str, where: Path, python: str) -> dict[str, object]:
    venv = where / flavor
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "-q", "--disable-pip-version-check"]
    t0 = time.perf_counter()
    subprocess.run([*pip, "install", FLAVORS[flavor]], check=True, cwd=ROOT)
    install_s = time.perf_counter() - t0
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", PER_DIST], check=True, capture_output=True, text=True)
    per_dist = json.loads(probe.stdout)
    fieldcap = str(venv / "bin" / "fieldcap")
    return {
        "flavor": flavor,
        "spec": FLAVORS[flavor],
        "venv_mb": round(disk_usage(venv) / MB, 1),
        "install_s": round(install_s, 1),
        "version_s": round(best_of([fieldcap, "--version"]), 3),
        "help_s": round(best_of([fieldcap, "--help"]), 3),
        "packages_mb": {k: round(v / MB, 1) for k, v in sorted(per_dist.items(), key=lambda kv: -kv[1])},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flavor", choices=[*FLAVORS, "both"], default="both")
    ap.add_argument("--keep", type=Path, help="build the virtualenvs here and keep them (default: a temp dir)")
    ap.add_argument("--python", default=sys.executable, help="the interpreter the virtualenvs are made from")
    ap.add_argument("--top", type=int, default=12, help="how many of the biggest packages to list")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    flavors = list(FLAVORS) if args.flavor == "both" else [args.flavor]
    with tempfile.TemporaryDirectory(prefix="fieldcap-size-") as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        results = [build(f, where, args.python) for f in flavors]
    if args.json:
        print(json.dumps({"python": sys.version.split()[0], "results": results}, indent=2))
        return 0
    for r in results:
        pkgs: dict[str, float] = r["packages_mb"]  # type: ignore[assignment]
        print(f"== {r['flavor']} (pip install '{r['spec']}'): {r['venv_mb']} MB, installed in {r['install_s']} s")
        print(f"   start-up: fieldcap --version {r['version_s']} s, fieldcap --help {r['help_s']} s")
        for name, size in list(pkgs.items())[: args.top]:
            print(f"   {size:8.1f} MB  {name}")
        rest = sum(list(pkgs.values())[args.top :])
        print(f"   {rest:8.1f} MB  the other {max(0, len(pkgs) - args.top)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
