use test_support::{TEST_PEPPER, run_to_exit, service_command};

use crate::BINARY;

/// Runs `key-admin serve` with a base of valid settings plus `changes`; expects a refusal.
fn refused(changes: &[(&str, Option<&str>)]) -> String {
    let mut command = service_command(BINARY);
    command
        .arg("serve")
        .env("KEYMETER_ADMIN_LISTEN", "127.0.0.1:0")
        .env("KEYMETER_PEPPER", TEST_PEPPER);
    for (name, value) in changes {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let (status, stderr) = run_to_exit(command);
    assert_eq!(status.code(), Some(2), "refused with exit code 2: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    stderr.trim_end().to_owned()
}

#[test]
fn a_missing_pepper_is_named() {
    assert_eq!(
        refused(&[("KEYMETER_PEPPER", None)]),
        "error: KEYMETER_PEPPER (--pepper) is required but not set"
    );
}

#[test]
fn a_pepper_of_the_wrong_length_is_named_and_not_echoed() {
    let line = refused(&[("KEYMETER_PEPPER", Some("00ff00ff"))]);
    assert_eq!(
        line,
        "error: KEYMETER_PEPPER (--pepper) invalid value: must be 64 hex characters (32 bytes), got 8 characters"
    );
}

#[test]
fn malformed_urls_are_named() {
    let line = refused(&[("KEYMETER_DATABASE_URL", Some("not a url"))]);
    assert!(
        line.starts_with("error: KEYMETER_DATABASE_URL (--database-url) invalid value: not a URL"),
        "{line}"
    );
    let line = refused(&[("KEYMETER_REDIS_NODES", Some("http://127.0.0.1:7000"))]);
    assert!(line.starts_with("error: KEYMETER_REDIS_NODES (--redis-nodes) invalid value: scheme must be redis or rediss"), "{line}");
    let line = refused(&[("KEYMETER_AMQP_URL", Some("amqp//nohost"))]);
    assert!(
        line.starts_with("error: KEYMETER_AMQP_URL (--amqp-url) invalid value"),
        "{line}"
    );
    let line = refused(&[("KEYMETER_ADMIN_LISTEN", Some("localhost"))]);
    assert!(
        line.starts_with("error: KEYMETER_ADMIN_LISTEN (--listen) invalid value"),
        "{line}"
    );
}

#[test]
fn a_short_bootstrap_token_is_named() {
    let line = refused(&[("KEYMETER_BOOTSTRAP_ADMIN_TOKEN", Some("short"))]);
    assert_eq!(
        line,
        "error: KEYMETER_BOOTSTRAP_ADMIN_TOKEN (--bootstrap-admin-token) invalid value: must be at least 32 characters"
    );
}
