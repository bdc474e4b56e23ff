#!/usr/bin/python3
"""Load the `make demo` page in a headless browser and wait for its verdict.

    browser-demo.py --browser chromium|firefox --url URL --ca CA.pem --out SHOT.png [--timeout S]

Chromium is driven over the DevTools protocol, Firefox ESR over WebDriver BiDi (its
--remote-debugging-port), both with python3-websockets from Debian: no WebDriver binary, no
network. Each browser gets a fresh profile in a temporary directory whose NSS certificate
database (certutil, libnss3-tools) trusts the demo's test CA, so wss:// is verified as it
would be for a user who imported the CA: no certificate errors are ignored (Chromium reads
$HOME/.pki/nssdb, Firefox its profile's cert9.db). --ignore-cert-errors is a fallback for a
Chromium that does not take user trust anchors from NSS.

The page writes its state into document.title ("ws:10 wss:10 echo:ok" when both counters
delivered 10 messages and both echoes came back). Prints "ok   ..." / "FAIL ..." lines, writes
a PNG screenshot of the page to --out, exits 1 if the verdict was not reached in time.
"""

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import websockets

WANT = "ws:10 wss:10 echo:ok"
WIDTH, HEIGHT = 960, 540


def log(msg):
    print(msg, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, deadline):
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def nss_trust(db_dir, ca):
    """A new NSS database in db_dir that trusts ca for TLS servers."""
    os.makedirs(db_dir, exist_ok=True)
    subprocess.run(["certutil", "-N", "-d", "sql:" + db_dir, "--empty-password"],
                   check=True, capture_output=True, timeout=30)
    subprocess.run(["certutil", "-A", "-d", "sql:" + db_dir, "-n", "mod_proxy_wstunnel demo CA",
                    "-t", "C,,", "-i", ca], check=True, capture_output=True, timeout=30)
    out = subprocess.run(["certutil", "-L", "-d", "sql:" + db_dir], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    return "mod_proxy_wstunnel demo CA" in out


class Browser:
    """A browser process in its own process group, stopped (bounded) on exit."""

    def __init__(self, cmd, env, logfile):
        self.logfile = open(logfile, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.logfile, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # children that outlived the leader
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.logfile.close()


class Rpc:
    """JSON messages with ids over one WebSocket; events are skipped."""

    def __init__(self, ws, bidi):
        self.ws, self.bidi, self.next_id = ws, bidi, 0

    async def call(self, method, params=None, session=None, timeout=20):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        await self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(method)
            reply = json.loads(await asyncio.wait_for(self.ws.recv(), left))
            if reply.get("id") != self.next_id:
                continue
            if "error" in reply and reply["error"]:
                raise RuntimeError(f"{method}: {reply['error']} {reply.get('message', '')}")
            return reply["result"]


async def poll_title(evaluate, timeout):
    """document.title until it is WANT, or says error for 3 s, or time is up."""
    deadline = time.monotonic() + timeout
    title, error_since = "", None
    while time.monotonic() < deadline:
        title = await evaluate("document.title")
        if title == WANT:
            return title
        if "error" in title:
            error_since = error_since or time.monotonic()
            if time.monotonic() - error_since > 3:
                return title
        await asyncio.sleep(0.25)
    return title


async def run_chromium(a, tmp):
    home = os.path.join(tmp, "home")
    trusted = nss_trust(os.path.join(home, ".pki", "nssdb"), a.ca)
    log(("ok   " if trusted else "FAIL ") + "chromium: test CA added to $HOME/.pki/nssdb (certutil)")
    port = free_port()
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    cmd = [exe, "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
           "--disable-extensions", "--disable-background-networking", "--disable-sync",
           "--disable-component-update", "--disable-default-apps", "--password-store=basic",
           "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}",
           f"--user-data-dir={os.path.join(tmp, 'profile')}",
           "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={port}", "about:blank"]
    if os.geteuid() == 0:
        cmd.insert(2, "--no-sandbox")      # Chromium refuses to run as root with its sandbox
    if a.ignore_cert_errors:
        cmd.insert(2, "--ignore-certificate-errors")
    env = dict(os.environ, HOME=home)
    b = Browser(cmd, env, os.path.join(tmp, "chromium.log"))
    try:
        deadline = time.monotonic() + 30
        page = None
        while time.monotonic() < deadline and b.alive() and not page:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                    page = pages[0]["webSocketDebuggerUrl"] if pages else None
            except OSError:
                pass
            if not page:
                time.sleep(0.2)
        if not page:
            raise RuntimeError("no DevTools page target (chromium did not start?)")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=2) as r:
            version = json.load(r).get("Browser", "?")
        async with websockets.connect(page, max_size=None, ping_interval=None) as ws:
            rpc = Rpc(ws, bidi=False)
            await rpc.call("Emulation.setDeviceMetricsOverride",
                           {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
            await rpc.call("Page.enable")
            t0 = time.monotonic()
            await rpc.call("Page.navigate", {"url": a.url})

            async def evaluate(expr):
                r = await rpc.call("Runtime.evaluate", {"expression": expr, "returnByValue": True})
                return r.get("result", {}).get("value", "")

            title = await poll_title(evaluate, a.timeout)
            took = time.monotonic() - t0
            text = await evaluate("document.body ? document.body.innerText : ''")
            await asyncio.sleep(1.5)          # the counters' close and a mod_status poll on the page
            shot = await rpc.call("Page.captureScreenshot", {"format": "png"})
        return version, title, took, text, base64.b64decode(shot["data"])
    finally:
        b.stop()


async def run_firefox(a, tmp):
    profile = os.path.join(tmp, "profile")
    trusted = nss_trust(profile, a.ca)
    log(("ok   " if trusted else "FAIL ") + "firefox: test CA added to the profile's cert9.db (certutil)")
    with open(os.path.join(profile, "user.js"), "w") as f:
        for k, v in (("browser.shell.checkDefaultBrowser", False), ("app.update.auto", False),
                     ("app.update.enabled", False), ("datareporting.policy.dataSubmissionEnabled", False),
                     ("toolkit.telemetry.reportingpolicy.firstRun", False),
                     ("browser.startup.homepage_override.mstone", "ignore"),
                     ("network.captive-portal-service.enabled", False),
                     ("network.connectivity-service.enabled", False),
                     ("browser.safebrowsing.malware.enabled", False),
                     ("browser.safebrowsing.phishing.enabled", False),
                     ("extensions.update.enabled", False), ("browser.aboutwelcome.enabled", False),
                     ("ui.scrollbarDisplayOnMouseMove", True)):
            f.write(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n")
    port = free_port()
    exe = shutil.which("firefox-esr") or shutil.which("firefox")
    cmd = [exe, "--headless", "--no-remote", "--profile", profile,
           "--remote-debugging-port", str(port), "about:blank"]
    home = os.path.join(tmp, "home")
    os.makedirs(home, exist_ok=True)
    env = dict(os.environ, HOME=home, MOZ_HEADLESS="1", MOZ_CRASHREPORTER_DISABLE="1")
    env.pop("DISPLAY", None)
    b = Browser(cmd, env, os.path.join(tmp, "firefox.log"))
    try:
        if not wait_port(port, time.monotonic() + 45) or not b.alive():
            raise RuntimeError("no WebDriver BiDi port (firefox did not start?)")
        async with websockets.connect(f"ws://127.0.0.1:{port}/session", max_size=None,
                                      ping_interval=None) as ws:
            rpc = Rpc(ws, bidi=True)
            caps = await rpc.call("session.new",
                                  {"capabilities": {"alwaysMatch": {"acceptInsecureCerts": False}}})
            c = caps.get("capabilities", {})
            version = f"{c.get('browserName', 'firefox')} {c.get('browserVersion', '?')}"
            tree = await rpc.call("browsingContext.getTree", {})
            ctx = tree["contexts"][0]["context"]
            await rpc.call("browsingContext.setViewport",
                           {"context": ctx, "viewport": {"width": WIDTH, "height": HEIGHT}})
            t0 = time.monotonic()
            await rpc.call("browsingContext.navigate", {"context": ctx, "url": a.url, "wait": "complete"},
                           timeout=30)

            async def evaluate(expr):
                r = await rpc.call("script.evaluate", {"expression": expr, "target": {"context": ctx},
                                                       "awaitPromise": False})
                return r.get("result", {}).get("value", "")

            title = await poll_title(evaluate, a.timeout)
            took = time.monotonic() - t0
            text = await evaluate("document.body ? document.body.innerText : ''")
            await asyncio.sleep(1.5)
            shot = await rpc.call("browsingContext.captureScreenshot", {"context": ctx})
            try:
                await rpc.call("browser.close", {}, timeout=5)
            except Exception:
                pass
        return version, title, took, text, base64.b64decode(shot["data"])
    finally:
        b.stop()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--browser", choices=["chromium", "firefox"], required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--timeout", type=float, default=40)
    p.add_argument("--ignore-cert-errors", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the temporary profile")
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix=f"wst-{a.browser}.")
    ok = False
    try:
        run = run_chromium if a.browser == "chromium" else run_firefox
        version, title, took, text, png = asyncio.run(asyncio.wait_for(run(a, tmp), a.timeout + 90))
        with open(a.out, "wb") as f:
            f.write(png)
        log(f"     {a.browser}: {version}")
        ok = title == WANT
        if ok:
            log(f"ok   {a.browser}: the page says \"{title}\" after {took:.1f} s "
                "(10 counter messages over ws:// and over wss://, echo over both)")
        else:
            log(f"FAIL {a.browser}: the page says \"{title}\" after {took:.1f} s, want \"{WANT}\"")
            log("     page text: " + " | ".join(l for l in text.splitlines() if l.strip())[:1500])
        log(f"ok   {a.browser}: screenshot {a.out} ({len(png)} bytes)")
    except Exception as e:  # noqa: BLE001 (report whatever went wrong, with the browser's log)
        log(f"FAIL {a.browser}: {type(e).__name__}: {e}")
        logf = os.path.join(tmp, f"{a.browser}.log")
        if os.path.exists(logf):
            with open(logf, errors="replace") as f:
                for line in f.read().splitlines()[-25:]:
                    log("     | " + line)
    finally:
        if a.keep:
            log(f"     (kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
