mod create;
mod delete;
pub mod json;
mod list;

use utoipa_actix_web::service_config::ServiceConfig;

pub fn configure(config: &mut ServiceConfig) {
    config
        .service(create::create_admin_token)
        .service(list::list_admin_tokens)
        .service(delete::delete_admin_token);
}
