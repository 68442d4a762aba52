"""Screenshots of the built site for docs/ (after `make docs`): a notebook page and the 1.5B results page.

Run: `.venv/bin/python tools/screenshots.py` (needs chromium: apt-get install -y chromium). Writes docs/site-suite.png
and docs/site-results.png, each 1000 x 700 pixels.
"""
import functools
import http.server
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from browser import Browser, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHOTS = {'site-suite.png': ('nbs/07a_suite.html', 'What the suite shows on the model organisms'),
         'site-results.png': ('docs/reasoning.html', 'What the committed records show')}


def serve(folder:Path)->tuple:
    "An HTTP server for `folder` on 127.0.0.1, in a thread; (server, port)."
    port = free_port()
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    handler = functools.partial(Quiet, directory=str(folder))
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', port), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, port


def shoot(site:Path=ROOT/'_site', out:Path=ROOT/'docs'):
    srv, port = serve(site)
    try:
        with Browser(1000, 700) as b:
            for name, (page, heading) in SHOTS.items():
                b.goto(f'http://127.0.0.1:{port}/{page}')
                b.wait_text(heading)
                b.js(f"[...document.querySelectorAll('h1,h2,h3,p')].find(h => h.innerText.includes({heading!r}))"
                     ".scrollIntoView()")
                time.sleep(1)                                        # the header's title fades in
                b.screenshot(out/name)
                print(out/name)
    finally: srv.shutdown()


if __name__ == '__main__': shoot()
