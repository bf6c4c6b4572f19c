"""One listening socket per uvicorn worker, all bound to the same port with SO_REUSEPORT.

With the single socket uvicorn shares between its workers, whichever worker wakes first accepts a whole burst of new
connections and keeps them for as long as they are kept alive: under the benchmark's 64 connections one worker ran at
97% CPU while the other idled at 8%. With a socket of its own in each worker, the kernel spreads connections evenly.
"""

from __future__ import annotations

import socket


def bind_reuse_port(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class ReusePortListener:
    """Stands in for the socket that uvicorn's supervisor passes to each worker it starts (or restarts): unpickled
    in the worker, it is that worker's own socket. uvicorn's supervisor only hands its sockets on."""

    def __init__(self, host: str, port: int):
        bind_reuse_port(host, port).close()  # a port taken by another program fails here, once, not in every worker
        self.host, self.port = host, port

    def __reduce__(self):
        return bind_reuse_port, (self.host, self.port)
