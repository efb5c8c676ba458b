//! Admin authentication. The scope a route needs is part of its extractor's type
//! (`Authorized<KeysWrite>`), so a handler cannot be written without one.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use chrono::Utc;
use domain::Scope;
use storage::repositories::admin_tokens;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// A scope as a type.
pub trait RequiredScope {
    const SCOPE: Scope;
}

macro_rules! scopes {
    ($($name:ident => $scope:expr),* $(,)?) => {
        $(
            pub struct $name;
            impl RequiredScope for $name {
                const SCOPE: Scope = $scope;
            }
        )*
    };
}

scopes! {
    PlansRead => Scope::PlansRead,
    PlansWrite => Scope::PlansWrite,
    KeysRead => Scope::KeysRead,
    KeysWrite => Scope::KeysWrite,
    UsageRead => Scope::UsageRead,
    AuditRead => Scope::AuditRead,
    AdminOnly => Scope::Admin,
}

/// The admin token behind a request, checked for the scope `R`.
pub struct Authorized<R: RequiredScope> {
    pub token_id: Uuid,
    _scope: PhantomData<R>,
}

impl<R: RequiredScope> Authorized<R> {
    /// The actor as the audit log names it.
    pub fn actor(&self) -> String {
        self.token_id.to_string()
    }
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

impl<R: RequiredScope + 'static> FromRequest for Authorized<R> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer(req);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal("app state missing".into()))?;
            let token = token.ok_or(ApiError::Unauthenticated)?;
            let hash = state.pepper.hash_admin_token(&token);
            let mut conn = state.conn().await?;
            let row = admin_tokens::find_live_by_hash(&mut conn, hash.as_str())
                .await?
                .ok_or(ApiError::Unauthenticated)?;
            if row.expires_at.is_some_and(|at| at <= Utc::now()) {
                return Err(ApiError::Unauthenticated);
            }
            let granted: Vec<Scope> = row.scopes.iter().filter_map(|s| s.parse().ok()).collect();
            if !R::SCOPE.is_granted_by(&granted) {
                return Err(ApiError::Forbidden(R::SCOPE));
            }
            Ok(Self {
                token_id: row.id,
                _scope: PhantomData,
            })
        })
    }
}
