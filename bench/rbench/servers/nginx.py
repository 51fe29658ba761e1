"""nginx (Debian's), in two roles: serving the app's public/ directory
itself, the reference for rustrack's static files (the `static` scenario,
this module's adapter), and as the reverse proxy in front of Puma
(puma_nginx.py). Both start it the same way, from `start_argv`.

`main_config` writes what both share: `daemon off` (the harness stops it by
PID; the master stays the harness's child and its workers are in the
server's tree), one worker process per CPU (rustrack's front end runs one
event-loop thread per CPU), `user root` (the app copy and Puma's socket are
under a 0700 directory in /tmp), the pid file and error log in the server's
work directory, no access log, keep-alive to clients without a request
limit (nginx's default closes a connection after 1000 requests; rustrack has
no such limit), the Debian MIME table with `sendfile on`, and every temp
path nginx might write inside the work directory. The static server block
adds the same lookup as rustrack: `try_files $uri $uri.html
$uri/index.html`. Serving files, nginx has no workers in rustrack's sense:
it is "ready" once it answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .adapter import Adapter

if TYPE_CHECKING:
    from .server import Server

MAIN = """daemon off;
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
{http}}}
"""

STATIC = """    server {{
        listen 127.0.0.1:{port};
        root {app}/public;
        location / {{ try_files $uri $uri.html $uri/index.html =404; }}
    }}
"""


def main_config(dir: Path, http: str) -> str:
    """nginx.conf for a server whose work directory is dir, with `http`
    (server and upstream blocks) inside the shared http block."""
    return MAIN.format(dir=dir, http=http)


def config(srv: Server) -> str:
    return main_config(srv.dir, STATIC.format(port=srv.port, app=srv.app))


def start_argv(srv: Server, conf_text: str) -> list[str]:
    """Writes conf_text to nginx.conf in srv's work directory and returns
    the command that runs nginx on it. `-e` sends the errors nginx logs
    before it has read the config there too, not to /var/log/nginx."""
    conf = srv.dir / "nginx.conf"
    conf.write_text(conf_text)
    (srv.dir / "nginx-tmp").mkdir(exist_ok=True)
    return ["nginx", "-c", str(conf), "-p", str(srv.dir), "-e", str(srv.dir / "nginx-error.log")]


def is_nginx(cmd: str) -> bool:
    """nginx's master and worker processes, by their titles."""
    return cmd.startswith("nginx:")


class Nginx(Adapter):
    name = "nginx"
    packages = ("nginx",)

    def argv(self, srv: Server) -> list[str]:
        return start_argv(srv, config(srv))

    def ready_workers(self, srv: Server) -> int:
        # No app workers: answering (Server.start checked that) is ready.
        return srv.workers

    def role(self, cmd: str) -> str:
        return "worker" if "worker process" in cmd else "master"
