"""State-dir size over many passes: is it bounded? (issue 14 item 5)

Runs the real reconciler (`Reconciler`, `StateStore`, real files in a temporary state dir, the same
`carry_over` of the counters that `--once --metrics-textfile` does, a fresh `Metrics()` each pass as cron
has) against the in-memory `FakeWorld`, N passes (default 10,000). Every pass changes something, so every
pass writes history, status, memory and counters; a pass deploys a new image tag to the idle color and
flips to it (a cutover), one in seven first has its marker deleted (a drift repair), and the images pile up
for pruning (`keepImages: 3`). The worst case for the state dir: a cron run that does nothing writes no history.

Prints the state dir's size (every file, rotated history included) at checkpoints, and what the history
alone would be without rotation (the bytes appended).

    .venv/bin/python bench/bench_state.py [-n 10000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.app.reconcile import Reconciler
from controller.kernel.logs import configure
from controller.spec.app import BlueGreenApp
from controller.store.counters import carry_over
from controller.store.metrics import Metrics
from controller.store.state import HISTORY_KEEP, HISTORY_MAX_BYTES, StateStore
from controller.world.fake import FakeImage, FakeWorld

TAGS = 40  # image tags cycled through: dialogue:0 .. dialogue:39


def spec(root: Path, tag: int, color: str) -> BlueGreenApp:
    return BlueGreenApp.model_validate({
        "apiVersion": "bluegreen/v1", "kind": "BlueGreenApp", "metadata": {"name": "dialogue"},
        "spec": {
            "image": f"dialogue:{tag}", "activeColor": color, "keepImages": 3,
            "healthCheck": {"intervalSeconds": 1, "timeoutSeconds": 10, "stableSeconds": 0},
            "marker": str(root / "run" / "active"), "nginx": {"upstreamFile": str(root / "nginx" / "dialogue.upstream.conf")},
        },
    })


def _stat(p: Path) -> tuple[int, int]:
    """(size, inode) of `p`, (0, 0) when missing."""
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return 0, 0
    return st.st_size, st.st_ino


def size(d: Path) -> tuple[int, int]:
    total = files = 0
    for dirpath, _dirs, names in os.walk(d):
        for n in names:
            total += os.lstat(os.path.join(dirpath, n)).st_size
            files += 1
    return total, files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10_000, help="passes (default %(default)s)")
    args = ap.parse_args()
    configure("console", level="error")
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        state = root / "state"
        world = FakeWorld(images={f"dialogue:{i}": FakeImage(created=float(i)) for i in range(TAGS)})
        app = spec(root, 0, "blue")
        world.include_paths.add(app.upstream_file)
        store = StateStore(state)
        checkpoints = sorted({1, 10, 100, 1000, 2000, 5000, args.n} | set(range(10_000, args.n + 1, 10_000)))
        appended = 0
        started = time.monotonic()
        print(f"history rotates at {HISTORY_MAX_BYTES} bytes, {HISTORY_KEEP} rotated files kept\n")
        print(f"{'passes':>8} {'state dir bytes':>16} {'files':>6} {'history bytes appended':>23} {'seconds':>8}")
        for i in range(1, args.n + 1):
            app = spec(root, i % TAGS, "green" if i % 2 else "blue")
            if i % 7 == 0:
                world.files.pop(app.marker_path, None)
            before = _stat(state / "history.jsonl")
            m = Metrics()
            r = Reconciler(world, store, m).reconcile(app)
            if r.result != "converged":
                print(f"pass {i}: {r.result}: {r.error}", file=sys.stderr)
                return 1
            carry_over(m, state)
            after = _stat(state / "history.jsonl")
            if after[1] == before[1]:
                appended += after[0] - before[0]
            else:  # rotated in this pass: the rest of the old file (now .1), and the new one
                appended += _stat(state / "history.jsonl.1")[0] - before[0] + after[0]
            if i in checkpoints:
                b, f = size(state)
                print(f"{i:>8} {b:>16} {f:>6} {appended:>23} {time.monotonic() - started:>8.1f}")
        print("\nfiles at the end:")
        for p in sorted(state.rglob("*")):
            if p.is_file():
                print(f"  {p.relative_to(state)}: {p.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
