"""Check the built book in a real browser: every page loads, every plotly figure renders (SVG), every local link
and anchor resolves, no script error, plotly.js comes from the site itself, and at a 1,400 px window no table or
figure (table, plotly figure, image) is wider than the article's content column.

    python scripts/check_site.py                      # the site in _build/html
    python scripts/check_site.py SITE --screenshots DIR

The site is served from a loopback HTTP server (like GitHub Pages) and each page is loaded by headless Chromium
(Debian: apt-get install chromium; or set $CHROMIUM). The server adds one script to every page it serves
(LAYOUT_SCRIPT): after the page has drawn, it opens every collapsed <details>, measures each table, plotly figure
and image against the content column and writes the measurements into the page, where the dumped DOM carries them
out. An element counts as too wide when its box or its scroll width (what a horizontally scrolling wrapper would
hide) passes the column's right edge. Exit status: 0 all good, 1 problems (one line each),
2 no Chromium found.
"""
import argparse
import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--enable-logging=stderr", "--v=0"]
SKIP_PAGES = {"genindex.html", "search.html"}
WINDOW = (1400, 2400)  # the window the layout is checked at (width, height in CSS px)
LAYOUT_TOLERANCE_PX = 1
LAYOUT_ID = "site-check-layout"
# measures every table / plotly figure / image of the article against its content box, once the page has drawn
LAYOUT_SCRIPT = """<script>(function () {
  function label(el) {
    var cap = el.tagName === "TABLE" && el.querySelector("caption");
    var fig = el.closest("figure");
    var text = (cap && cap.textContent) || (el.tagName === "IMG" && (el.alt || el.src)) ||
      (fig && fig.querySelector("figcaption") && fig.querySelector("figcaption").textContent) ||
      (el.classList.contains("plotly-graph-div") && el.querySelector(".gtitle") &&
       el.querySelector(".gtitle").textContent) ||
      (el.tagName === "TABLE" && "table with headers " +
       Array.from(el.querySelectorAll("th")).map(function (th) { return th.textContent.trim(); }).join(" ")) || "";
    return text.replace(/\\s+/g, " ").trim().slice(0, 70);
  }
  function measure() {
    var article = document.querySelector("article.bd-article") || document.querySelector("main") || document.body;
    var style = getComputedStyle(article), box = article.getBoundingClientRect();
    var left = box.left + parseFloat(style.paddingLeft), right = box.right - parseFloat(style.paddingRight);
    var items = [];
    article.querySelectorAll("table, div.plotly-graph-div, img").forEach(function (el) {
      var r = el.getBoundingClientRect();
      if (!r.width && !r.height) return;  // not displayed
      var width = Math.max(r.width, el.scrollWidth);
      items.push({kind: el.classList.contains("plotly-graph-div") ? "plotly" : el.tagName.toLowerCase(),
                  label: label(el), left: Math.round(r.left - left), width: Math.round(width)});
    });
    var out = document.createElement("pre");
    out.id = "%s"; out.hidden = true;
    out.textContent = JSON.stringify({window: window.innerWidth, column: Math.round(right - left), items: items});
    document.body.appendChild(out);
  }
  window.addEventListener("load", function () {
    document.querySelectorAll("details").forEach(function (d) { d.open = true; });
    window.dispatchEvent(new Event("resize"));  // plotly redraws figures that were hidden at the column's width
    setTimeout(measure, 1500);
  });
})();</script>""" % LAYOUT_ID
REPO_ROOT = Path(__file__).resolve().parents[1]


def find_chromium():
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() or shutil.which(explicit) else None
    return next((shutil.which(name) for name in CHROMIUM_NAMES if shutil.which(name)), None)


class PageParser(HTMLParser):
    """Collects element classes, ids, link targets and script sources of one HTML document."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.classes, self.ids, self.hrefs, self.scripts = [], set(), [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.classes.append((tag, (attrs.get("class") or "").split()))
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if attrs.get("name") and tag == "a":
            self.ids.add(attrs["name"])
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])
        if tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])


def parse(html):
    parser = PageParser()
    parser.feed(html)
    return parser


def figure_counts(dom):
    """(plotly figures on the page, figures plotly.js drew, SVG layers drawn) in a rendered DOM."""
    page = parse(dom)
    figures = sum(1 for tag, cls in page.classes if tag == "div" and "plotly-graph-div" in cls)
    drawn = sum(1 for tag, cls in page.classes if tag == "div" and "js-plotly-plot" in cls)
    svgs = sum(1 for tag, cls in page.classes if tag == "svg" and "main-svg" in cls)
    return figures, drawn, svgs


def html_pages(site):
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                  if not p.relative_to(site).parts[0].startswith("_") and p.name not in SKIP_PAGES)


@functools.lru_cache(maxsize=None)
def _ids_of(path):
    return frozenset(parse(Path(path).read_text(errors="replace")).ids)


def layout_of(dom):
    """The measurements LAYOUT_SCRIPT left in a rendered DOM ({window, column, items}), or None."""
    match = re.search(rf'<pre id="{LAYOUT_ID}"[^>]*>(.*?)</pre>', dom, re.S)
    return json.loads(html.unescape(match.group(1))) if match else None


def layout_problems(page, layout, tolerance=LAYOUT_TOLERANCE_PX):
    """One line per table, plotly figure or image that passes the content column's edges (``layout``: layout_of)."""
    if layout is None:
        return [f"{page}: no layout measurements (the page's script did not run)"]
    column = layout["column"]
    return [f"{page}: {item['kind']} '{item['label']}' is {item['width']} px wide, the content column {column} px"
            for item in layout["items"]
            if item["left"] < -tolerance or item["left"] + item["width"] > column + tolerance]


def link_problems(site, page, hrefs, page_ids):
    """Local links of ``page`` (relative to ``site``) whose file or anchor does not exist."""
    problems = []
    for href in dict.fromkeys(hrefs):
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:")):
            continue
        if not parts.path:  # same page
            if parts.fragment and unquote(parts.fragment) not in page_ids:
                problems.append(f"{page}: anchor {href} not found on the page")
            continue
        target = (site / page).parent / unquote(parts.path)
        if target.is_dir():
            target = target / "index.html"
        if not target.resolve().is_relative_to(site.resolve()) or not target.is_file():
            problems.append(f"{page}: link {href} -> missing file")
        elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in _ids_of(str(target)):
            problems.append(f"{page}: link {href} -> no anchor #{parts.fragment} in {target.name}")
    return problems


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the site; every HTML page gets LAYOUT_SCRIPT before its </body>."""

    def log_message(self, *args):
        pass

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            path = path / "index.html"
        if path.suffix != ".html" or not path.is_file():
            return super().send_head()
        text = path.read_text(errors="replace")
        at = text.rfind("</body>")
        body = (text[:at] + LAYOUT_SCRIPT + text[at:] if at >= 0 else text + LAYOUT_SCRIPT).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        import io
        return io.BytesIO(body)


class serve:
    """``with serve(site) as base_url:`` a loopback HTTP server over ``site`` for the duration of the block."""

    def __init__(self, site):
        handler = functools.partial(_QuietHandler, directory=str(site))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def load(chromium, url, screenshot=None, budget_ms=8000, timeout=90, window=WINDOW):
    """(rendered DOM, script errors) of ``url`` in a fresh headless Chromium profile with a ``window`` (width,
    height) window; writes a PNG when asked."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        args = [chromium, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
                f"--window-size={window[0]},{window[1]}"]
        done = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=timeout)
        if screenshot:
            subprocess.run([*args, "--hide-scrollbars", f"--screenshot={screenshot}", url],
                           capture_output=True, text=True, timeout=timeout)
    errors = [line for line in done.stderr.splitlines()
              if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]
    if done.returncode != 0 and not done.stdout:
        errors.append(f"chromium exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout, errors


def check_site(site, chromium, screenshots=None, pages=None):
    """{page: {figures, drawn, svgs, problems}} for every page of the built site (or ``pages``)."""
    site = Path(site)
    report = {}
    with serve(site) as base:
        for page in pages or html_pages(site):
            shot = str(Path(screenshots) / (page.replace("/", "__") + ".png")) if screenshots else None
            dom, errors = load(chromium, f"{base}/{page}", shot)
            parsed = parse(dom)
            figures, drawn, svgs = figure_counts(dom)
            problems = [f"{page}: {e}" for e in errors]
            if not dom.strip():
                problems.append(f"{page}: the browser returned no document")
            if figures and (drawn < figures or svgs < figures):
                problems.append(f"{page}: {figures} plotly figure(s), {drawn} drawn, {svgs} SVG layer(s)")
            if figures and not any(s.endswith("_static/plotly.min.js") for s in parsed.scripts):
                problems.append(f"{page}: figures but no local _static/plotly.min.js script")
            remote = [s for s in parsed.scripts if "plot.ly" in s or ("plotly" in s and s.startswith("http"))]
            if remote:
                problems.append(f"{page}: plotly.js loaded from the network: {remote}")
            problems += link_problems(site, page, parsed.hrefs, parsed.ids)
            layout = layout_of(dom) if dom.strip() else None
            problems += layout_problems(page, layout) if dom.strip() else []
            report[page] = {"figures": figures, "drawn": drawn, "svgs": svgs, "layout": layout,
                            "problems": problems}
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("site", nargs="?", default=str(REPO_ROOT / "_build" / "html"))
    parser.add_argument("--screenshots", help="write a PNG of every page into this folder")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("no Chromium found (apt-get install chromium, or set $CHROMIUM)", file=sys.stderr)
        return 2
    site = Path(args.site)
    if not (site / "index.html").is_file():
        print(f"no built site at {site} (run: jupyter-book build book/ -W --keep-going)", file=sys.stderr)
        return 1
    if args.screenshots:
        Path(args.screenshots).mkdir(parents=True, exist_ok=True)
    report = check_site(site, chromium, args.screenshots)
    problems = [p for page in report.values() for p in page["problems"]]
    for page, result in report.items():
        layout = result["layout"] or {"column": 0, "items": []}
        widest = max((item["left"] + item["width"] for item in layout["items"]), default=0)
        print(f"{page}: {result['figures']} figure(s), {result['drawn']} drawn, {len(layout['items'])} table(s)/"
              f"figure(s) up to {widest} px in a {layout['column']} px column, {len(result['problems'])} problem(s)")
    for problem in problems:
        print("PROBLEM", problem)
    print(f"{len(report)} pages, {sum(r['figures'] for r in report.values())} figures, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
