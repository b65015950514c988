"""Headless Chromium over the DevTools protocol, for the browser tests (no package beyond the standard
library: Debian's ``chromium`` is the only requirement).

``Browser.launch()`` starts ``chromium --headless=new`` with a remote-debugging port and connects to its
first page; ``page.eval`` runs JavaScript (awaiting promises), ``page.mouse_*`` / ``page.key`` / ``page.type``
send real input events (trusted, as a person's), ``page.screenshot`` returns a PNG.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request


def find_chromium() -> str | None:
    """$CHROMIUM (if it is an executable), else the first Chromium/Chrome on PATH, else None."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class WebSocket:
    """A minimal RFC 6455 client (no extra package): masked frames out, JSON text frames in; answers
    pings, and skips binary frames (ComfyUI's previews) by returning None for them."""

    def __init__(self, host: str, port: int, path: str, timeout: float = 300.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def receive(self) -> dict | None:
        """The next JSON (text) message; None for a binary one (previews)."""
        message, opcode = b"", None
        while True:
            b0, b1 = self._read(2)
            op, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if op == 0x9:
                self._send(0xA, payload)
                continue
            if op == 0x8:
                raise ConnectionError("websocket closed by the server")
            if op in (0x1, 0x2):
                opcode = op
            message += payload
            if b0 & 0x80:
                return json.loads(message) if opcode == 0x1 else None

    def messages(self, seconds: float):
        """The JSON messages as they come, for ``seconds`` at most, then a TimeoutError: each read is bounded by
        the socket's timeout, and this bounds a stream that keeps coming without the one awaited."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self.receive()
            if message is not None:
                yield message
        raise TimeoutError(f"the message awaited did not come in {seconds:g} s")

    def send_json(self, message: dict) -> None:
        self._send(0x1, json.dumps(message).encode())

    def close(self) -> None:
        try:
            self._send(0x8, b"")
        finally:
            self.sock.close()


class Page:
    """One page target: DevTools commands, JavaScript, input events, screenshots."""

    def __init__(self, ws: WebSocket):
        self.ws, self.next_id = ws, 0
        self.console: list[str] = []

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        for message in self.ws.messages(600):
            if message.get("method") == "Runtime.consoleAPICalled":
                args = message["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif message.get("method") == "Log.entryAdded":  # the browser's own lines: failed requests...
                entry = message["params"]["entry"]
                self.console.append(f"{entry['level']}: {entry['text']} {entry.get('url', '')}".rstrip())
            elif message.get("method") == "Runtime.exceptionThrown":
                details = message["params"]["exceptionDetails"]
                self.console.append("exception: " + json.dumps(details.get("exception", {}).get("description")
                                                               or details.get("text")))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def eval(self, expression: str, wait: bool = True):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=wait, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:200]}: {json.dumps(result['exceptionDetails'])[:1500]}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, what: str = ""):
        deadline = time.time() + timeout
        while True:
            value = self.eval(expression, wait=False)
            if value:
                return value
            if time.time() > deadline:
                raise TimeoutError(f"timed out waiting for {what or expression}; console: {self.console[-10:]}")
            time.sleep(0.1)

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    # -- input, as a person's: real mouse and key events at screen positions ---------------------------
    def _mouse(self, kind: str, x: float, y: float, button: str = "none", buttons: int = 0, clicks: int = 0,
               modifiers: int = 0) -> None:
        self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button=button, buttons=buttons,
                  clickCount=clicks, modifiers=modifiers)

    def click(self, x: float, y: float, button: str = "left", modifiers: int = 0) -> None:
        mask = {"left": 1, "right": 2, "middle": 4}[button]
        self._mouse("mouseMoved", x, y, modifiers=modifiers)
        self._mouse("mousePressed", x, y, button, mask, 1, modifiers)
        self._mouse("mouseReleased", x, y, button, 0, 1, modifiers)

    def drag(self, x0: float, y0: float, x1: float, y1: float, steps: int = 8) -> None:
        """Press at (x0, y0), move there in ``steps`` moves, release."""
        self._mouse("mouseMoved", x0, y0)
        self._mouse("mousePressed", x0, y0, "left", 1, 1)
        for k in range(1, steps + 1):
            self._mouse("mouseMoved", x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps, "left", 1)
        self._mouse("mouseReleased", x1, y1, "left", 0, 1)

    def key(self, key: str, code: str | None = None, modifiers: int = 0, key_code: int = 0) -> None:
        """Press and release a key (modifiers: 1 Alt, 2 Ctrl, 4 Meta, 8 Shift)."""
        common = dict(key=key, code=code or key, modifiers=modifiers, windowsVirtualKeyCode=key_code)
        self.call("Input.dispatchKeyEvent", type="rawKeyDown", **common)
        self.call("Input.dispatchKeyEvent", type="keyUp", **common)

    def type(self, text: str) -> None:
        self.call("Input.insertText", text=text)

    def center(self, selector: str) -> tuple[float, float]:
        """Screen centre of the first element matching a CSS selector."""
        rect = self.eval(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                         " return [r.left + r.width / 2, r.top + r.height / 2]; })()", wait=False)
        return rect[0], rect[1]

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])


class Browser:
    """A headless Chromium process and its first page."""

    def __init__(self, process: subprocess.Popen, profile: str, page: Page):
        self.process, self.profile, self.page = process, profile, page

    @classmethod
    def launch(cls, exe: str, width: int = 1000, height: int = 700, timeout: float = 60.0) -> "Browser":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        profile = tempfile.mkdtemp(prefix="semanticgen-chromium-")
        process = subprocess.Popen([exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                    "--disable-dev-shm-usage", "--hide-scrollbars", f"--remote-debugging-port={port}",
                                    f"--user-data-dir={profile}", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        pages = []
        while not pages:
            if process.poll() is not None:
                raise RuntimeError(f"{exe} exited with {process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=5) as r:
                    pages = [p for p in json.loads(r.read()) if p["type"] == "page"]
            except OSError:
                pass
            if time.time() > deadline:
                process.kill()
                raise TimeoutError("Chromium's DevTools endpoint did not come up")
            time.sleep(0.2)
        ws = WebSocket("127.0.0.1", port, pages[0]["webSocketDebuggerUrl"].split(str(port), 1)[1], timeout=120)
        page = Page(ws)
        page.call("Runtime.enable")
        page.call("Page.enable")
        page.call("Log.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        return cls(process, profile, page)

    def close(self) -> None:
        try:
            self.page.ws.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            shutil.rmtree(self.profile, ignore_errors=True)
