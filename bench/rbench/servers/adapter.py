"""The interface every server adapter implements (one module per server).

An adapter is stateless: each method gets the `Server` it is about (its
port, private app copy, work directory, instance registry directory and log
file) and answers from the server's own records: a status command, its log
or the command lines of its processes. The `Server` class does the generic
part (copy the app, start, wait, stop); everything that differs between
rustrack, Passenger, Puma and Unicorn is here. A configuration of two
servers (Puma behind nginx) names the second one in `fronts`: `Server`
starts it after the first and stops it first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import Server


class Adapter:
    #: the --servers name, and Spec.server
    name: str = ""
    #: Debian packages the server needs (besides the harness's own)
    packages: tuple[str, ...] = ()
    #: the configuration's name in the tables (Spec.label), from the Spec's
    #: server and variant
    label_form: str = "{server} {variant}"

    def argv(self, srv: Server) -> list[str]:
        """The command line that starts srv on 127.0.0.1:srv.port with
        srv.workers workers (pool of srv.max_pool), in srv.spec.variant mode.
        May write a config file into srv.dir."""
        raise NotImplementedError

    def fronts(self, srv: Server) -> list[tuple[str, list[str]]]:
        """Processes that run in front of argv's, each (name, command line):
        a reverse proxy. Server starts them right after argv's (in the app
        directory, output to NAME.log), counts them among the server's
        processes and TERMs them first. May write config files."""
        return []

    def ready_workers(self, srv: Server) -> int:
        """How many workers can take a request now."""
        raise NotImplementedError

    def role(self, cmd: str) -> str:
        """front (HTTP front end and helpers), master (preloader or master
        process) or worker, from a process's command line."""
        raise NotImplementedError

    def frontend_pid(self, srv: Server) -> int | None:
        """The process that speaks HTTP to clients and proxies to workers,
        if the server has a separate one."""
        return None

    def frontend_pids(self, srv: Server) -> list[int]:
        """Every process of the HTTP front end, whose CPU time is the
        "front-end CPU" figure: frontend_pid's alone unless the front end
        has several processes (nginx's master and workers)."""
        pid = self.frontend_pid(srv)
        return [pid] if pid else []

    def app_processed(self, srv: Server) -> dict:
        """For the throughput record: {"app_processed": requests the app
        saw}, when the server keeps that count; else {}."""
        return {}

    def worker_processed(self, srv: Server) -> dict:
        """For the memory record: {"processed": [requests per worker]}, when
        the server keeps that count; else {}."""
        return {}

    def settled(self, srv: Server) -> bool:
        """Whether the server has finished changing its processes (a
        rustrack refork rolls out after the load); others are always."""
        return True

    def refork_figures(self, srv: Server) -> dict:
        """For the realmem record: {"reforks", "template", "mold_spawn_ms"}
        when the server reforks; else {}."""
        return {}

    def spawn_ms(self, srv: Server) -> dict:
        """For the spawn record: {"spawn_ms": [ms per worker], "source": how
        it was read}. Only servers in scenarios.SPAWN_SPECS have it."""
        raise NotImplementedError(f"{self.name} keeps no spawn times")
