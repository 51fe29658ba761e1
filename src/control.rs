//! Messages between the front end and the preloader.
//!
//! The channel is a socketpair the front end hands to the preloader as fd 3;
//! each message is one line of JSON. Spawns are rare and the messages tiny,
//! so readability beats compactness here (unlike the request protocol).

use serde::{Deserialize, Serialize};

/// The fd number the preloader finds its end of the control channel on.
pub const CONTROL_FD: i32 = 3;

/// Front end → preloader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Fork a worker that will greet the front end with this id.
    Spawn { worker_id: u64 },
    /// Exit once the current command is done.
    Shutdown,
}

/// Preloader → front end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Report {
    /// The app is loaded; spawn commands are welcome. `huge_pages` says
    /// what `--preload-hugepages` did, when it was on.
    Ready {
        pid: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        huge_pages: Option<HugePages>,
    },
    /// config.ru could not be loaded; the preloader exits after this.
    LoadError { message: String },
    /// A worker was forked (it greets the front end on its own).
    Spawned { worker_id: u64, pid: u32 },
    /// `Process.fork` itself failed.
    SpawnFailed { worker_id: u64, message: String },
    /// A forked worker exited and was reaped.
    Exited {
        pid: u32,
        code: Option<i32>,
        signal: Option<i32>,
    },
}

/// The preloader's heap collapse into transparent huge pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugePages {
    /// 2 MB ranges now backed by a huge page.
    pub collapsed: usize,
    /// Ranges the kernel refused to collapse.
    pub failed: usize,
    /// Ranges left alone for having too few resident pages.
    pub sparse: usize,
    /// Time the collapse took.
    pub millis: u64,
}

pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(msg).expect("control messages serialize");
    line.push(b'\n');
    line
}

/// How a process ended, for logs.
pub fn describe_exit(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (_, Some(sig)) => {
            let name = nix::sys::signal::Signal::try_from(sig)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("signal {sig}"));
            format!("killed by {name}")
        }
        (Some(code), None) => format!("exited with status {code}"),
        (None, None) => "exited".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_json_lines() {
        let line = encode(&Command::Spawn { worker_id: 7 });
        assert_eq!(line, b"{\"command\":\"spawn\",\"worker_id\":7}\n");
        let report: Report = serde_json::from_slice(&encode(&Report::Exited {
            pid: 9,
            code: None,
            signal: Some(9),
        }))
        .unwrap();
        assert_eq!(
            report,
            Report::Exited {
                pid: 9,
                code: None,
                signal: Some(9)
            }
        );
        assert_eq!(describe_exit(None, Some(9)), "killed by SIGKILL");
    }
}
