"""Run the benchmarks: `python tests/benchmarks/run.py [NAME ...]` (all when no name is given).

Each bench_<name>.py writes tests/benchmarks/results/<name>.json and regenerates the table in
tests/benchmarks/results/README.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> int:
    available = {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}
    unknown = [n for n in names if n not in available]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available)}", file=sys.stderr)
        return 2
    failed = []
    for name in names or list(available):
        print(f"=== benchmark {name}", flush=True)
        if subprocess.run([sys.executable, str(available[name])]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
