"""WebSocket checks of chat_server with Python's `websockets` (a client
nobody here wrote), run by tests/chat_server/websocket.rs.

    python3 ws_client.py CHECK WS_ADDR [IRC_ADDR]

Each check prints what it saw, one fact a line, for the Rust test to
compare; anything unexpected (a timeout, a refused connection) ends the
script with a traceback and a non-zero status. Every wait is bounded.
"""

import http.client
import socket
import struct
import sys

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

WAIT = 10  # seconds: any single wait longer than this is a failure
PROTOCOL = "text.ircv3.net"


def ws_connect(ws, **options):
    return connect(f"ws://{ws}/irc", subprotocols=[PROTOCOL], open_timeout=WAIT,
                   close_timeout=WAIT, **options)


class Tcp:
    """An IRC client over a plain socket, line by line."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=WAIT)
        self.file = self.sock.makefile("rb")

    def send(self, line):
        self.sock.sendall(line.encode() + b"\r\n")

    def recv(self):
        line = self.file.readline()
        if not line:
            raise EOFError("the server closed the TCP client")
        return line.decode().rstrip("\r\n")


class Ws:
    """An IRC client over WebSocket: one line per text message."""

    def __init__(self, conn):
        self.conn = conn

    def send(self, line):
        self.conn.send(line)

    def recv(self):
        return self.conn.recv(timeout=WAIT)


def command(line):
    """The command of an IRC line (after any tags and prefix)."""
    words = line.split(" ")
    while words and words[0][:1] in ("@", ":"):
        words = words[1:]
    return words[0].upper() if words else ""


def trailing(line):
    """The last parameter of an IRC line."""
    return line.rsplit(" :", 1)[-1] if " :" in line else line.rsplit(" ", 1)[-1]


def until(client, want):
    """Read lines until one whose command is in `want`; return it."""
    while True:
        line = client.recv()
        if command(line) == "PING":
            client.send("PONG " + line.split(" ", 1)[1])
        elif command(line) in want:
            return line


def register(client, nick):
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    until(client, {"001"})
    until(client, {"376", "422"})


def join(client, room):
    client.send(f"JOIN {room}")
    until(client, {"366"})  # end of NAMES: the join is complete


def page(ws, _irc=None):
    host, port = ws.rsplit(":", 1)
    for method, path in [("GET", "/"), ("GET", "/favicon.ico"), ("POST", "/")]:
        conn = http.client.HTTPConnection(host, int(port), timeout=WAIT)
        conn.request(method, path)
        answer = conn.getresponse()
        body = answer.read().decode()
        print(method, path, answer.status, answer.getheader("Content-Type"),
              "cache:", answer.getheader("Cache-Control"),
              "| has <script>:", "<script>" in body, "| asks for", PROTOCOL, PROTOCOL in body)


def origin(ws, _irc=None):
    host, port = ws.rsplit(":", 1)
    try:
        ws_connect(ws, origin="http://evil.example").close()
        print("foreign origin: let through")
    except InvalidStatus as refused:
        print("foreign origin:", refused.response.status_code)
    with ws_connect(ws, origin=f"http://{host}:{port}") as conn:
        print("own origin: open, subprotocol", conn.subprotocol)


def chat(ws, irc):
    tcp = Tcp(irc)
    register(tcp, "tcpy")
    join(tcp, "#room")
    with ws_connect(ws) as conn:
        web = Ws(conn)
        register(web, "webby")
        join(web, "#room")
        web.send("PRIVMSG #room :hello from the web")
        print("irc got:", until(tcp, {"PRIVMSG"}))
        tcp.send("PRIVMSG #room :hello from irc")
        print("ws got:", until(web, {"PRIVMSG"}))
        web.send("QUIT :done")
        try:
            until(web, set())
        except ConnectionClosed as closed:
            print("ws closed after QUIT:", closed.rcvd.code if closed.rcvd else "no close frame")


def limits(ws, _irc=None):
    with ws_connect(ws, max_size=None) as conn:
        web = Ws(conn)
        register(web, "limits")
        conn.send(b"PING :binary-utf8")
        print("binary UTF-8:", trailing(until(web, {"PONG"})))
        conn.send(b"PING :\xff\xfe")
        conn.send("PING :after")
        print("binary not UTF-8, then:", trailing(until(web, {"PONG"})))
        answered = conn.ping(b"x").wait(WAIT)  # False after WAIT without a pong
        print("websocket ping:", "answered" if answered else "no pong")
        conn.send("PRIVMSG #nowhere :" + "x" * 9000)
        try:
            until(web, set())
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            print("9000-byte message: closed with", code)


def abrupt(ws, irc):
    tcp = Tcp(irc)
    register(tcp, "watcher")
    join(tcp, "#room")
    with ws_connect(ws) as conn:
        web = Ws(conn)
        register(web, "vanish")
        join(web, "#room")
        until(tcp, {"JOIN"})
        # No close frame, no FIN: SO_LINGER 0 makes close() send a TCP RST.
        conn.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.socket.close()
        quit_line = until(tcp, {"QUIT"})
    print("irc saw:", quit_line.split(" ")[0].split("!")[0], command(quit_line))


if __name__ == "__main__":
    check, args = sys.argv[1], sys.argv[2:]
    {"page": page, "origin": origin, "chat": chat, "limits": limits, "abrupt": abrupt}[check](*args)
