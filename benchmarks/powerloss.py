"""Power loss, not just process death: random power cuts under prodigy on a lazyfs mount.

PRODIGY_HOME is a FUSE filesystem (tests/powerloss/lazyfs.py) that keeps a write only once the
file is fsync'd and a create, rename or unlink only once its directory is fsync'd. The power
is cut at random instants of `cook` and `resume` (setup, agents, reduce and the end alike),
everything is killed, the durable state is mounted again and checked, and the job resumed.
See tests/powerloss/powercut.py for the checks.

    sudo .venv/bin/python benchmarks/powerloss.py --cuts 200

Needs root, /dev/fuse, Debian's fuse3 and the `mfusepy` package (the dev extra). Prints the
table of cuts, where they landed, lost, repeated and unreadable; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "powerloss"))

from lazyfs import fuse_unavailable
from powercut import PowerCuts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cuts", type=int, default=200, help="power cuts in all (default 200)")
    parser.add_argument("--items", type=int, default=12, help="items per job (default 12)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    why = fuse_unavailable()
    if why is not None:
        print(f"error: cannot run: {why}.", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="prodigy-powerloss-"))
    cuts = PowerCuts(root, items=args.items, seed=args.seed)
    tally = cuts.run(args.cuts, progress=True)
    print(tally.table())
    for problem in [*tally.lost, *tally.repeated, *tally.unreadable, *tally.failures]:
        print(f"  - {problem}")
    print(f"(files kept in {root})" if args.keep else "", end="")
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0 if tally.ok else 1


if __name__ == "__main__":
    sys.exit(main())
