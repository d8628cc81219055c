"""Blocks network access for a test subprocess: put this directory first on PYTHONPATH.

Any connect or DNS lookup outside the machine raises, so a run that tries to reach a hub (model
weights, datasets, metrics) fails loudly instead of passing on a machine that happens to be online.
"""

import socket

_LOCAL = ("127.0.0.1", "::1", "localhost")


class NetworkBlocked(RuntimeError):
    pass


def _guard(original):
    def connect(self, address, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOCAL:
            raise NetworkBlocked(f"network access blocked by the test guard: {address!r}")
        return original(self, address, *args, **kwargs)

    return connect


def _blocked_lookup(host, *args, **kwargs):
    if host not in _LOCAL and host is not None:
        raise NetworkBlocked(f"DNS lookup blocked by the test guard: {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guard(socket.socket.connect)
socket.socket.connect_ex = _guard(socket.socket.connect_ex)
_real_getaddrinfo = socket.getaddrinfo
socket.getaddrinfo = _blocked_lookup
