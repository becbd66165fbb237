"""Watch mode (issue 4): being built."""

from __future__ import annotations

import argparse


def run_watch(args: argparse.Namespace) -> int:
    raise NotImplementedError
