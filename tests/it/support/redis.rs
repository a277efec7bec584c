//! A real `redis-server` for cluster tests: on a free loopback port, no persistence, stopped
//! on drop; `restart` brings it back empty on the same port (Redis that lost its data).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Redis {
    /// Start one; the test fails if `redis-server` is not installed (scripts/setup.sh installs it).
    pub async fn start() -> Redis {
        let addr = super::proxy::free_port();
        let mut r = Redis { addr, child: None };
        r.spawn().await;
        r
    }

    /// The URL for `cluster.redis`.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.addr.port().to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not start on {}", self.addr);
    }

    /// Kill it (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop it answering without losing anything (SIGSTOP), as a network partition would;
    /// `resume` lets it go on.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        if let Some(c) = &self.child {
            let ok = std::process::Command::new("kill")
                .args([&format!("-{name}"), &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -{name}");
        }
    }

    /// Start it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
