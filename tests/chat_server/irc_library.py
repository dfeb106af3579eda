"""IRC checks of chat_server with jaraco's `irc` library (a client nobody
here wrote), run by tests/chat_server/irc_library.rs.

    python3 irc_library.py CHECK IRC_ADDR [ARGS...]

Every client is an `irc.client.Reactor` connection: the library sends the
PASS, NICK and USER lines, parses what comes back and names each numeric
(`welcome` for 001, `nicknameinuse` for 433, ...). Each check prints what
the library reported, one fact a line, for the Rust test to compare;
anything unexpected (a missing event, a wait over WAIT seconds) ends the
script with a message on stderr and exit status 1.
"""

import sys
import time

try:
    import irc.client
except ImportError:
    sys.exit("no Python irc library: python3 -m pip install irc==20.5.0 (.ci/run does)")

WAIT = 10  # seconds: any single wait longer than this is a failure


def fail(message):
    print(f"FAILED: {message}", file=sys.stderr)
    sys.exit(1)


class Clients:
    """One reactor, several connections, and every event each one saw."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.reactor = irc.client.Reactor()
        self.seen = {}  # connection -> [event, ...]
        self.reactor.add_global_handler("all_events", self._record, -10)

    def _record(self, connection, event):
        self.seen.setdefault(connection, []).append(event)

    def connect(self, nick, **options):
        connection = self.reactor.server().connect(self.host, self.port, nick, **options)
        self.seen[connection] = []
        return connection

    def wait(self, connection, what, test=None):
        """The first event of type `what` (passing `test`) this connection
        sees, taken out of its list with everything before it."""
        deadline = time.monotonic() + WAIT
        while True:
            events = self.seen[connection]
            for i, event in enumerate(events):
                if event.type == what and (test is None or test(event)):
                    del events[: i + 1]
                    return event
            if time.monotonic() > deadline:
                types = [e.type for e in events]
                fail(f"{connection.get_nickname()}: no {what} within {WAIT}s; saw {types}")
            self.reactor.process_once(0.05)

    def register(self, nick, **options):
        connection = self.connect(nick, **options)
        self.wait(connection, "welcome")
        return connection

    def join(self, connection, room):
        connection.join(room)
        self.wait(connection, "endofnames", lambda e: e.arguments[0] == room)

    def drain(self, connection, quiet=0.5):
        """Everything this connection sees until `quiet` seconds pass with
        nothing new."""
        last = len(self.seen[connection])
        deadline = time.monotonic() + quiet
        while time.monotonic() < deadline:
            self.reactor.process_once(0.05)
            if len(self.seen[connection]) != last:
                last = len(self.seen[connection])
                deadline = time.monotonic() + quiet
        events = self.seen[connection]
        self.seen[connection] = []
        return events


def check_rooms(addr):
    """Two clients in two rooms; a third whose nick differs from a taken one
    only by RFC 1459 case."""
    c = Clients(addr)
    alice = c.register("Alice")
    print(f"Alice: welcome to {alice.get_nickname()}")
    bob = c.register("bob[m]")
    print(f"bob[m]: welcome to {bob.get_nickname()}")
    for room in ["#one", "#two"]:
        c.join(alice, room)
        c.join(bob, room)
    alice.privmsg("#one", "alice in one")
    bob.privmsg("#two", "bob in two")
    for me, other, text in [(bob, "Alice", "alice in one"), (alice, "bob[m]", "bob in two")]:
        event = c.wait(me, "pubmsg", lambda e: e.arguments[0] == text)
        print(f"{me.get_nickname()} got pubmsg in {event.target} from "
              f"{irc.client.NickMask(event.source).nick}: {event.arguments[0]}")
    for taken in ["alice", "BOB{M}"]:
        third = c.connect(taken)
        event = c.wait(third, "nicknameinuse")
        print(f"{taken}: nicknameinuse {event.arguments[0]}")
        third.close()
    alice.quit("bye")
    c.wait(bob, "quit", lambda e: irc.client.NickMask(e.source).nick == "Alice")
    print("bob[m] saw Alice quit")


def check_accounts(addr, name, password):
    """An account made by --add-account: PASS right, PASS wrong, SASL PLAIN.
    The library sends `PASS secret` with no `:`, so a password with a space
    would reach the server as its first word only: the test's has none."""
    c = Clients(addr)
    wrong = c.connect(name, password="not " + password)
    event = c.wait(wrong, "passwdmismatch")
    print(f"wrong password: passwdmismatch {event.arguments[0]}")
    event = c.wait(wrong, "error")
    print(f"wrong password: ERROR {event.target}")
    c.wait(wrong, "disconnect")
    print("wrong password: disconnected by the server")
    right = c.register(name, password=password)
    print(f"right password: welcome to {right.get_nickname()}")
    right.quit("bye")
    c.wait(right, "disconnect")
    sasl = c.connect(name, password=password, sasl_login=name)
    c.wait(sasl, "saslsuccess")
    c.wait(sasl, "welcome")
    print(f"sasl plain: saslsuccess, welcome to {sasl.get_nickname()}")
    sasl.quit("bye")
    c.wait(sasl, "disconnect")
    bad = c.connect(name, password="not " + password, sasl_login=name)
    c.wait(bad, "login_failed")
    print("sasl plain, wrong password: login_failed")
    bad.close()


def check_say(addr, room, *lines):
    """Join `room` and say each line in it."""
    c = Clients(addr)
    writer = c.register("writer")
    c.join(writer, room)
    for line in lines:
        writer.privmsg(room, line)
    # Our own PING answered: every line before it has been read.
    writer.ping("done")
    c.wait(writer, "pong")
    writer.quit("bye")
    c.wait(writer, "disconnect")
    print(f"said {len(lines)} lines in {room}")


def check_replay(addr, room):
    """Join `room` twice, without and with server-time, and print the
    history replayed to each."""
    c = Clients(addr)
    for name, server_time in [("plain", False), ("timed", True)]:
        reader = c.register(name)
        if server_time:
            reader.cap("REQ", "server-time")
            event = c.wait(reader, "cap")
            print(f"{name}: CAP {' '.join(event.arguments)}")
        c.join(reader, room)
        for event in c.drain(reader):
            if event.type != "pubmsg":
                continue
            tags = sorted(t["key"] for t in event.tags)
            print(f"{name} replay from {irc.client.NickMask(event.source).nick} "
                  f"tags {tags}: {event.arguments[0]}")
        reader.quit("bye")
        c.wait(reader, "disconnect")


CHECKS = {
    "rooms": check_rooms,
    "accounts": check_accounts,
    "say": check_say,
    "replay": check_replay,
}

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in CHECKS:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(CHECKS)} IRC_ADDR [ARGS...]")
    CHECKS[sys.argv[1]](*sys.argv[2:])
