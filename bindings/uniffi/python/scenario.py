"""A phone's session, from the generated Python bindings of precall-ffi, over a real
socket to a real precall-server (run by e2e/tests/phones.rs; by hand, see below).

The terminal logs in with its capabilities, shows its table, places a fast-path call
to the peer's terminal (a reference precall-client), answers one from it, survives a
connection cut under it (by the harness) by resuming the session, sees the peer go offline and logs out.
At every step the table the app keeps from the core's events must equal the core's
own table (`peers()`), and each entry's parameters must equal `negotiate_pair` of the
two capability sets: the facade and the app hold no protocol rule, they only carry
the core's events.

Lines on stdout:
  step NAME: DETAIL          a step passed
  ready answer|call-me|drop|peer-offline
                             the harness should act on the peer's side now
  FAIL: WHY                  (and exit status 1) a check failed

    PYTHONPATH=target/uniffi/python python3 bindings/uniffi/python/scenario.py \
        --server 127.0.0.1:7700 --user alice --password-env PW \
        --caps alice.json --peer bob --peer-caps bob.json

`--fault drop-offline` wraps the client so that `peer_offline` events never reach the
app (a facade that drops an event): the run must then fail.
"""

import argparse
import os
import socket
import sys
import time

import precall_ffi as ffi

WAIT_S = 15.0


class Fail(Exception):
    pass


def check(cond, why):
    if not cond:
        raise Fail(why)


def now_ms():
    return time.monotonic_ns() // 1_000_000


def describe(params):
    def way(d):
        if isinstance(d, ffi.Direction.VIDEO):
            p = d.params
            return f"{p.codec} {p.width}x{p.height}@{p.fps} {p.bitrate_kbps}kbps"
        return f"no video ({d.reason})"
    return f"send {way(params.send)}, receive {way(params.recv)}"


class DroppingOffline:
    """The seeded fault: a client whose peer_offline events are lost."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def poll_event(self):
        while True:
            ev = self._inner.poll_event()
            if not isinstance(ev, ffi.Event.PEER_OFFLINE):
                return ev


class Phone:
    """The app: one connection at a time, the core driven by the polling rule, and a
    table kept from the events alone (what a UI would show)."""

    def __init__(self, args, client):
        self.args = args
        self.client = client
        self.sock = None
        self.buf = []
        self.shown = {}  # (user, session) -> params, from events only
        self.events = []

    def connect(self):
        host, port = self.args.server.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=WAIT_S)

    def drain(self):
        while (frame := self.client.poll_transmit()) is not None:
            if self.sock is not None:
                try:
                    self.sock.sendall(frame)
                except OSError:
                    pass  # a broken connection: the next read says so

        while (ev := self.client.poll_event()) is not None:
            self.events.append(ev)
            key = None
            if isinstance(ev, (ffi.Event.PEER_ONLINE, ffi.Event.PEER_UPDATED)):
                self.shown[(ev.peer.user, ev.peer.session)] = ev.params
            elif isinstance(ev, ffi.Event.PEER_OFFLINE):
                key = (ev.peer.user, ev.peer.session)
                self.shown.pop(key, None)
            elif isinstance(ev, ffi.Event.LOGGED_OUT):
                self.shown.clear()
            elif isinstance(ev, ffi.Event.RESUMED) and ev.snapshot:
                self.shown.clear()

    def wait(self, what, pred):
        """Runs the loop until an event matching `pred` arrives (it is returned)."""
        found = []

        def seen():
            for i, ev in enumerate(self.events):
                if pred(ev):
                    del self.events[: i + 1]
                    found.append(ev)
                    return True
            return False

        self.until(what, seen)
        return found[0]

    def until(self, what, done):
        """Runs the loop (bytes in, timers, the polling rule) until `done()`."""
        deadline = time.monotonic() + WAIT_S
        while not done():
            left = deadline - time.monotonic()
            check(left > 0, f"no {what} within {WAIT_S} s; events: {self.events}")
            t = self.client.poll_timeout()
            if t is not None and t <= now_ms():
                self.client.handle_timeout(now_ms())
                self.drain()
                continue
            wake = left if t is None else min(left, max(0.0, (t - now_ms()) / 1000))
            check(self.sock is not None, f"waiting for {what} without a connection")
            self.sock.settimeout(max(wake, 0.001))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                data = b""  # reset: the connection is gone, as at EOF
            if not data:
                self.sock.close()
                self.sock = None
                self.client.connection_closed(now_ms())
            else:
                try:
                    self.client.receive(data, now_ms())
                except ffi.PrecallError as e:
                    raise Fail(f"the server's bytes were refused: {e!r}")
            self.drain()

    def check_table(self, step, me, peer_caps):
        """The core's table, the app's table and negotiate_pair agree."""
        entries = self.client.peers()
        core = {(e.endpoint.user, e.endpoint.session): e.params for e in entries}
        check(
            core == self.shown,
            f"{step}: the app's table {self.shown} is not the core's {core}",
        )
        want = ffi.negotiate_pair(me, peer_caps)
        for e in entries:
            check(e.endpoint.user == self.args.peer, f"{step}: unexpected {e.endpoint}")
            check(e.capabilities == peer_caps, f"{step}: {e.capabilities} != {peer_caps}")
            check(e.params == want, f"{step}: {e.params} is not negotiate_pair's {want}")
        return entries


def run(args):
    with open(args.caps) as f:
        me = ffi.capabilities_from_json(f.read())
    with open(args.peer_caps) as f:
        peer_caps = ffi.capabilities_from_json(f.read())
    client = ffi.PrecallClient(
        ffi.ClientConfig(
            user=args.user,
            password=os.environ[args.password_env],
            login=ffi.LoginWith.CAPABILITIES(capabilities=me),
        )
    )
    if args.fault == "drop-offline":
        client = DroppingOffline(client)
    app = Phone(args, client)
    is_ = lambda cls, **kv: lambda ev: isinstance(ev, cls) and all(
        getattr(ev, k) == v for k, v in kv.items()
    )

    # Login: the table is complete at Synced, every entry pre-computed (claim C1).
    check(client.status() == ffi.Status.IDLE, f"status {client.status()} before login")
    t0 = time.monotonic()
    app.connect()
    client.login(now_ms())
    app.drain()
    session = app.wait("logged_in", is_(ffi.Event.LOGGED_IN)).session
    app.wait("synced", is_(ffi.Event.SYNCED))
    synced_ms = (time.monotonic() - t0) * 1000
    check(client.status() == ffi.Status.ONLINE, f"status {client.status()} after login")
    entries = app.check_table("login", me, peer_caps)
    check(len(entries) == 1, f"login: {len(entries)} terminals of {args.peer} online, want 1")
    peer = entries[0].endpoint
    print(f"step login: session {session}, synced in {synced_ms:.1f} ms", flush=True)
    print(f"step table: {peer.user}/{peer.session} {describe(entries[0].params)}", flush=True)

    # A fast-path call to the peer: no capability crosses the wire.
    print("ready answer", flush=True)
    t0 = time.monotonic()
    tag = client.place_call(peer, now_ms())
    app.drain()
    call = app.wait("call_ringing", is_(ffi.Event.CALL_RINGING, req=tag)).call
    est = app.wait("call_established", is_(ffi.Event.CALL_ESTABLISHED, call=call))
    setup_ms = (time.monotonic() - t0) * 1000
    check(est.path == ffi.SetupPath.FAST, f"call: path {est.path}")
    check(est.params == entries[0].params, f"call: {est.params} is not the table's")
    calls = client.calls()
    check(
        [(c.call, c.role, c.state) for c in calls]
        == [(call, ffi.Role.CALLER, ffi.CallState.ESTABLISHED)],
        f"call: calls() is {calls}",
    )
    client.hangup(call, now_ms())
    app.drain()
    check(client.calls() == [], f"after hangup: calls() is {client.calls()}")
    app.check_table("call", me, peer_caps)
    print(f"step call: call {call} fast, established in {setup_ms:.1f} ms, hung up", flush=True)

    # A call from the peer, answered.
    print("ready call-me", flush=True)
    inc = app.wait("incoming_call", is_(ffi.Event.INCOMING_CALL))
    check(inc.caller == peer, f"answer: the caller is {inc.caller}, not {peer}")
    check(inc.params == entries[0].params, f"answer: {inc.params} is not the table's")
    client.answer(inc.call, True, now_ms())
    app.drain()
    est = app.wait("call_established", is_(ffi.Event.CALL_ESTABLISHED, call=inc.call))
    check(est.path == ffi.SetupPath.FAST, f"answer: path {est.path}")
    client.hangup(inc.call, now_ms())
    app.drain()
    app.check_table("answer", me, peer_caps)
    print(f"step answer: call {inc.call} fast, hung up", flush=True)

    # The harness cuts the connection under the app (a reset, no goodbye); the
    # session is resumed on a new one and the table kept (the peer never saw this
    # terminal go offline).
    print("ready drop", flush=True)
    app.wait("detached", is_(ffi.Event.DETACHED))
    check(client.status() == ffi.Status.DETACHED, f"drop: status {client.status()}")
    check(client.can_resume(), "drop: cannot resume")
    app.check_table("detached", me, peer_caps)
    t0 = time.monotonic()
    app.connect()
    client.resume(now_ms())
    app.drain()
    res = app.wait("resumed", is_(ffi.Event.RESUMED))
    check(res.session == session, f"resume: session {res.session}, was {session}")
    app.wait("synced", is_(ffi.Event.SYNCED))
    resume_ms = (time.monotonic() - t0) * 1000
    entries = app.check_table("resume", me, peer_caps)
    check([e.endpoint for e in entries] == [peer], f"resume: table {entries}")
    print(
        f"step resume: session {session} resumed in {resume_ms:.1f} ms "
        f"(snapshot: {res.snapshot}), table kept",
        flush=True,
    )

    # The peer logs out: its entry is deleted (claim C4).
    print("ready peer-offline", flush=True)
    app.until("the peer's entry deleted", lambda: client.peers() == [])
    app.check_table("peer offline", me, peer_caps)
    print(f"step peer-offline: {peer.user}/{peer.session} deleted", flush=True)

    # Logout deletes everything (claim C5).
    client.logout(now_ms())
    app.drain()
    app.wait("logged_out", is_(ffi.Event.LOGGED_OUT))
    check(client.status() == ffi.Status.IDLE, f"logout: status {client.status()}")
    check(client.peers() == [] and client.contacts() == [], "logout: something kept")
    app.check_table("logout", me, peer_caps)
    print("step logout: everything deleted", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password-env", required=True)
    ap.add_argument("--caps", required=True, help="this terminal's capabilities (wire JSON)")
    ap.add_argument("--peer", required=True, help="the peer's user name")
    ap.add_argument("--peer-caps", required=True, help="the peer's capabilities (wire JSON)")
    ap.add_argument("--fault", choices=["drop-offline"])
    args = ap.parse_args()
    try:
        run(args)
    except Fail as e:
        print(f"FAIL: {e}", flush=True)
        return 1
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
