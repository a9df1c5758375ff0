"""Run a command inside a new network namespace that has only a loopback interface.

``python tests/loopback_only.py CMD ARGS...`` re-executes itself under ``unshare -n`` (needs
root or user namespaces), brings ``lo`` up with an ioctl (no iproute2 needed), sets
``PIPELINES_NETNS=1`` and execs CMD. Where no namespace can be made it runs CMD as is,
with ``PIPELINES_NETNS`` unset, and tests that must not touch other interfaces skip.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import subprocess
import sys

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def bring_loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    if os.environ.get("PIPELINES_NETNS_CHILD") == "1":
        bring_loopback_up()
        os.environ["PIPELINES_NETNS"] = "1"
        os.execvp(argv[0], argv)
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        env = {**os.environ, "PIPELINES_NETNS_CHILD": "1"}
        return subprocess.call([unshare, "-n", sys.executable, os.path.abspath(__file__), *argv], env=env)
    print("loopback_only: cannot make a network namespace here; tests that need one will skip", file=sys.stderr)
    os.environ.pop("PIPELINES_NETNS", None)
    return subprocess.call(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
