"""Shared test set-up: the tests folder is importable (shared graphs for tests and their subprocesses)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
