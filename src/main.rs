//! The `rustrack` binary: parses the command line (with the settings
//! file and `RUSTRACK_*` variables, for `start` and `config`) and hands
//! off to the role it names.

use rustrack::cli::Command;
use rustrack::client;
use rustrack::config::AppSpec;
use rustrack::report::AdminRequest;
use rustrack::settings::{self, ParseError};

fn main() {
    let (cli, resolved) = match settings::parse() {
        Ok(parsed) => (parsed.cli, parsed.resolved),
        Err(ParseError::Clap(e)) => e.exit(),
        Err(ParseError::Settings(e)) => {
            eprintln!("rustrack: error: {e:#}");
            std::process::exit(1);
        }
    };
    let result = match cli.command {
        Command::Start(args) => rustrack::front::run(*args, resolved),
        Command::Config(args) => settings::print(&resolved, args.json),
        Command::Status(args) => client::status::run(args),
        Command::Memory(args) => client::memory::run(args),
        Command::Compare(args) => client::compare::run(args),
        Command::Restart(c) => client::run_command(
            &c,
            AdminRequest::Restart {
                app: c.app_root.canonicalize().ok(),
            },
        ),
        Command::Stop(args) => client::run_command(
            &args.client,
            AdminRequest::Stop {
                graceful: args.graceful,
            },
        ),
        Command::Scale(args) => client::run_command(
            &args.client,
            AdminRequest::Scale {
                delta: args.delta,
                app: args.client.app_root.canonicalize().ok(),
            },
        ),
        Command::Preloader(args) => {
            spec(&args.spec).and_then(|s| rustrack::rack::run_preloader(&s))
        }
        Command::Worker(args) => {
            spec(&args.spec).and_then(|s| rustrack::rack::run_direct_worker(&s, args.worker_id))
        }
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("rustrack: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn spec(json: &str) -> anyhow::Result<AppSpec> {
    serde_json::from_str(json).map_err(|e| anyhow::anyhow!("bad --spec: {e}"))
}
