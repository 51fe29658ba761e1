"""Puma behind nginx: how Puma's users keep slow clients away from its
workers. Puma runs exactly as the "puma preload" configuration (puma.py:
`puma -w 2 -t 1:1 --preload -e production config.ru`) but bound to a Unix
socket in the server's work directory; Debian's nginx listens on
127.0.0.1:port, the port wrk hits, and proxies to that socket.

nginx's configuration is the usual production one, the shape of Puma's
docs/nginx.md and Unicorn's example: an `upstream` of the socket with
`fail_timeout=0` (a failed attempt never takes Puma out of rotation: it is
the only server), `root` at the app's public/ with files served by nginx
and the rest proxied (`try_files`, the lookup rustrack's front end does for
every request too), `proxy_set_header` Host $http_host, X-Forwarded-For and
X-Forwarded-Proto, `proxy_redirect off`, and proxying over HTTP/1.0 with a
new socket connection per request (nginx's default; no upstream
keep-alive), buffering responses (the default: it is what frees a Puma
worker from a slow reader). The rest is nginx.py's shared config (worker
processes per CPU, keep-alive to clients, no access log, error log and pid
file in the work directory, `daemon off`) and start command.

Puma is the server's main process (its log tells when its workers are
booted, as puma.py reads it); nginx is its front (Adapter.fronts), a child
of the harness like Puma, so both trees are "the server's processes" and
count in the all-process CPU. The front-end CPU is nginx's master and
workers together, as Passenger's core is for Passenger.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .. import procs
from .nginx import is_nginx, main_config, start_argv
from .puma import Puma

if TYPE_CHECKING:
    from .server import Server

PROXY = """    upstream puma {{
        server unix:{sock} fail_timeout=0;
    }}
    server {{
        listen 127.0.0.1:{port};
        keepalive_timeout 5;
        root {app}/public;
        location / {{ try_files $uri $uri.html $uri/index.html @puma; }}
        location @puma {{
            proxy_pass http://puma;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_redirect off;
        }}
    }}
"""


def socket_path(srv: Server) -> Path:
    # Short: the work directory is /tmp/rtbench.*/NNN/s, far below the
    # 108 bytes a Unix socket path may take.
    return srv.dir / "puma.sock"


def config(srv: Server) -> str:
    return main_config(srv.dir, PROXY.format(sock=socket_path(srv), port=srv.port, app=srv.app))


class PumaNginx(Puma):
    name = "puma-nginx"
    packages = ("puma", "nginx")
    label_form = "puma {variant} behind nginx"

    def bind(self, srv: Server) -> str:
        return f"unix://{socket_path(srv)}"

    def fronts(self, srv: Server) -> list[tuple[str, list[str]]]:
        return [("nginx", start_argv(srv, config(srv)))]

    def role(self, cmd: str) -> str:
        return "front" if is_nginx(cmd) else super().role(cmd)

    def frontend_pid(self, srv: Server) -> int | None:
        # nginx's master (`daemon off`: the process the harness started).
        return srv.fronts[0].pid if srv.fronts else None

    def frontend_pids(self, srv: Server) -> list[int]:
        master = self.frontend_pid(srv)
        if master is None:
            return []
        return [master] + sorted(pid for pid, (ppid, _, _) in procs.server_tree().items() if ppid == master)
