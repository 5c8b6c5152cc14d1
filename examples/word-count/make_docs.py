"""Write N small deterministic text documents into a folder (the word-count example's input)."""

import random
import sys
from pathlib import Path

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


def main() -> None:
    folder, count = Path(sys.argv[1]), int(sys.argv[2])
    folder.mkdir(exist_ok=True)
    rng = random.Random(7)
    for n in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(20, 400))]
        (folder / f"doc-{n:03d}.txt").write_text(" ".join(words) + "\n")


if __name__ == "__main__":
    main()
