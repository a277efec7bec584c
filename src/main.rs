//! The `lacquer` binary: `lacquer --config FILE` runs; `--test` validates and exits.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::ExitCode;

use lacquer::config::Config;

/// mimalloc instead of glibc's malloc: a request allocates and frees dozens of small objects
/// (pingora's session, header maps, the cache state machine), and glibc's free path was the
/// largest user-space cost of a cache hit (docs/benchmarks.md). mimalloc's 2.x line (the
/// crate's `v2` feature): the 3.x default took a slow path for Rust's aligned allocations, about
/// 4 % more instructions per hit.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: lacquer --config FILE [--test]

  --config FILE   the YAML configuration (see docs/configuration.md)
  --test          validate the configuration, print every problem, and exit
  --version       print the version and exit
";

fn main() -> ExitCode {
    let mut config_path: Option<PathBuf> = None;
    let mut test_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => match args.next() {
                Some(p) => config_path = Some(PathBuf::from(p)),
                None => {
                    eprintln!("--config needs a file\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--test" | "-t" => test_only = true,
            "--version" | "-V" => {
                println!("lacquer {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "--help" | "-h" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(path) = config_path else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            for line in &e.0 {
                eprintln!("{line}");
            }
            return ExitCode::from(1);
        }
    };
    if test_only {
        println!("{}: configuration ok", path.display());
        return ExitCode::SUCCESS;
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let run_args = lacquer::server::run_args(&config);
    let server = match lacquer::server::build(config, path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    log::info!("lacquer {} starting", env!("CARGO_PKG_VERSION"));
    server.run(run_args);
    ExitCode::SUCCESS
}
