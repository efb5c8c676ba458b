mod create;
mod delete;
mod get;
pub mod json;
mod list;
mod revoke;
mod rotate;
mod update;

use utoipa_actix_web::service_config::ServiceConfig;

pub fn configure(config: &mut ServiceConfig) {
    config
        .service(create::create_key)
        .service(list::list_keys)
        .service(get::get_key)
        .service(update::update_key)
        .service(revoke::revoke_key)
        .service(rotate::rotate_key)
        .service(delete::delete_key);
}
