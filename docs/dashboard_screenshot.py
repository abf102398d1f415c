#!/usr/bin/env python
"""Screenshots of the Ray dashboard (or any loopback page) in headless Chromium, logged in with the cluster's
token the way the dashboard's token dialog does it (the `ray-authentication-token` cookie).

    python docs/dashboard_screenshot.py http://127.0.0.1:8265/#/jobs docs/dashboard_jobs.png
    python docs/dashboard_screenshot.py http://127.0.0.1:8265/#/actors docs/dashboard_actors.png --wait 8

Needs a Chromium (`apt-get install chromium`); talks to it over the DevTools protocol on a loopback port of
its own, with aiohttp (a Ray dependency). The token comes from `$RAY_AUTH_TOKEN`, else `~/.ray/auth_token`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp


def token() -> str | None:
    """The Ray token: `$RAY_AUTH_TOKEN`, else the file `$RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")).expanduser()
    return path.read_text().strip() if path.exists() else None


async def shoot(browser_port: int, url: str, out: Path, width: int, height: int, wait: float) -> None:
    """Open `url` in a new tab with the token cookie set, wait, and save a PNG of the viewport."""
    async with aiohttp.ClientSession() as http:
        async with http.put(f"http://127.0.0.1:{browser_port}/json/new?about:blank") as r:
            target = await r.json(content_type=None)
        async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = iter(range(1, 1_000_000))

            async def call(method: str, **params) -> dict:
                i = next(ids)
                await ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
                while True:
                    msg = json.loads((await ws.receive()).data)
                    if msg.get("id") == i:
                        if "error" in msg:
                            raise RuntimeError(f"{method}: {msg['error']}")
                        return msg.get("result", {})

            await call("Network.enable")
            if tok := token():
                origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
                await call("Network.setCookie", name="ray-authentication-token", value=tok, url=origin)
            await call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            await call("Page.enable")
            await call("Page.navigate", url=url)
            await asyncio.sleep(wait)  # the dashboard's pages fetch their tables after load
            shot = await call("Page.captureScreenshot", format="png")
            out.write_bytes(base64.b64decode(shot["data"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url")
    p.add_argument("out", type=Path)
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=900)
    p.add_argument("--wait", type=float, default=6.0, help="seconds between navigating and the screenshot")
    p.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = p.parse_args()
    profile = tempfile.mkdtemp(prefix="orca-shot-")
    cmd = [
        args.chromium,
        "--headless",
        "--no-sandbox",  # root in a container; the only page is the loopback dashboard
        "--disable-gpu",
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "about:blank",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"error: {args.chromium} did not start its DevTools port")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        asyncio.run(shoot(port, args.url, args.out, args.width, args.height, args.wait))
        print(f"wrote {args.out}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
