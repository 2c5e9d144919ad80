"""Debian chromium under chromedriver for the browser tests: headless, offline, its own profile."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
INSTALLED = bool(shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER))
NOT_INSTALLED = "Debian chromium and chromium-driver are not installed (.ci/run installs them)"


def chrome(profile: Path, window: str, *, console_log: bool = False) -> webdriver.Chrome:
    """A headless Chrome with a fresh profile in `profile`; `console_log`: the page console is kept for get_log."""
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--window-size={window}", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    if console_log:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
