#!/usr/bin/env python
"""Screenshots of the built documentation site in headless Chromium, for reviewing what a reader sees.

    python tools/screenshots.py OUT_DIR [--site _site] [--page index --page train ...] [--width 1400]

Serves the built site (`make docs` writes `_site/`) on localhost, opens each page in headless Chromium at the given
window width and writes `OUT_DIR/<page>.png` (the whole page, cut at `--max-height` pixels). OUT_DIR must lie outside
the repository: screenshots are review material, not sources. Default pages: the landing page, one API page
(`train`) and one experiment page (`lfp/experiment`).
"""
from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get('NEURONB_CHROMIUM', '/usr/bin/chromium')
CHROMEDRIVER = os.environ.get('NEURONB_CHROMEDRIVER', '/usr/bin/chromedriver')
DEFAULT_PAGES = ('index', 'train', 'lfp/experiment')


def _serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f'http://127.0.0.1:{server.server_port}/'


def _browser(width: int, profile: str):
    os.environ['SE_OFFLINE'] = 'true'  # selenium-manager must never try to download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ('--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
                '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', '--hide-scrollbars',
                f'--window-size={width},1000', f'--user-data-dir={profile}'):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def screenshots(out_dir: Path,  # folder for the PNGs, outside the repository
                site: Path = ROOT / '_site',  # the built site (`make docs`)
                pages: tuple[str, ...] = DEFAULT_PAGES,  # page names without '.html'
                width: int = 1400,  # browser window width in CSS pixels
                max_height: int = 6000,  # longest screenshot in pixels
               ) -> list[Path]:
    "Write one full-page PNG per page into `out_dir`; returns their paths."
    out_dir = Path(out_dir).resolve()
    if out_dir == ROOT or ROOT in out_dir.parents:
        raise ValueError(f"screenshots go outside the repository, not into {out_dir}")
    missing_pages = [p for p in pages if not (site / f'{p}.html').is_file()]
    if missing_pages:
        raise FileNotFoundError(f"{site} has no page {missing_pages} (build the site with `make docs` first)")
    missing_tools = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).is_file() and os.access(p, os.X_OK))]
    if missing_tools:
        raise FileNotFoundError(f"headless Chromium is needed: {missing_tools} missing (run `make browser`)")
    out_dir.mkdir(parents=True, exist_ok=True)
    server, url = _serve(site)
    profile = tempfile.mkdtemp(prefix='neuronb-chromium-')
    driver = _browser(width, profile)
    written = []
    try:
        for page in pages:
            driver.set_window_size(width, 1000)
            driver.get(f'{url}{page}.html')
            height = driver.execute_script('return document.documentElement.scrollHeight')
            driver.set_window_size(width, min(int(height), max_height))
            path = out_dir / f"{page.replace('/', '__')}.png"
            driver.save_screenshot(str(path))
            written.append(path)
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
        shutil.rmtree(profile, ignore_errors=True)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', type=Path, help='folder for the PNGs (outside the repository)')
    parser.add_argument('--site', type=Path, default=ROOT / '_site', help='the built site (default: _site/)')
    parser.add_argument('--page', action='append', dest='pages', help='a page name without .html (repeatable)')
    parser.add_argument('--width', type=int, default=1400, help='window width in CSS pixels (default 1400)')
    parser.add_argument('--max-height', type=int, default=6000, help='longest screenshot in pixels (default 6000)')
    args = parser.parse_args(argv)
    try:
        paths = screenshots(args.out_dir, args.site, tuple(args.pages or DEFAULT_PAGES), args.width, args.max_height)
    except (ValueError, FileNotFoundError) as e:
        print(f"screenshots: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
