//! rustrack: a Rust-hosted application server for Ruby (Rack) apps.
//!
//! Three kinds of process run from this one binary:
//! - the front end (`front`, `pool`): tokio + hyper, no Ruby;
//! - the preloader and workers (`rack`): embedded Ruby, no tokio.
//!
//! They talk over Unix sockets: `protocol` frames requests and responses
//! between the front end and workers, `control` carries the preloader's
//! commands and reports. In the front end, `front` speaks HTTP to clients,
//! `upstream` translates between HTTP and the worker protocol, and `pool`
//! lends workers out and owns every process. `client` holds the command-line
//! clients of a running instance, which share only `report` with the server.
//! `settings` layers the environment and a settings file under the
//! command line `cli` defines.
//! See docs/architecture.md.

pub mod apps;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod front;
pub mod instance;
pub mod logfile;
pub mod metrics;
pub mod pool;
pub mod procfs;
pub mod protocol;
pub mod rack;
pub mod recent;
pub mod report;
pub mod settings;
pub mod upstream;
