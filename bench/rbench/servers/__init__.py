"""The servers under test: `Spec` (which server, in which mode), `Server`
(one running instance) and one adapter module per server (rustrack,
passenger, puma, unicorn, nginx for static files, and puma_nginx for Puma
behind nginx) that knows its command line, how to tell its workers are
ready, and what its processes are."""

from .server import ADAPTERS, PEERS, Server, ServerError, Spec, TIGHT_GC

__all__ = ["ADAPTERS", "PEERS", "Server", "ServerError", "Spec", "TIGHT_GC"]
