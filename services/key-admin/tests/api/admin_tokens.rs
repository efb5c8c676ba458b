use reqwest::Method;
use serde_json::json;

use crate::TestApp;

#[tokio::test]
async fn tokens_are_created_listed_and_refused_at_once_when_deleted() {
    let app = TestApp::spawn().await;
    let (status, created) = app
        .post(
            "/v1/admin-tokens",
            json!({"name": "dashboard", "scopes": ["keys:read", "usage:read"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("kmadmin_"));
    assert_eq!(created["scopes"], json!(["keys:read", "usage:read"]));

    let (_, list) = app.get("/v1/admin-tokens").await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "the test's admin token and the new one");
    assert!(
        items
            .iter()
            .all(|t| t.get("token").is_none() && t.get("token_hash").is_none())
    );

    assert_eq!(
        app.send(Method::GET, "/v1/keys", Some(&token), None)
            .await
            .0,
        200
    );
    let path = format!("/v1/admin-tokens/{}", created["id"].as_str().unwrap());
    assert_eq!(app.delete(&path).await.0, 204);
    assert_eq!(
        app.send(Method::GET, "/v1/keys", Some(&token), None)
            .await
            .0,
        401
    );
    assert_eq!(app.delete(&path).await.0, 404);
    app.stop().await;
}

#[tokio::test]
async fn only_admin_manages_tokens_and_bad_input_is_named() {
    let app = TestApp::spawn().await;
    let writer = app.token_with(&["keys:write", "plans:write"]).await;
    let (status, _) = app
        .send(
            Method::POST,
            "/v1/admin-tokens",
            Some(&writer),
            Some(json!({"name": "x", "scopes": ["admin"]})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, problem) = app
        .post(
            "/v1/admin-tokens",
            json!({"name": "", "scopes": [], "expires_at": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 400);
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["name", "scopes", "expires_at"]);
    let (status, _) = app
        .post("/v1/admin-tokens", json!({"name": "x", "scopes": ["root"]}))
        .await;
    assert_eq!(status, 400, "unknown scope");
    app.stop().await;
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let app = TestApp::spawn().await;
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(300)).to_rfc3339();
    let (status, created) = app
        .post(
            "/v1/admin-tokens",
            json!({"name": "brief", "scopes": ["keys:read"], "expires_at": soon}),
        )
        .await;
    assert_eq!(status, 201);
    let token = created["token"].as_str().unwrap();
    assert_eq!(
        app.send(Method::GET, "/v1/keys", Some(token), None).await.0,
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(
        app.send(Method::GET, "/v1/keys", Some(token), None).await.0,
        401
    );
    app.stop().await;
}
