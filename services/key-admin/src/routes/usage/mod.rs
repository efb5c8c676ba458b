//! Usage analytics, answered from `usage_logs`.

pub mod json;
mod key;
mod summary;

use utoipa_actix_web::service_config::ServiceConfig;

pub fn configure(config: &mut ServiceConfig) {
    config
        .service(key::key_usage)
        .service(summary::usage_summary);
}
