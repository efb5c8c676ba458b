use reqwest::Method;
use serde_json::json;

use crate::TestApp;

const LIMIT: &str =
    r#"[{"name":"per_second","algorithm":"token_bucket","limit":10,"window_ms":1000,"burst":20}]"#;

#[tokio::test]
async fn create_get_update_and_delete_a_plan() {
    let app = TestApp::spawn().await;
    let limits: serde_json::Value = serde_json::from_str(LIMIT).unwrap();
    let plan = app.create_plan("starter", limits.clone()).await;
    assert_eq!(plan["name"], "starter");
    assert_eq!(plan["limits"], limits);
    let id = plan["id"].as_str().unwrap();

    let (status, got) = app.get(&format!("/v1/plans/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(got, plan);

    let (status, updated) = app
        .patch(&format!("/v1/plans/{id}"), json!({"name": "starter-2"}))
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["name"], "starter-2");
    assert_eq!(updated["limits"], limits, "limits stay when not given");

    let (status, _) = app.delete(&format!("/v1/plans/{id}")).await;
    assert_eq!(status, 204);
    let (status, problem) = app.get(&format!("/v1/plans/{id}")).await;
    assert_eq!(status, 404);
    assert_eq!(problem["status"], 404);
    app.stop().await;
}

#[tokio::test]
async fn each_validation_error_names_its_field() {
    let app = TestApp::spawn().await;
    let (status, problem) = app
        .post(
            "/v1/plans",
            json!({"name": "", "limits": [
                {"name": "Bad Name", "algorithm": "fixed_window", "limit": 0, "window_ms": 0},
                {"name": "b", "algorithm": "sliding_log", "limit": 5, "window_ms": 2678400001u64, "burst": 3}
            ]}),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["type"], "urn:keymeter:problem:validation");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec![
            "name",
            "limits[0].name",
            "limits[0].limit",
            "limits[0].window_ms",
            "limits[1].window_ms",
            "limits[1].burst"
        ]
    );

    // Shape errors: unknown field, unknown algorithm, wrong type, not JSON.
    for body in [
        json!({"name": "x", "limits": [], "extra": 1}),
        json!({"name": "x", "limits": [{"name": "a", "algorithm": "leaky", "limit": 1, "window_ms": 1}]}),
        json!({"name": 5}),
    ] {
        let (status, problem) = app.post("/v1/plans", body).await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(problem["type"], "urn:keymeter:problem:bad-request");
    }
    let response = app
        .client
        .post(format!("{}/v1/plans", app.base))
        .bearer_auth(&app.admin_token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_huge_body_is_refused() {
    let app = TestApp::spawn().await;
    let huge = "x".repeat(200 * 1024);
    let (status, problem) = app
        .post("/v1/plans", json!({"name": huge, "limits": []}))
        .await;
    assert_eq!(status, 400, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("larger than"));
    app.stop().await;
}

#[tokio::test]
async fn missing_and_insufficient_scopes() {
    let app = TestApp::spawn().await;
    let (status, problem) = app.send(Method::GET, "/v1/plans", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(problem["type"], "urn:keymeter:problem:unauthenticated");
    let (status, _) = app
        .send(Method::GET, "/v1/plans", Some("not-a-token"), None)
        .await;
    assert_eq!(status, 401);

    let reader = app.token_with(&["plans:read"]).await;
    let (status, _) = app
        .send(Method::GET, "/v1/plans", Some(&reader), None)
        .await;
    assert_eq!(status, 200);
    let (status, problem) = app
        .send(
            Method::POST,
            "/v1/plans",
            Some(&reader),
            Some(json!({"name": "p", "limits": []})),
        )
        .await;
    assert_eq!(status, 403);
    assert!(problem["detail"].as_str().unwrap().contains("plans:write"));
    let keys_only = app.token_with(&["keys:read"]).await;
    let (status, _) = app
        .send(Method::GET, "/v1/plans", Some(&keys_only), None)
        .await;
    assert_eq!(status, 403);
    app.stop().await;
}

#[tokio::test]
async fn a_taken_name_and_a_plan_in_use_are_conflicts() {
    let app = TestApp::spawn().await;
    let plan = app.create_plan("dup", json!([])).await;
    let (status, problem) = app
        .post("/v1/plans", json!({"name": "dup", "limits": []}))
        .await;
    assert_eq!(status, 409, "{problem}");

    let other = app.create_plan("other", json!([])).await;
    let (status, _) = app
        .patch(
            &format!("/v1/plans/{}", other["id"].as_str().unwrap()),
            json!({"name": "dup"}),
        )
        .await;
    assert_eq!(status, 409);

    let plan_id = plan["id"].as_str().unwrap();
    let key = app.create_key(json!({"plan_id": plan_id})).await;
    let (status, problem) = app.delete(&format!("/v1/plans/{plan_id}")).await;
    assert_eq!(status, 409, "{problem}");
    // Once its only key is deleted, the plan can go (its name becomes free again).
    app.delete(&format!("/v1/keys/{}", key["id"].as_str().unwrap()))
        .await;
    let (status, _) = app.delete(&format!("/v1/plans/{plan_id}")).await;
    assert_eq!(status, 204);
    app.create_plan("dup", json!([])).await;
    app.stop().await;
}

#[tokio::test]
async fn pages_through_plans_with_a_cursor() {
    let app = TestApp::spawn().await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(app.create_plan(&format!("p{i}"), json!([])).await["id"].clone());
    }
    let mut seen = Vec::new();
    let mut path = "/v1/plans?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = app.get(&path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|p| p["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/plans?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created);

    for bad in [
        "/v1/plans?limit=0",
        "/v1/plans?limit=101",
        "/v1/plans?cursor=zzz",
        "/v1/plans?limit=abc",
        "/v1/plans?unknown=1",
    ] {
        let (status, problem) = app.get(bad).await;
        assert_eq!(status, 400, "{bad}: {problem}");
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_plans_are_404() {
    let app = TestApp::spawn().await;
    let missing = "0190c0de-0000-7000-8000-000000000000";
    assert_eq!(app.get(&format!("/v1/plans/{missing}")).await.0, 404);
    assert_eq!(
        app.patch(&format!("/v1/plans/{missing}"), json!({"name": "x"}))
            .await
            .0,
        404
    );
    assert_eq!(app.delete(&format!("/v1/plans/{missing}")).await.0, 404);
    assert_eq!(app.get("/v1/plans/not-a-uuid").await.0, 404);
    app.stop().await;
}

#[tokio::test]
async fn other_methods_on_known_paths_are_405_and_unknown_paths_404() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .put(format!("{}/v1/plans", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, POST");
    let (status, problem) = app.admin(Method::PUT, "/v1/plans", None).await;
    assert_eq!(status, 405, "{problem}");
    assert_eq!(problem["type"], "urn:keymeter:problem:method-not-allowed");
    let (status, _) = app
        .admin(
            Method::POST,
            "/v1/plans/0190c0de-0000-7000-8000-000000000000",
            None,
        )
        .await;
    assert_eq!(status, 405);
    let (status, _) = app.get("/v1/nothing-here").await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn nul_characters_are_refused_not_stored() {
    let app = TestApp::spawn().await;
    let (status, problem) = app
        .post("/v1/plans", json!({"name": "a\u{0}b", "limits": []}))
        .await;
    assert_eq!(status, 400, "{problem}");
    let plan = app.default_plan().await;
    let (status, problem) = app
        .post(
            "/v1/keys",
            json!({"plan_id": plan["id"], "metadata": {"k": "v\u{0}"}}),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "metadata");
    let (status, problem) = app.get("/v1/keys?owner_id=a%00b").await;
    assert_eq!(status, 400, "{problem}");
    app.stop().await;
}
