//! The config file: shipped files load, bad files are refused with the key and the problem.

use std::process::Command;

use crate::support::proxy::binary;

fn check(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(binary())
        .arg("--config")
        .arg(path)
        .arg("--test")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn every_shipped_config_file_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let (ok, err) = check(&path);
            assert!(ok, "{}: {err}", path.display());
            n += 1;
        }
    }
    assert!(n >= 1);
}

#[test]
fn a_bad_config_is_refused_with_one_line_per_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listen: [\"127.0.0.1:6081\"]\nupstreams:\n  - addr: \"127.0.0.1:8080\"\ncache:\n  max_size: lots\n  lock_timeout: forever\n",
    )
    .unwrap();
    let (ok, err) = check(&path);
    assert!(!ok);
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        vec![
            "cache.max_size: expected a size like \"256MiB\", got \"lots\"",
            "cache.lock_timeout: expected a duration like \"30s\", \"250ms\" or \"5m\", got \"forever\"",
        ]
    );
}

#[test]
fn an_unknown_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.yaml");
    std::fs::write(
        &path,
        "upstreams:\n  - addr: \"127.0.0.1:8080\"\n    wieght: 2\n",
    )
    .unwrap();
    let (ok, err) = check(&path);
    assert!(!ok);
    assert!(
        err.starts_with("upstreams[0].wieght: unknown field `wieght`"),
        "{err}"
    );
}

#[test]
fn running_with_a_bad_config_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "upstreams: []\n").unwrap();
    let out = Command::new(binary())
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "upstreams: at least one app server is required"
    );
}
