"""Probes that test_netns.py runs inside a node's namespace (`ip netns exec NS python ...`).

udp-recv IP TIMEOUT   bind IP:9999, print "bound", then "lag SECONDS" for the first
                      datagram (its payload is the sender's time.time()) or "nothing"
udp-send IP           send 3 datagrams to IP:9999, 0.1 s apart
tcp IP PORT TIMEOUT   connect once: print "refused", "connected" or "timeout"
"""

from __future__ import annotations

import socket
import sys
import time


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "udp-recv":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((argv[1], 9999))
            s.settimeout(float(argv[2]))
            print("bound", flush=True)
            try:
                data, _ = s.recvfrom(100)
            except TimeoutError:
                print("nothing")
                return
            print(f"lag {time.time() - float(data):.4f}")
    elif mode == "udp-send":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(3):
                s.sendto(repr(time.time()).encode(), (argv[1], 9999))
                time.sleep(0.1)
    elif mode == "tcp":
        try:
            socket.create_connection((argv[1], int(argv[2])), timeout=float(argv[3])).close()
        except ConnectionRefusedError:
            print("refused")
        except TimeoutError:
            print("timeout")
        else:
            print("connected")
    else:
        raise SystemExit(f"unknown probe {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
