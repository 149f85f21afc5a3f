"""Print how this environment's versions differ from a lock file (``nox -s latest``)."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(lock: str) -> int:
    locked = {}
    for line in Path(lock).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if match:
            locked[_canonical(match[1])] = match[2]
    changed = []
    for dist in metadata.distributions():
        name = _canonical(dist.metadata["Name"])
        if name in locked and locked[name] != dist.version.split("+")[0]:
            changed.append((name, locked[name], dist.version))
    if not changed:
        print(f"every installed package is at its version in {lock}")
        return 0
    print(f"{len(changed)} package(s) newer or older than {lock}:")
    for name, was, now in sorted(changed):
        print(f"  {name:30} {was:>14} -> {now}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
