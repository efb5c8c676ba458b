//! The one HTTP error type of key-admin: every failure becomes an RFC 9457
//! `application/problem+json` answer here, and nowhere else.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use diesel::result::DatabaseErrorKind;
use domain::{FieldError, Scope, ValidationErrors};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request has invalid fields")]
    Validation(ValidationErrors),
    #[error("{0}")]
    BadRequest(String),
    #[error("a valid admin token is needed: Authorization: Bearer <token>")]
    Unauthenticated,
    #[error("this admin token lacks the scope {0}")]
    Forbidden(Scope),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("this method is not allowed on this path")]
    MethodNotAllowed,
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, e.g. `urn:keymeter:problem:validation`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Field-level messages, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<FieldErrorSchema>)]
    pub errors: Vec<FieldError>,
}

/// One invalid field.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FieldErrorSchema {
    /// JSON path of the field, e.g. `limits[0].window_ms`.
    field: String,
    message: String,
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let mut errors = ValidationErrors::default();
        errors.push(field, message);
        ApiError::Validation(errors)
    }

    fn slug_and_title(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::Validation(_) => ("validation", "Invalid request"),
            ApiError::BadRequest(_) => ("bad-request", "Bad request"),
            ApiError::Unauthenticated => ("unauthenticated", "Unauthenticated"),
            ApiError::Forbidden(_) => ("forbidden", "Missing scope"),
            ApiError::NotFound(_) => ("not-found", "Not found"),
            ApiError::Conflict(_) => ("conflict", "Conflict"),
            ApiError::MethodNotAllowed => ("method-not-allowed", "Method not allowed"),
            ApiError::Unavailable(_) => ("unavailable", "Service unavailable"),
            ApiError::Internal(_) => ("internal", "Internal error"),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let ApiError::Internal(cause) = self {
            tracing::error!(%cause, "request failed");
        }
        let (slug, title) = self.slug_and_title();
        let problem = Problem {
            kind: format!("urn:keymeter:problem:{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            errors: match self {
                ApiError::Validation(errors) => errors.0.clone(),
                _ => Vec::new(),
            },
        };
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        if matches!(self, ApiError::Unauthenticated) {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        response.json(problem)
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        ApiError::Validation(errors)
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(error: diesel::result::Error) -> Self {
        use diesel::result::Error as E;
        match error {
            E::NotFound => ApiError::NotFound("resource"),
            E::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                ApiError::Conflict(format!("already exists ({})", info.message()))
            }
            E::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, info) => {
                ApiError::Conflict(format!("still referenced ({})", info.message()))
            }
            // diesel-async reports a connection lost mid-request as "unable to send"; a
            // server shutting down ends it with "terminating connection ...".
            E::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            ) => ApiError::Unavailable("postgres connection lost".into()),
            E::DatabaseError(_, info) if info.message().contains("terminating connection") => {
                ApiError::Unavailable(format!("postgres connection lost ({})", info.message()))
            }
            // A time PostgreSQL cannot store (year -5000, say) is the caller's mistake.
            E::DatabaseError(_, info)
                if info.message().contains("timestamp out of range")
                    || info
                        .message()
                        .contains("date/time field value out of range") =>
            {
                ApiError::BadRequest(format!("a time out of range ({})", info.message()))
            }
            // Text PostgreSQL cannot store (a NUL in a filter, say) is the caller's mistake.
            E::DatabaseError(_, info)
                if info.message().contains("invalid byte sequence")
                    || info.message().contains("unsupported Unicode escape") =>
            {
                ApiError::BadRequest("text may not contain NUL characters".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for ApiError {
    fn from(error: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        ApiError::Unavailable(format!("postgres is unavailable: {error}"))
    }
}

impl From<storage::redis_cluster::RedisClusterError> for ApiError {
    fn from(error: storage::redis_cluster::RedisClusterError) -> Self {
        ApiError::Unavailable(format!("redis is unavailable: {error}"))
    }
}

/// 400 for a body, query or path that does not parse, with serde's words as the detail.
pub fn json_error(
    error: actix_web::error::JsonPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    match error {
        J::Overflow { limit } | J::OverflowKnownLength { limit, .. } => {
            ApiError::BadRequest(format!("the body is larger than {limit} bytes")).into()
        }
        J::ContentType => {
            ApiError::BadRequest("the body must be JSON (Content-Type: application/json)".into())
                .into()
        }
        J::Deserialize(e) => ApiError::BadRequest(format!("invalid JSON body: {e}")).into(),
        other => ApiError::BadRequest(format!("invalid JSON body: {other}")).into(),
    }
}

pub fn query_error(
    error: actix_web::error::QueryPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid query string: {error}")).into()
}

pub fn path_error(
    error: actix_web::error::PathError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    let _ = error;
    ApiError::NotFound("resource").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database_error(kind: DatabaseErrorKind, message: &str) -> ApiError {
        diesel::result::Error::DatabaseError(kind, Box::new(message.to_owned())).into()
    }

    #[test]
    fn a_connection_lost_mid_request_is_unavailable_not_internal() {
        for error in [
            database_error(DatabaseErrorKind::UnableToSendCommand, "connection closed"),
            database_error(DatabaseErrorKind::ClosedConnection, "closed"),
            database_error(
                DatabaseErrorKind::Unknown,
                "terminating connection due to administrator command",
            ),
        ] {
            assert!(matches!(error, ApiError::Unavailable(_)), "{error:?}");
        }
    }

    #[test]
    fn a_time_out_of_range_is_the_callers_mistake() {
        let error = database_error(DatabaseErrorKind::Unknown, "timestamp out of range");
        assert!(matches!(error, ApiError::BadRequest(_)), "{error:?}");
    }
}
