use key_admin::settings::{Cli, Command, TokenCommand};
use key_admin::{commands, serve};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = service_kit::settings::parse_or_exit();
    let telemetry = service_kit::logging::init("key-admin", &cli.log.log, cli.log.log_format);
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Migrate(args) => commands::migrate::run(&args).await,
        Command::Token {
            command: TokenCommand::Create(args),
        } => commands::token::create(&args).await,
    };
    telemetry.shutdown();
    result
}
