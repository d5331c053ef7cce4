"""Runs one part of the benchmarks on its own: `python Benchmarks/<part>.py --help`."""

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_part(doc, add_arguments, run):
    """Parses the part's own options plus --bin-dir (default: the release build) and runs it."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", default=str(ROOT / ".build" / "release"))
    add_arguments(parser)
    args = parser.parse_args()
    run(args, Path(args.bin_dir).resolve())
