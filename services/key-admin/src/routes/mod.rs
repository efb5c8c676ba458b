//! Every route of the admin API, one folder per resource and one file per action.

pub mod admin_tokens;
pub mod audit_log;
pub mod keys;
pub mod openapi;
pub mod ops;
pub mod plans;
pub mod usage;

use actix_web::web;
use utoipa_actix_web::scope;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::error;

/// Request bodies above this are refused with 400 before parsing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The `/v1` API, collected into the OpenAPI document as it is registered.
pub fn configure(config: &mut ServiceConfig) {
    config.app_data(
        web::JsonConfig::default()
            .limit(MAX_BODY_BYTES)
            .error_handler(error::json_error),
    );
    config.app_data(web::QueryConfig::default().error_handler(error::query_error));
    config.app_data(web::PathConfig::default().error_handler(error::path_error));
    config.service(
        scope::scope("/v1")
            .configure(plans::configure)
            .configure(keys::configure)
            .configure(admin_tokens::configure)
            .configure(usage::configure)
            .service(audit_log::list_audit_log)
            .service(ops::resync),
    );
}
