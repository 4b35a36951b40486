"""Screenshot a report with headless Chromium (Debian package ``chromium``), e.g. for reports/example/:

    python -m robustseg.report.screenshot RUN_DIR/report.html screenshot.png [--width 1280] [--height 3000]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import RobustsegError

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def screenshot(html: str | Path, png: str | Path, width: int = 1280, height: int = 3000) -> Path:
    exe = os.environ.get("ROBUSTSEG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        raise RobustsegError("chromium not found (Debian: apt-get install -y chromium)")
    png = Path(png).resolve()
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile: nothing read from or left in $HOME
        subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={png}", Path(html).resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    return png


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("html")
    ap.add_argument("png")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=3000)
    a = ap.parse_args()
    print(screenshot(a.html, a.png, a.width, a.height))
