//! The command line: errors that say what to do.

use crate::util::larder_cli;

#[test]
fn a_bad_config_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("larder.toml");
    std::fs::write(&config, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out = larder_cli(&["serve", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid config file") && err.contains("larder.toml") && err.contains("lisen"), "{err}");

    let out = larder_cli(&["serve", "--tls-cert", "/nonexistent.pem", "--config", "/dev/null"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls_key"), "TLS needs both files");

    let out = larder_cli(&["warm", "--config", "/dev/null", "--upstream", "http://127.0.0.1:9/simple/"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to warm"));
}
