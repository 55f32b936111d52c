"""Headless Chromium from Debian's packages (`chromium`, `chromium-driver`) driven by Selenium.

No browser is ever downloaded: the driver is /usr/bin/chromedriver and the browser
/usr/bin/chromium (`make test` installs both via tools/debian-packages.sh).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.processes import die_with_parent

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1000",
)


def available() -> str | None:
    """Why a browser test cannot run here, or None when it can."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        return f"missing {', '.join(missing)} (Debian packages chromium and chromium-driver: make test installs them)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (requirements-dev.txt)"
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """A fresh headless Chromium (its own profile directory), quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fleetrun-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = _dying_with_its_driver(CHROMIUM, Path(profile))
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    # chromedriver dies with the test process even when that is killed, and Chromium with it
    service = Service(executable_path=str(CHROMEDRIVER), popen_kw={"preexec_fn": die_with_parent})
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _dying_with_its_driver(binary: Path, directory: Path) -> str:
    """A launcher of `binary` that the kernel kills when its parent (chromedriver) dies: a
    killed driver would otherwise leave Chromium running. util-linux's `setpriv` sets the
    signal; without it, the bare binary."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return str(binary)
    launcher = directory / "chromium"
    launcher.write_text(f'#!/bin/sh\nexec {setpriv} --pdeathsig KILL {binary} "$@"\n')
    launcher.chmod(0o700)
    return str(launcher)
