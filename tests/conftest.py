"""Shared fixtures: the repository root, offline hub settings for every test."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def root() -> Path:
    "The repository root."
    return ROOT


# A skipped test is a check that did not run: `make test` fails on any skip (a missing packaged model, chromium,
# playwright or tensorboard must be installed, not silently passed over). FT_KIT_ALLOW_SKIPS=1 allows them.
_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped: _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED and not os.environ.get("FT_KIT_ALLOW_SKIPS") and exitstatus == 0:
        print(f"\n{len(_SKIPPED)} test(s) skipped, e.g. {_SKIPPED[:3]}: every check must run (install what the skip "
              "reason names; FT_KIT_ALLOW_SKIPS=1 allows skips)")
        session.exitstatus = 1
