#!/usr/bin/env python3
"""A steady DNS query stream for the package test: restarts and upgrades under load.

    dnsload.py HOST PORT NAME WANT STOPFILE [RATE]

UDP: RATE queries a second (default 500) for NAME A, from 8 sockets (8 source ports,
so that the kernel spreads them over the server's sockets), each waited for up to 3 s
(a restart's gap is well within it). TCP: one client keeping 4 queries in flight on one
connection; when the server closes it, the unanswered queries go again on a new
connection (as RFC 7766 clients do), at most 3 times. Runs until STOPFILE exists (at
most 300 s), waits for the answers still due, prints one line of figures and exits 0
only if every query was answered with WANT.
"""

import os
import select
import socket
import struct
import sys
import threading
import time

HOST, PORT, NAME, WANT, STOP = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
RATE = float(sys.argv[6]) if len(sys.argv) > 6 else 500.0
PATIENCE = 3.0
LIMIT = 300.0


def query(qid):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in NAME.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack(">HH", 1, 1)


def answer(msg):
    """(id, rcode, first A record as text or None)."""
    qid, flags, qd, an = struct.unpack(">HHHH", msg[:8])
    pos = 12
    for _ in range(qd):
        while msg[pos] != 0:
            if msg[pos] >= 0xC0:
                pos += 1
                break
            pos += msg[pos] + 1
        pos += 5
    for _ in range(an):
        if msg[pos] >= 0xC0:
            pos += 2
        else:
            while msg[pos] != 0:
                pos += msg[pos] + 1
            pos += 1
        rtype, _, _, rdlen = struct.unpack(">HHIH", msg[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            return qid, flags & 0xF, socket.inet_ntoa(msg[pos:pos + 4])
        pos += rdlen
    return qid, flags & 0xF, None


udp = {"sent": 0, "ok": 0, "lost": 0, "wrong": 0}
tcp = {"sent": 0, "ok": 0, "lost": 0, "wrong": 0, "again": 0, "connections": 0}


def run_udp():
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
    for s in socks:
        s.connect((HOST, PORT))
        s.setblocking(False)
    pending = {}  # (socket index, id) -> sent at
    start = time.monotonic()
    n = 0
    stopping = False
    while True:
        now = time.monotonic()
        if not stopping and (os.path.exists(STOP) or now - start > LIMIT):
            stopping = True
        if stopping and not pending:
            break
        while not stopping and n < (now - start) * RATE:
            i = n % len(socks)
            qid = (n // len(socks)) & 0xFFFF
            if (i, qid) in pending:  # 65536 queries ago and still unanswered: lost
                pending.pop((i, qid))
                udp["lost"] += 1
            try:
                socks[i].send(query(qid))
            except OSError:
                pass  # counted lost when its time is up
            pending[(i, qid)] = now
            udp["sent"] += 1
            n += 1
        ready, _, _ = select.select(socks, [], [], 0.005)
        for s in ready:
            i = socks.index(s)
            while True:
                try:
                    msg = s.recv(4096)
                except OSError:
                    break
                qid, rcode, a = answer(msg)
                if pending.pop((i, qid), None) is None:
                    continue
                if rcode == 0 and a == WANT:
                    udp["ok"] += 1
                else:
                    udp["wrong"] += 1
                    print(f"dnsload: wrong UDP answer: rcode {rcode}, {a}", file=sys.stderr)
        now = time.monotonic()
        for key in [k for k, t in pending.items() if now - t > PATIENCE]:
            pending.pop(key)
            udp["lost"] += 1


def read_exact(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise ConnectionError("closed")
        b += chunk
    return b


def run_tcp():
    inflight = {}  # id -> [sent at, times sent again]
    next_id = 1
    start = time.monotonic()
    while time.monotonic() - start < LIMIT + 10:
        try:
            s = socket.create_connection((HOST, PORT), timeout=2)
        except OSError:
            time.sleep(0.01)
            continue
        tcp["connections"] += 1
        s.settimeout(PATIENCE)
        try:
            for qid, x in list(inflight.items()):
                if x[1] >= 3:
                    inflight.pop(qid)
                    tcp["lost"] += 1
                    continue
                x[1] += 1
                tcp["again"] += 1
                q = query(qid)
                s.sendall(struct.pack(">H", len(q)) + q)
            while True:
                stopping = os.path.exists(STOP) or time.monotonic() - start > LIMIT
                while not stopping and len(inflight) < 4:
                    qid = next_id
                    next_id = next_id % 65535 + 1
                    inflight[qid] = [time.monotonic(), 0]
                    tcp["sent"] += 1
                    q = query(qid)
                    s.sendall(struct.pack(">H", len(q)) + q)
                if not inflight:
                    s.close()
                    return
                (length,) = struct.unpack(">H", read_exact(s, 2))
                qid, rcode, a = answer(read_exact(s, length))
                if inflight.pop(qid, None) is None:
                    continue
                if rcode == 0 and a == WANT:
                    tcp["ok"] += 1
                else:
                    tcp["wrong"] += 1
                    print(f"dnsload: wrong TCP answer: rcode {rcode}, {a}", file=sys.stderr)
                time.sleep(0.002)
        except (OSError, ConnectionError):
            s.close()
    tcp["lost"] += len(inflight)


threads = [threading.Thread(target=run_udp), threading.Thread(target=run_tcp)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(
    "udp: {sent} sent, {ok} answered, {lost} lost, {wrong} wrong; ".format(**udp)
    + "tcp: {sent} sent, {ok} answered, {lost} lost, {wrong} wrong, ".format(**tcp)
    + "{again} sent again on {connections} connections".format(**tcp)
)
sys.exit(0 if udp["lost"] + udp["wrong"] + tcp["lost"] + tcp["wrong"] == 0 and udp["sent"] > 0 and tcp["sent"] > 0 else 1)
