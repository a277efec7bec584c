//! The real lacquer binary in front of test origins: a YAML file in a temp dir, free loopback
//! ports, polled until ready, killed on drop. Its log is kept in the temp dir and printed if
//! it fails to start.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running lacquer.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(
    addr: SocketAddr,
    admin: SocketAddr,
    upstreams: &[(SocketAddr, u32)],
    extra: &str,
) -> String {
    config_text_listening(&format!("\"{addr}\""), admin, upstreams, extra)
}

/// The config with `listen_entry` (YAML) as the one proxy listener.
fn config_text_listening(
    listen_entry: &str,
    admin: SocketAddr,
    upstreams: &[(SocketAddr, u32)],
    extra: &str,
) -> String {
    let mut yaml = format!(
        "listen: [{listen_entry}]\nthreads: 2\nadmin:\n  listen: \"{admin}\"\nupstreams:\n"
    );
    for (u, w) in upstreams {
        yaml.push_str(&format!("  - addr: \"{u}\"\n    weight: {w}\n"));
    }
    yaml.push_str(extra);
    yaml
}

/// A loopback port that was free a moment ago and that no other test of this run was given.
///
/// A port handed to two tests let one of them find the other's listener "ready" while its own
/// lacquer failed to bind: every port handed out is remembered.
pub fn free_port() -> SocketAddr {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return addr;
        }
    }
}

/// The path of the built `lacquer` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lacquer"))
}

impl Proxy {
    /// Start lacquer in front of `upstreams`, with `extra` YAML appended to a minimal config
    /// (it may set `cache:`, `bypass:` and other top-level keys).
    pub async fn start(upstreams: &[SocketAddr], extra: &str) -> Proxy {
        let weighted: Vec<(SocketAddr, u32)> = upstreams.iter().map(|u| (*u, 1)).collect();
        Proxy::start_weighted(&weighted, extra).await
    }

    /// Start lacquer in front of weighted upstreams.
    pub async fn start_weighted(upstreams: &[(SocketAddr, u32)], extra: &str) -> Proxy {
        Proxy::start_full(upstreams, extra, &[]).await
    }

    /// Start lacquer with these environment variables set for it (`purge.token_env`).
    pub async fn start_with_env(
        upstreams: &[SocketAddr],
        extra: &str,
        env: &[(&str, &str)],
    ) -> Proxy {
        let weighted: Vec<(SocketAddr, u32)> = upstreams.iter().map(|u| (*u, 1)).collect();
        Proxy::start_full(&weighted, extra, env).await
    }

    /// Start lacquer with its listener expecting a PROXY protocol header on every connection.
    pub async fn start_proxy_protocol(upstreams: &[SocketAddr], extra: &str) -> Proxy {
        Proxy::start_with_listener(upstreams, extra, |addr| {
            format!("{{addr: \"{addr}\", proxy_protocol: true}}")
        })
        .await
    }

    /// Start lacquer with `upstreams` given as YAML list items (for options such as `tls`).
    pub async fn start_raw_upstreams(upstreams: &str, extra: &str) -> Proxy {
        let extra = format!("{upstreams}{extra}");
        Proxy::start_listening(&[], &extra, &[], None).await
    }

    /// Start lacquer with its one listener written by `entry` (YAML for one `listen` entry,
    /// given the listener's address).
    pub async fn start_with_listener(
        upstreams: &[SocketAddr],
        extra: &str,
        entry: impl Fn(SocketAddr) -> String,
    ) -> Proxy {
        let weighted: Vec<(SocketAddr, u32)> = upstreams.iter().map(|u| (*u, 1)).collect();
        Proxy::start_listening(&weighted, extra, &[], Some(&entry)).await
    }

    async fn start_full(
        upstreams: &[(SocketAddr, u32)],
        extra: &str,
        env: &[(&str, &str)],
    ) -> Proxy {
        Proxy::start_listening(upstreams, extra, env, None).await
    }

    async fn start_listening(
        upstreams: &[(SocketAddr, u32)],
        extra: &str,
        env: &[(&str, &str)],
        entry: Option<&dyn Fn(SocketAddr) -> String>,
    ) -> Proxy {
        let addr = free_port();
        let admin = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = match entry {
            Some(entry) => config_text_listening(&entry(addr), admin, upstreams, extra),
            None => config_text(addr, admin, upstreams, extra),
        };
        let config = dir.path().join("lacquer.yaml");
        std::fs::write(&config, &yaml).expect("write config");
        let log = std::fs::File::create(dir.path().join("lacquer.log")).expect("log");
        let child = Command::new(binary())
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn lacquer");
        let mut proxy = Proxy {
            addr,
            admin,
            child,
            dir,
        };
        proxy.wait_ready(&yaml).await;
        proxy
    }

    async fn wait_ready(&mut self, yaml: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "lacquer exited with {status}\nconfig:\n{yaml}\nlog:\n{}",
                    self.log()
                );
            }
            let proxy_up = tokio::net::TcpStream::connect(self.addr).await.is_ok();
            let admin_up = tokio::net::TcpStream::connect(self.admin).await.is_ok();
            if proxy_up && admin_up {
                // the ports answering could still be someone else's: make sure ours bound them
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "lacquer exited with {status}\nconfig:\n{yaml}\nlog:\n{}",
                        self.log()
                    );
                }
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "lacquer did not start\nconfig:\n{yaml}\nlog:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The sum of every series of metric `name` on the admin listener's `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = crate::support::Client::new()
            .get(&format!("http://{}/metrics", self.admin))
            .await
            .text();
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(_, v)| v.parse::<f64>().ok())
            .sum()
    }

    /// What lacquer has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("lacquer.log")).unwrap_or_default()
    }

    /// `http://<proxy>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The process's resident memory in bytes (Linux).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Replace the config file (same listeners) with new upstreams and `extra` keys.
    pub fn rewrite_config(&self, upstreams: &[SocketAddr], extra: &str) {
        let weighted: Vec<(SocketAddr, u32)> = upstreams.iter().map(|u| (*u, 1)).collect();
        let yaml = config_text(self.addr, self.admin, &weighted, extra);
        std::fs::write(self.dir.path().join("lacquer.yaml"), yaml).expect("rewrite config");
    }

    /// Replace the config file with arbitrary text.
    pub fn write_config_text(&self, text: &str) {
        std::fs::write(self.dir.path().join("lacquer.yaml"), text).expect("write config");
    }

    /// Send a signal (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Wait for the process to exit, up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

/// Run `lacquer --config FILE --test` on `yaml`; assert that it refuses the file and return
/// what it said (stderr).
pub fn refused_config(yaml: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("refused.yaml");
    std::fs::write(&file, yaml).expect("write config");
    let out = Command::new(binary())
        .arg("--config")
        .arg(&file)
        .arg("--test")
        .output()
        .expect("run lacquer --test");
    assert!(!out.status.success(), "accepted:\n{yaml}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
