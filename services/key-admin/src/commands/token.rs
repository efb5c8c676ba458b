use crate::bootstrap;
use crate::settings::TokenCreateArgs;

pub async fn create(args: &TokenCreateArgs) -> anyhow::Result<()> {
    let name = args.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        anyhow::bail!("--name must be 1 to 100 characters");
    }
    let token = domain::admin_token::generate_admin_token();
    let pool = storage::postgres::connect_pool(&args.database.settings())?;
    let mut conn = pool.get().await?;
    let id = bootstrap::store_admin_token(
        &mut conn,
        &args.pepper.pepper,
        &token,
        name,
        &args.scopes,
        "cli",
    )
    .await?
    .ok_or_else(|| {
        anyhow::anyhow!("a token with this hash exists already; run the command again")
    })?;
    // The token is shown once, here; only its hash is stored.
    println!("id: {id}");
    println!("token: {token}");
    Ok(())
}
