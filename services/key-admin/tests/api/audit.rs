use serde_json::json;

use crate::TestApp;

#[tokio::test]
async fn every_change_is_audited_newest_first_and_filterable() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let key = app.create_key(json!({"plan_id": plan["id"]})).await;
    let key_id = key["id"].as_str().unwrap();
    app.patch(&format!("/v1/keys/{key_id}"), json!({"name": "renamed"}))
        .await;
    app.post(&format!("/v1/keys/{key_id}/rotate"), json!({}))
        .await;
    app.post(&format!("/v1/keys/{key_id}/revoke"), json!({}))
        .await;

    let (status, log) = app.get("/v1/audit-log?limit=100").await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "key.revoke",
            "key.rotate",
            "key.update",
            "key.create",
            "plan.create",
            "admin_token.create"
        ]
    );
    let update = &log["items"][2];
    assert_eq!(
        update["changes"]["name"],
        json!({"from": null, "to": "renamed"})
    );
    assert_eq!(update["target_type"], "key");
    assert_eq!(update["target_id"], key_id);
    let actor = update["actor"].as_str().unwrap();
    assert!(
        uuid::Uuid::parse_str(actor).is_ok(),
        "the actor is the admin token id"
    );

    let (_, only_key) = app
        .get(&format!(
            "/v1/audit-log?target_type=key&target_id={key_id}&limit=2"
        ))
        .await;
    assert_eq!(only_key["items"].as_array().unwrap().len(), 2);
    let cursor = only_key["next_cursor"].as_str().unwrap();
    let (_, rest) = app
        .get(&format!(
            "/v1/audit-log?target_type=key&target_id={key_id}&limit=2&cursor={cursor}"
        ))
        .await;
    let rest_actions: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(rest_actions, vec!["key.update", "key.create"]);
    assert!(rest["next_cursor"].is_null());

    let (_, by_action) = app.get("/v1/audit-log?action=plan.create").await;
    assert_eq!(by_action["items"].as_array().unwrap().len(), 1);
    let (_, future) = app.get("/v1/audit-log?from=2999-01-01T00:00:00Z").await;
    assert!(future["items"].as_array().unwrap().is_empty());
    let (status, _) = app.get("/v1/audit-log?from=yesterday").await;
    assert_eq!(status, 400);

    let reader = app.token_with(&["keys:read"]).await;
    let (status, _) = app
        .send(reqwest::Method::GET, "/v1/audit-log", Some(&reader), None)
        .await;
    assert_eq!(status, 403);
    app.stop().await;
}
