#!/usr/bin/env python3
"""Stands in for systemd's notify socket in deploy/ci/runbook-test.sh.

    notify-listen.py SOCKET LOG

Binds a Unix datagram socket at SOCKET and appends every datagram received to
LOG, one message per line (newlines inside a message become spaces), flushed
at once so the test can poll the file. Runs until SIGTERM.
"""
import os
import signal
import socket
import sys

path, log = sys.argv[1], sys.argv[2]
if os.path.exists(path):
    os.unlink(path)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
with open(log, "a", buffering=1) as out:
    while True:
        data = s.recv(4096)
        out.write(data.decode("utf-8", "replace").replace("\n", " ") + "\n")
