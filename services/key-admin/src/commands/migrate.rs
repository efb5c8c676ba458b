use crate::settings::MigrateArgs;

pub async fn run(args: &MigrateArgs) -> anyhow::Result<()> {
    let applied = storage::postgres::run_pending_migrations(&args.database.database_url).await?;
    if applied.is_empty() {
        println!("migrations: up to date");
    } else {
        println!("migrations: applied {}", applied.join(", "));
    }
    Ok(())
}
