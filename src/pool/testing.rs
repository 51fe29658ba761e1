//! A pool with a fake spawner and fake workers, for unit tests of the
//! driver and of the exchange (as watchexec tests its supervisor with a
//! fake child). The test plays the spawner: it reads the commands the
//! driver sends and answers with events; a "worker" is the far end of a
//! socketpair that greeted with `Event::Hello`.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::machine::{Config, WorkerId};
use super::spawner::{Command, SpawnerHandle};
use super::{Event, Pool, PoolOptions, WorkerConn};
use crate::config::SpawnMethod;
use crate::metrics::AppMetrics;
use crate::protocol::Hello;

pub(crate) struct FakePool {
    pub pool: Arc<Pool>,
    pub commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
}

impl FakePool {
    /// Starts the pool's driver with `config`. Call inside a runtime.
    pub fn start(config: Config) -> FakePool {
        let (spawner, commands) = SpawnerHandle::fake();
        let (events, rx) = mpsc::unbounded_channel();
        let pool = Pool::new(
            PoolOptions {
                machine: config,
                sample_interval: Duration::from_secs(3600),
                stop_grace: Duration::from_secs(30),
            },
            AppMetrics::standalone(),
            (SpawnMethod::Smart, "/fake".into()),
            spawner,
            super::processes::Processes::new(),
            events.clone(),
        );
        pool.run(rx);
        FakePool {
            pool,
            commands,
            events,
        }
    }

    /// The next command the driver sent to the spawner.
    pub async fn command(&mut self) -> Command {
        tokio::time::timeout(Duration::from_secs(5), self.commands.recv())
            .await
            .expect("a spawner command within 5 s")
            .expect("the driver is running")
    }

    /// Waits for a spawn command and returns the worker id it names.
    pub async fn spawn_asked(&mut self) -> WorkerId {
        loop {
            match self.command().await {
                Command::Spawn(id) => return id,
                _ => continue,
            }
        }
    }

    /// Greets as worker `id`; returns the worker's end of its connection.
    pub fn greet(&self, id: WorkerId) -> UnixStream {
        self.greet_session(id, 0, 1)
    }

    /// Greets as session `slot` of `threads` of worker `id`; returns the
    /// worker's end of that connection.
    pub fn greet_session(&self, id: WorkerId, slot: u32, threads: u32) -> UnixStream {
        let (ours, theirs) = UnixStream::pair().unwrap();
        self.event(Event::Hello {
            hello: Hello {
                version: crate::protocol::VERSION,
                worker_id: id,
                pid: 0,
                slot,
                threads,
            },
            conn: WorkerConn::new(ours, BytesMut::new()),
        });
        theirs
    }

    pub fn event(&self, event: Event) {
        self.events.send(event).unwrap();
    }

    /// Waits until `f` holds of the pool's status.
    pub async fn until(&self, what: &str, f: impl Fn(&crate::report::StatusReport) -> bool) {
        for _ in 0..500 {
            if f(&self.pool.status()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}: {:?}", self.pool.status());
    }
}
