"""A real browser on chat_server's page, run by tests/chat_server/browser.rs.

    python3 browser.py CHROMIUM WS_ADDR IRC_ADDR

Starts Chromium headless with a fresh profile, drives it over the DevTools
protocol (JSON over a WebSocket, spoken with `websockets`): loads
http://WS_ADDR/, types a nick and a room into the page's form, and sends a
line from the page. An IRC client on IRC_ADDR (a plain socket, in this
script) must receive that line, and a line it sends must appear in the
page. Prints what each side saw; any failure ends the script non-zero.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from websockets.sync.client import connect

WAIT = 20  # seconds for any one thing to happen (Chromium's start is the slowest)
ROOM = "#browsers"


class Tcp:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=WAIT)
        self.file = self.sock.makefile("rb")

    def send(self, line):
        self.sock.sendall(line.encode() + b"\r\n")

    def until(self, command):
        while True:
            line = self.file.readline().decode().rstrip("\r\n")
            if not line:
                raise EOFError("the server closed the IRC client")
            words = [w for w in line.split(" ") if w[:1] not in ("@", ":")] or [""]
            if words[0] == "PING":
                self.send("PONG " + line.split(" ", 1)[1])
            elif words[0] == command:
                return line


class Chromium:
    """A headless Chromium with a fresh profile; a context manager that
    kills it and removes the profile on the way out."""

    def __init__(self, chromium):
        self.profile = tempfile.mkdtemp(prefix="chat-browser-")
        self.process = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync",
             f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.process.kill()
        self.process.wait(timeout=WAIT)
        shutil.rmtree(self.profile, ignore_errors=True)

    def page_url(self):
        """The DevTools WebSocket of the blank page Chromium opened."""
        port = self._port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=WAIT) as answer:
            pages = json.load(answer)
        return next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"]

    def _port(self):
        """Chromium writes the port it picked into its profile once it listens."""
        path = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("chromium exited: " + self.process.stderr.read().decode()[-2000:])
            try:
                with open(path) as f:
                    return int(f.readline())
            except (FileNotFoundError, ValueError):
                time.sleep(0.05)  # polling a file: there is nothing to wait on
        raise TimeoutError(f"chromium wrote no {path} in {WAIT}s")


class Page:
    """One page, driven over the DevTools protocol (JSON over a WebSocket)."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=WAIT))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def js(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression, what):
        """Poll the page (the DOM changes when a frame arrives; there is
        no event to wait on from outside short of more protocol)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.js(expression):
                return
            time.sleep(0.05)
        raise TimeoutError(f"the page did not show {what} in {WAIT}s; it shows:\n"
                           + str(self.js("document.body.innerText")))


def main(chromium, ws, irc):
    tcp = Tcp(irc)
    tcp.send("NICK ircfan")
    tcp.send("USER ircfan 0 * :IRC fan")
    tcp.until("001")
    tcp.send(f"JOIN {ROOM}")
    tcp.until("366")

    with Chromium(chromium) as process, connect(process.page_url(), max_size=None,
                                                open_timeout=WAIT) as devtools:
        browser = Page(devtools)
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"http://{ws}/")
        browser.wait_for("document.readyState === 'complete' && !!document.getElementById('nick')",
                         "the chat form")
        print("page title:", browser.js("document.title"))
        browser.js(f"""document.getElementById('nick').value = 'chromium';
                       document.getElementById('room').value = '{ROOM}';
                       document.getElementById('join').requestSubmit();""")
        joined = tcp.until("JOIN").split(" ")
        print("irc saw:", joined[0].split("!")[0], "JOIN", joined[-1].lstrip(":"))
        browser.wait_for("!document.getElementById('text').disabled", "the message box enabled")
        browser.js("""document.getElementById('text').value = 'typed in a browser';
                      document.getElementById('say').requestSubmit();""")
        line = tcp.until("PRIVMSG")
        print("irc got:", line.split(" ")[0].split("!")[0], " ".join(line.split(" ")[1:]))
        tcp.send(f"PRIVMSG {ROOM} :sent from irc")
        browser.wait_for("document.getElementById('log').innerText.includes('sent from irc')",
                         "the IRC client's line")
        shown = [li for li in browser.js(
            "[...document.querySelectorAll('#log li')].map(li => li.textContent)")
            if "sent from irc" in li]
        print("page shows:", shown[0])


if __name__ == "__main__":
    main(*sys.argv[1:])
