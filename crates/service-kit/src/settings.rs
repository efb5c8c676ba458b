//! Settings shared by the services, as clap argument groups: each has a flag and a
//! `KEYMETER_*` variable, and a bad value stops the process at start-up with one line that
//! names the variable (and never echoes a secret).

use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Parser};
use domain::Pepper;
use storage::postgres::PostgresSettings;
use storage::rabbitmq::RabbitSettings;
use storage::redis_cluster::RedisSettings;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/keymeter";
pub const DEFAULT_REDIS_NODES: &str = "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003,redis://127.0.0.1:7004,redis://127.0.0.1:7005";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[derive(Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// PostgreSQL URL (postgres://user[:password]@host[:port]/database).
    #[arg(long = "database-url", env = "KEYMETER_DATABASE_URL", default_value = DEFAULT_DATABASE_URL,
          value_parser = postgres_url, hide_env_values = true)]
    pub database_url: String,
    /// Most Postgres connections this process holds.
    #[arg(long = "database-max-connections", env = "KEYMETER_DATABASE_MAX_CONNECTIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub max_connections: u16,
}

impl DatabaseArgs {
    pub fn settings(&self) -> PostgresSettings {
        PostgresSettings {
            max_connections: usize::from(self.max_connections),
            ..PostgresSettings::new(self.database_url.clone())
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct RedisArgs {
    /// Redis Cluster nodes, comma separated (redis://host:port,...); any reachable subset
    /// is enough, the client discovers the others.
    #[arg(long = "redis-nodes", env = "KEYMETER_REDIS_NODES", default_value = DEFAULT_REDIS_NODES,
          value_delimiter = ',', value_parser = redis_url, hide_env_values = true)]
    pub redis_nodes: Vec<String>,
    /// Longest wait for one Redis command, in milliseconds.
    #[arg(long = "redis-timeout-ms", env = "KEYMETER_REDIS_TIMEOUT_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub redis_timeout_ms: u64,
    /// Prefix of every Redis key keymeter writes (key-admin and limiter must agree).
    #[arg(long = "redis-prefix", env = "KEYMETER_REDIS_PREFIX", default_value = "km",
          value_parser = name_prefix)]
    pub redis_prefix: String,
}

impl RedisArgs {
    pub fn settings(&self) -> RedisSettings {
        RedisSettings {
            nodes: self.redis_nodes.clone(),
            response_timeout: Duration::from_millis(self.redis_timeout_ms),
        }
    }

    pub fn layout(&self) -> storage::redis_cluster::KeyLayout {
        storage::redis_cluster::KeyLayout::new(self.redis_prefix.clone())
    }
}

#[derive(Args, Debug, Clone)]
pub struct AmqpArgs {
    /// RabbitMQ URL (amqp://user:password@host:port/vhost).
    #[arg(long = "amqp-url", env = "KEYMETER_AMQP_URL", default_value = DEFAULT_AMQP_URL,
          value_parser = amqp_url, hide_env_values = true)]
    pub amqp_url: String,
    /// Prefix of every exchange and queue name (empty in production; lets two stacks or
    /// tests share one broker).
    #[arg(long = "amqp-prefix", env = "KEYMETER_AMQP_PREFIX", default_value = "",
          value_parser = amqp_prefix)]
    pub amqp_prefix: String,
}

impl AmqpArgs {
    pub fn settings(&self) -> RabbitSettings {
        RabbitSettings {
            url: self.amqp_url.clone(),
        }
    }

    pub fn topology(&self) -> storage::rabbitmq::Topology {
        storage::rabbitmq::Topology::with_prefix(self.amqp_prefix.clone())
    }
}

#[derive(Args, Debug, Clone)]
pub struct PepperArgs {
    /// The 32-byte secret that keys API key hashes, as 64 hex characters. Every key-admin and
    /// limiter instance must use the same one.
    #[arg(long = "pepper", env = "KEYMETER_PEPPER", value_parser = pepper, hide_env_values = true)]
    pub pepper: Pepper,
}

#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log filter in tracing's EnvFilter syntax, e.g. `info` or `limiter=debug,info`.
    #[arg(
        long = "log",
        env = "KEYMETER_LOG",
        default_value = "info",
        global = true
    )]
    pub log: String,
    /// `text` for people, `json` for log collectors.
    #[arg(
        long = "log-format",
        env = "KEYMETER_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: crate::logging::LogFormat,
}

fn name_prefix(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 32
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(text.to_owned())
    } else {
        Err("must be 1 to 32 of [A-Za-z0-9._-]".into())
    }
}

fn amqp_prefix(text: &str) -> Result<String, String> {
    if text.is_empty() {
        Ok(String::new())
    } else {
        name_prefix(text)
    }
}

fn pepper(text: &str) -> Result<Pepper, String> {
    Pepper::from_hex(text).map_err(|e| e.to_string())
}

fn checked_url(text: &str, schemes: &[&str], example: &str) -> Result<String, String> {
    let url = url::Url::parse(text.trim())
        .map_err(|e| format!("not a URL ({e}); expected e.g. {example}"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!(
            "scheme must be {}, got {:?}; expected e.g. {example}",
            schemes.join(" or "),
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("has no host; expected e.g. {example}"));
    }
    Ok(text.trim().to_owned())
}

fn postgres_url(text: &str) -> Result<String, String> {
    checked_url(text, &["postgres", "postgresql"], DEFAULT_DATABASE_URL)
}

fn redis_url(text: &str) -> Result<String, String> {
    checked_url(text, &["redis", "rediss"], "redis://127.0.0.1:7000")
}

fn amqp_url(text: &str) -> Result<String, String> {
    checked_url(text, &["amqp", "amqps"], DEFAULT_AMQP_URL)
}

/// Parses the command line and environment, or exits with one line that names the setting.
pub fn parse_or_exit<T: Parser>() -> T {
    match parse_from(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(ParseOutcome::Display(text)) => {
            print!("{text}");
            std::process::exit(0);
        }
        Err(ParseOutcome::Invalid(line)) => {
            eprintln!("{line}");
            std::process::exit(2);
        }
    }
}

#[derive(Debug)]
pub enum ParseOutcome {
    /// `--help` or `--version`: print and leave successfully.
    Display(String),
    /// A bad or missing setting, as one line.
    Invalid(String),
}

pub fn parse_from<T, I, S>(args: I) -> Result<T, ParseOutcome>
where
    T: Parser,
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    let mut command = T::command();
    let matches = command
        .try_get_matches_from_mut(args)
        .map_err(|e| describe(&command, &e))?;
    T::from_arg_matches(&matches).map_err(|e| describe(&command, &e))
}

fn describe(command: &clap::Command, error: &clap::Error) -> ParseOutcome {
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return ParseOutcome::Display(error.render().to_string());
    }
    let invalid_arg = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => Some(arg.clone()),
        Some(ContextValue::Strings(args)) => args.first().cloned(),
        _ => None,
    };
    let setting = invalid_arg
        .as_deref()
        .map(|arg| setting_name(command, arg))
        .unwrap_or_else(|| "command line".to_owned());
    let reason = match error.kind() {
        ErrorKind::MissingRequiredArgument => "is required but not set".to_owned(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue => {
            use std::error::Error as _;
            match error.source() {
                Some(source) => format!("invalid value: {source}"),
                None => "invalid value".to_owned(),
            }
        }
        // Other errors (unknown flag, …) hold no setting value, so clap's words are safe.
        _ => return ParseOutcome::Invalid(first_line(&error.render().to_string())),
    };
    ParseOutcome::Invalid(format!("error: {setting} {reason}"))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// `KEYMETER_X (--x)` for an argument as clap names it in errors (`--x <X>`).
fn setting_name(command: &clap::Command, shown: &str) -> String {
    let long = shown
        .trim_start_matches('-')
        .split([' ', '='])
        .next()
        .unwrap_or_default();
    let all = std::iter::once(command).chain(command.get_subcommands());
    for cmd in all {
        for arg in cmd.get_arguments() {
            if arg.get_long() == Some(long) {
                return match arg.get_env() {
                    Some(env) => format!("{} (--{long})", env.to_string_lossy()),
                    None => format!("--{long}"),
                };
            }
        }
    }
    shown.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser, Debug)]
    struct Example {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        amqp: AmqpArgs,
        #[command(flatten)]
        pepper: PepperArgs,
    }

    const PEPPER: &str = "0000000000000000000000000000000000000000000000000000000000000001";

    fn invalid(args: &[&str]) -> String {
        match parse_from::<Example, _, _>(args.iter().copied()) {
            Err(ParseOutcome::Invalid(line)) => line,
            other => panic!("expected an invalid setting, got {other:?}"),
        }
    }

    // These tests pass every value as a flag, which wins over any KEYMETER_* variable the
    // test process has; a missing setting is tested on the binaries (tests/e2e), whose
    // environment the test controls.

    #[test]
    fn flags_parse_into_settings() {
        let parsed = parse_from::<Example, _, _>([
            "x",
            "--pepper",
            PEPPER,
            "--redis-nodes",
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001",
            "--redis-prefix",
            "t1",
        ])
        .expect("valid");
        assert_eq!(parsed.redis.settings().nodes.len(), 2);
        assert_eq!(parsed.redis.layout().prefix(), "t1");
    }

    #[test]
    fn a_short_pepper_says_why_without_echoing_it() {
        let line = invalid(&["x", "--pepper", "abcd"]);
        assert!(
            line.starts_with("error: KEYMETER_PEPPER (--pepper) invalid value: must be 64 hex")
        );
        assert!(!line.contains("abcd"), "{line}");
        assert_eq!(line.lines().count(), 1);
    }

    #[test]
    fn malformed_urls_name_their_variable() {
        let line = invalid(&["x", "--pepper", PEPPER, "--database-url", "mysql://h/db"]);
        assert!(line.starts_with("error: KEYMETER_DATABASE_URL (--database-url) invalid value: scheme must be postgres"), "{line}");
        let line = invalid(&[
            "x",
            "--pepper",
            PEPPER,
            "--redis-nodes",
            "redis://a:1,not a url",
        ]);
        assert!(
            line.starts_with(
                "error: KEYMETER_REDIS_NODES (--redis-nodes) invalid value: not a URL"
            ),
            "{line}"
        );
        let line = invalid(&["x", "--pepper", PEPPER, "--amqp-url", "amqp://"]);
        assert!(
            line.starts_with("error: KEYMETER_AMQP_URL (--amqp-url)"),
            "{line}"
        );
    }
}
