"""nginx (Debian's), serving the app's public/ directory itself: the
reference for rustrack's static files (the `static` scenario only).

The adapter writes nginx.conf into the server's work directory: `daemon
off` (the harness stops it by PID), one worker process per CPU (rustrack's
front end runs one event-loop thread per CPU), `user root` (the app copy is
under a 0700 directory in /tmp), `sendfile on`, no access log, keep-alive
without a request limit (nginx's default closes a connection after 1000
requests; rustrack has no such limit), and the same lookup as rustrack:
`try_files $uri $uri.html $uri/index.html`. Every temp path nginx might
write is inside the work directory. It has no workers in rustrack's sense:
it is "ready" once it answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .adapter import Adapter

if TYPE_CHECKING:
    from .server import Server

CONF = """daemon off;
master_process on;
worker_processes auto;
user root;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/nginx-tmp/body;
    proxy_temp_path {dir}/nginx-tmp/proxy;
    fastcgi_temp_path {dir}/nginx-tmp/fastcgi;
    uwsgi_temp_path {dir}/nginx-tmp/uwsgi;
    scgi_temp_path {dir}/nginx-tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {app}/public;
        location / {{ try_files $uri $uri.html $uri/index.html =404; }}
    }}
}}
"""


def config(srv: Server) -> str:
    return CONF.format(dir=srv.dir, port=srv.port, app=srv.app)


class Nginx(Adapter):
    name = "nginx"
    packages = ("nginx",)

    def argv(self, srv: Server) -> list[str]:
        conf = srv.dir / "nginx.conf"
        conf.write_text(config(srv))
        (srv.dir / "nginx-tmp").mkdir(exist_ok=True)
        return ["nginx", "-c", str(conf), "-p", str(srv.dir), "-e", str(srv.dir / "nginx-error.log")]

    def ready_workers(self, srv: Server) -> int:
        # No app workers: answering (Server.start checked that) is ready.
        return srv.workers

    def role(self, cmd: str) -> str:
        return "worker" if "worker process" in cmd else "master"
