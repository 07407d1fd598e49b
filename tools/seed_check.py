"""Run a chapter with other seeds: every check in it must still pass.

Each chapter names its seed once, in a line ``SEED = 0`` (every model and data seed in it is
``SEED`` or ``SEED + k``), and its setup cell calls ``companion.seed_everything(0)``. This tool
rewrites both to another seed, executes the chapter in a temporary folder, and reports whether
it ran to the end (an ``assert`` that fails stops it). Nothing is compared with the stored
outputs: the digits change with the seed, the verdicts must not.

    python tools/seed_check.py book/03_loss_vs_accuracy.md --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import jupytext
from nbclient.exceptions import CellExecutionError
from sync_notebooks import execute  # the kernel and settings `make sync` runs chapters with


def with_seed(text: str, seed: int) -> str:
    """The chapter source ``text`` with its seed replaced by ``seed``."""
    text, found = re.subn(r"^SEED = 0\b", f"SEED = {seed}", text, flags=re.MULTILINE)
    if found != 1:
        raise SystemExit(f"expected exactly one line 'SEED = 0' in the chapter, found {found}")
    return re.sub(r"seed_everything\(0\)", f"seed_everything({seed})", text)


def run(source: Path, seed: int) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / source.name
        copy.write_text(with_seed(source.read_text(), seed))
        try:
            execute(jupytext.read(copy), Path(folder))
        except CellExecutionError as error:
            lines = [line for line in str(error).splitlines() if line.strip()]
            return False, "\n    ".join(lines[-3:])
    return True, "every check passed"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a chapter's .md source")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args(argv)
    failed = 0
    for seed in args.seeds:
        start = time.perf_counter()
        ok, message = run(args.source, seed)
        failed += not ok
        print(f"{args.source.name} SEED={seed}: {'pass' if ok else 'FAIL'} "
              f"({time.perf_counter() - start:.0f} s) {message}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
