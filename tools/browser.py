"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol: load a page, wait for text, screenshot.

`chromium --dump-dom` returns before a single-page app (such as `inspect view`) has fetched its data, so the tests and
`tools/screenshots.py` poll the page's text instead. Needs `apt-get install -y chromium` and websocket-client (a
dependency of jupyter_server, installed with the dev extra).
"""
import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import websocket


def free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_port(port:int, timeout:float=60.)->None:
    "Wait until something listens on 127.0.0.1:`port`."
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try: return socket.create_connection(('127.0.0.1', port), timeout=1).close()
        except OSError: time.sleep(.2)
    raise TimeoutError(f'nothing listens on 127.0.0.1:{port} after {timeout:.0f} s')


class Browser:
    "One headless Chromium with one page; `with Browser() as b: b.goto(url)`."
    def __init__(self, width:int=1200, height:int=800):
        exe = shutil.which('chromium') or shutil.which('chromium-browser')
        if not exe: raise FileNotFoundError('no chromium on PATH. Fix: apt-get install -y chromium')
        self.port, self.profile = free_port(), tempfile.mkdtemp(prefix='cotfaith-chromium-')
        self.proc = subprocess.Popen([exe, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
                                      f'--remote-debugging-port={self.port}', f'--remote-allow-origins=http://127.0.0.1:{self.port}',
                                      f'--user-data-dir={self.profile}',
                                      f'--window-size={width},{height}', 'about:blank'],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_port(self.port)
            pages = json.load(urllib.request.urlopen(f'http://127.0.0.1:{self.port}/json'))
            url = next(p for p in pages if p['type'] == 'page')['webSocketDebuggerUrl']
            self.ws = websocket.create_connection(url, suppress_origin=True)
        except BaseException:                          # never leave a browser behind
            self._stop()
            raise
        self.ids = itertools.count(1)
        self.call('Page.enable')

    def call(self, method:str, **params)->dict:
        "Send one DevTools command and return its result (events in between are dropped)."
        i = next(self.ids)
        self.ws.send(json.dumps({'id': i, 'method': method, 'params': params}))
        while True:
            m = json.loads(self.ws.recv())
            if m.get('id') == i:
                if 'error' in m: raise RuntimeError(f"{method}: {m['error']}")
                return m['result']

    def js(self, expr:str):
        "The value of a JavaScript expression on the page."
        r = self.call('Runtime.evaluate', expression=expr, returnByValue=True)
        return r.get('result', {}).get('value')

    def goto(self, url:str)->None:
        self.call('Page.navigate', url=url)

    def text(self)->str:
        return self.js('document.body ? document.body.innerText : ""') or ''

    def wait_text(self, want:str, timeout:float=60.)->str:
        "Wait until the page's text holds `want`; its text then (a TimeoutError with the text if it never does)."
        end, t = time.monotonic() + timeout, ''
        while time.monotonic() < end:
            if want in (t := self.text()): return t
            time.sleep(.25)
        raise TimeoutError(f'{want!r} not on the page after {timeout:.0f} s. Its text: {t[:1500]!r}')

    def screenshot(self, path)->None:
        open(path, 'wb').write(base64.b64decode(self.call('Page.captureScreenshot', format='png')['data']))

    def _stop(self):
        "Stop the browser and every process it started (its own process group), then drop its profile."
        try: os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError: pass
        self.proc.wait(timeout=30)
        shutil.rmtree(self.profile, ignore_errors=True)

    def close(self):
        try: self.ws.close()
        finally: self._stop()

    def __enter__(self): return self
    def __exit__(self, *exc): self.close()
