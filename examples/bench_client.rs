//! Load helpers for `bench/run.py`, printing one JSON line:
//! - `fill BASE_URL PREFIX N CONCURRENCY`: GET `BASE_URL/PREFIX/i` for i in 0..N (fills a cache);
//! - `stampede URL N`: N simultaneous GETs of one cold URL; latency of each.
//!
//! With `BENCH_HOST` set, every request says that `Host` (several nodes serving one site).
//!
//! `cargo run --release --example bench_client -- stampede http://127.0.0.1:6090/slow/x 200`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(host) = std::env::var("BENCH_HOST") {
        headers.insert(reqwest::header::HOST, host.parse().expect("BENCH_HOST"));
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .no_proxy()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    match args.first().map(String::as_str) {
        Some("fill") => {
            let base = args[1].clone();
            let prefix = args[2].clone();
            let n: usize = args[3].parse().expect("N");
            let conc: usize = args[4].parse().expect("CONCURRENCY");
            let next = Arc::new(AtomicUsize::new(0));
            let errors = Arc::new(AtomicUsize::new(0));
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..conc {
                let (client, base, prefix, next, errors) = (
                    client.clone(),
                    base.clone(),
                    prefix.clone(),
                    next.clone(),
                    errors.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return;
                        }
                        let ok = match client.get(format!("{base}/{prefix}/{i}")).send().await {
                            Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                            Err(_) => false,
                        };
                        if !ok {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            println!(
                "{{\"requests\": {n}, \"errors\": {}, \"seconds\": {:.3}}}",
                errors.load(Ordering::Relaxed),
                started.elapsed().as_secs_f64()
            );
        }
        Some("stampede") => {
            let url = args[1].clone();
            let n: usize = args[2].parse().expect("N");
            // open the connections first, so the requests leave together
            let barrier = Arc::new(tokio::sync::Barrier::new(n));
            let mut tasks = Vec::new();
            for _ in 0..n {
                let (client, url, barrier) = (client.clone(), url.clone(), barrier.clone());
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    let t = Instant::now();
                    let ok = match client.get(&url).send().await {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    (ok, t.elapsed().as_secs_f64())
                }));
            }
            let mut lat = Vec::new();
            let mut errors = 0;
            for t in tasks {
                match t.await {
                    Ok((true, l)) => lat.push(l),
                    _ => errors += 1,
                }
            }
            lat.sort_by(|a, b| a.total_cmp(b));
            let pick = |q: f64| {
                lat.get(((lat.len() as f64 - 1.0) * q) as usize)
                    .copied()
                    .unwrap_or(0.0)
            };
            println!(
                "{{\"ok\": {}, \"errors\": {errors}, \"min\": {:.4}, \"p50\": {:.4}, \"p99\": {:.4}, \"max\": {:.4}}}",
                lat.len(),
                pick(0.0),
                pick(0.5),
                pick(0.99),
                pick(1.0)
            );
        }
        _ => eprintln!("usage: bench_client fill BASE PREFIX N CONC | stampede URL N"),
    }
}
