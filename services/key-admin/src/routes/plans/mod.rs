mod create;
mod delete;
mod get;
pub mod json;
mod list;
mod update;

use utoipa_actix_web::service_config::ServiceConfig;

pub fn configure(config: &mut ServiceConfig) {
    config
        .service(create::create_plan)
        .service(list::list_plans)
        .service(get::get_plan)
        .service(update::update_plan)
        .service(delete::delete_plan);
}
