//! Request bodies. `web::Json` alone would also read a struct from a JSON array
//! (`[null, null]`), which the API does not promise; these take JSON objects only.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON object body, parsed into `T` (unknown fields refused by `T`).
pub struct JsonBody<T>(pub T);

/// An optional JSON object body: an empty body or `null` is `None`; anything else must parse.
pub struct OptionalJsonBody<T>(pub Option<T>);

fn parse_object<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = web::Json::<serde_json::Value>::from_request(req, payload);
        Box::pin(async move { Ok(JsonBody(parse_object(json.await?.into_inner())?)) })
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for OptionalJsonBody<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = bytes.await?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(OptionalJsonBody(None));
            }
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
            if value.is_null() {
                return Ok(OptionalJsonBody(None));
            }
            Ok(OptionalJsonBody(Some(parse_object(value)?)))
        })
    }
}
