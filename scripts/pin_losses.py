"""Regenerate tests/models/pinned_losses.json, the pins of tests/models/test_pinned_losses.py.

Run it only after a deliberate change of what training computes, and say in the commit
why the losses moved; a pin that moved by itself is what the test is there to catch.
With ``--check`` it writes nothing and prints how far each method is from its pins.

    python scripts/pin_losses.py [--check] [--methods dep_sae,pplug]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package

from tests.models.test_pinned_losses import METHODS, PINNED, off_pins, training_losses  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the pins instead of writing them")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    args = parser.parse_args()
    methods = args.methods.split(",")
    pins = json.loads(PINNED.read_text()) if PINNED.is_file() else {}
    failed = False
    with tempfile.TemporaryDirectory() as cache_dir:
        for method in methods:
            losses = training_losses(method, cache_dir)
            if args.check:
                off = off_pins(losses, pins.get(method, []))
                failed |= bool(off)
                print(f"{method}: {'matches its pins' if not off else 'OFF'}", *off, sep="\n  ")
            pins[method] = losses
    if not args.check:
        PINNED.write_text(json.dumps({m: pins[m] for m in METHODS if m in pins}, indent=1) + "\n")
        print(f"wrote {PINNED}")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
