use crate::TestApp;

#[tokio::test]
async fn the_document_covers_every_route_with_its_scope() {
    let app = TestApp::spawn().await;
    let document: serde_json::Value = reqwest::get(format!("{}/openapi.json", app.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    let expected = [
        ("/v1/plans", "post", "plans:write"),
        ("/v1/plans", "get", "plans:read"),
        ("/v1/plans/{id}", "get", "plans:read"),
        ("/v1/plans/{id}", "patch", "plans:write"),
        ("/v1/plans/{id}", "delete", "plans:write"),
        ("/v1/keys", "post", "keys:write"),
        ("/v1/keys", "get", "keys:read"),
        ("/v1/keys/{id}", "get", "keys:read"),
        ("/v1/keys/{id}", "patch", "keys:write"),
        ("/v1/keys/{id}", "delete", "keys:write"),
        ("/v1/keys/{id}/revoke", "post", "keys:write"),
        ("/v1/keys/{id}/rotate", "post", "keys:write"),
        ("/v1/admin-tokens", "post", "admin"),
        ("/v1/admin-tokens", "get", "admin"),
        ("/v1/admin-tokens/{id}", "delete", "admin"),
        ("/v1/audit-log", "get", "audit:read"),
        ("/v1/ops/resync", "post", "admin"),
    ];
    for (path, method, scope) in expected {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} missing");
        assert_eq!(
            operation["security"][0]["admin_token"][0], scope,
            "{method} {path}"
        );
        assert!(
            operation["responses"]["401"].is_object(),
            "{method} {path} documents 401"
        );
    }
    assert!(document["components"]["schemas"]["Problem"].is_object());
    assert!(document["components"]["securitySchemes"]["admin_token"].is_object());
    app.stop().await;
}
