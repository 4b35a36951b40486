"""The report in a real browser: headless Chromium (Debian package ``chromium``; .ci/run installs it).

Checks that the page renders without console errors, that the headline numbers in the DOM equal metrics.csv,
that hostile category/suite/file names come out as text, and that it fits laptop and phone widths. Screenshots
go to $ROBUSTSEG_ARTIFACTS (or the test's tmp dir). A missing Chromium fails the test: CI must have it.
"""
import html
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import XSS_CAT, XSS_CAT2, XSS_FILE, XSS_SUITE, shared_report

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]


def chromium_binary() -> str:
    exe = os.environ.get("ROBUSTSEG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.fail("headless Chromium not found: install the Debian package (apt-get install -y chromium); "
                    "the browser test does not skip")
    return exe


def chromium(url: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """One headless Chromium run with a fresh profile; stderr carries the page's console messages."""
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run([chromium_binary(), *FLAGS, f"--user-data-dir={profile}", *args, url],
                          capture_output=True, text=True, timeout=120, check=True)


def console_problems(stderr: str) -> list[str]:
    """Console messages (any: the report has no scripts of its own) and uncaught errors logged by Chromium."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    d = Path(os.environ.get("ROBUSTSEG_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A hand-made run with every optional section and hostile names in its data (tests/report_fixtures.py)."""
    return shared_report(tmp_path_factory)


class Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.metrics, self.elements, self.text, self._open = {}, [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.elements.append((tag, a))
        if "data-metric" in a:
            self._open = [a["data-metric"], ""]

    def handle_endtag(self, tag):
        if self._open and tag == "td":
            self.metrics[self._open[0]] = self._open[1].strip()
            self._open = None

    def handle_data(self, data):
        self.text.append(data)
        if self._open:
            self._open[1] += data


def test_report_renders_in_chromium(report, tmp_path, artifacts):
    res = chromium(report.as_uri(), tmp_path, "--dump-dom")
    assert not console_problems(res.stderr), console_problems(res.stderr)
    dom = Dom()
    dom.feed(res.stdout)
    # the headline numbers the browser shows are those of metrics.csv
    m = pd.read_csv(report.parent / "metrics.csv")
    for t in ("bbox", "segm"):
        ap = m[(m.metric == "AP") & (m.iou_type == t)]
        clean = ap[ap.attack == "clean"].value.item()
        worst = ap[~ap.attack.isin(["clean", "random"]) & ~ap.attack.str.startswith(("probe-", "patch-"))].value.min()
        assert dom.metrics[f"{t}-clean-AP"] == f"{clean:.3f}"
        assert dom.metrics[f"{t}-worst-AP"] == f"{worst:.3f}"
        assert dom.metrics[f"{t}-drop-AP"] == f"{clean - worst:.3f}"
    # hostile names are text nodes, never elements: no script at all, no <img src=x>, no <b onmouseover>
    text = "".join(dom.text)
    for s in (XSS_CAT, XSS_CAT2, XSS_SUITE, XSS_FILE):
        assert s in text, s
    assert not [e for e in dom.elements if e[0] == "script" or e[1].get("src") == "x" or "onmouseover" in e[1]
                or "onerror" in e[1]]
    # self-contained: every image is inline
    assert all(a["src"].startswith("data:image/png;base64,") for tag, a in dom.elements if tag == "img")
    shot = artifacts / "report-laptop.png"
    chromium(report.as_uri(), tmp_path, "--window-size=1280,2400", f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000


@pytest.mark.parametrize("width", [360, 1280])
def test_report_fits_phone_and_laptop_widths(report, tmp_path, artifacts, width):
    """The page never scrolls sideways (wide tables scroll inside their own box). Chromium's headless window
    is at least 500 px wide, so the report is measured inside an iframe of the target width."""
    wrapper = tmp_path / f"frame-{width}.html"
    wrapper.write_text(
        f'<!doctype html><body style="margin:0"><iframe id="f" style="width:{width}px;height:2400px;border:0" '
        f'srcdoc="{html.escape(report.read_text(), quote=True)}"></iframe><script>'
        "const f = document.getElementById('f'); f.addEventListener('load', () => document.body.setAttribute("
        "'data-overflow', f.contentDocument.documentElement.scrollWidth - f.contentDocument.documentElement"
        ".clientWidth));</script></body>")
    res = chromium(wrapper.as_uri(), tmp_path, "--dump-dom")
    assert not console_problems(res.stderr), console_problems(res.stderr)
    overflow = re.search(r'data-overflow="(-?\d+)"', res.stdout)
    assert overflow, "the measuring script did not run"
    assert int(overflow.group(1)) <= 0, f"page is {overflow.group(1)} px wider than a {width} px screen"
    if width < 500:
        shot = artifacts / "report-phone.png"
        chromium(wrapper.as_uri(), tmp_path, f"--window-size={width},2400", f"--screenshot={shot}")
        assert shot.stat().st_size > 10_000


def test_console_error_detection_is_not_vacuous(tmp_path):
    """The console check above would see an error: a page that logs one and throws is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<!doctype html><script>console.error('boom'); throw new Error('kaboom')</script>")
    problems = console_problems(chromium(page.as_uri(), tmp_path, "--dump-dom").stderr)
    assert any("boom" in p for p in problems) and any("Uncaught" in p for p in problems)
