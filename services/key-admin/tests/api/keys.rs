use serde_json::json;

use crate::TestApp;

fn id(value: &serde_json::Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn create_answers_the_raw_key_once() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let created = app
        .create_key(json!({
            "plan_id": plan["id"], "name": "ci", "owner_id": "acme", "prefix": "sk_live",
            "metadata": {"tier": "gold"}, "credits": {"remaining": 100}
        }))
        .await;
    let raw = created["key"].as_str().unwrap();
    assert!(raw.starts_with("sk_live_"));
    domain::ApiKey::parse(raw).expect("a valid key");
    assert_eq!(created["start"], &raw[..8]);
    assert_eq!(created["status"], "active");
    assert_eq!(created["owner_id"], "acme");
    assert_eq!(created["limits"], plan["limits"]);
    assert_eq!(created["limits_overridden"], false);
    assert_eq!(created["credits"], json!({"remaining": 100}));

    let (status, got) = app.get(&format!("/v1/keys/{}", id(&created))).await;
    assert_eq!(status, 200);
    assert!(got.get("key").is_none(), "the secret is never shown again");
    assert_eq!(got["metadata"], json!({"tier": "gold"}));
    app.stop().await;
}

#[tokio::test]
async fn key_validation_errors_name_their_fields() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let (status, problem) = app
        .post(
            "/v1/keys",
            json!({
                "plan_id": plan["id"], "name": "", "owner_id": "x".repeat(201), "prefix": "Bad",
                "expires_at": "2000-01-01T00:00:00Z", "metadata": {"big": "x".repeat(5000)},
                "limits": [{"name": "a", "algorithm": "fixed_window", "limit": 0, "window_ms": 1000}],
                "credits": {"remaining": 1, "refill": {"amount": 0, "interval_ms": 1}}
            }),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
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
            "owner_id",
            "metadata",
            "limits[0].limit",
            "credits.refill.amount",
            "credits.refill.interval_ms",
            "prefix",
            "expires_at"
        ]
    );
    let (status, problem) = app
        .post(
            "/v1/keys",
            json!({"plan_id": "0190c0de-0000-7000-8000-000000000000"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(problem["errors"][0]["field"], "plan_id");
    let (status, _) = app
        .post(
            "/v1/keys",
            json!({"plan_id": plan["id"], "metadata": [1, 2]}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = app
        .post("/v1/keys", json!({"plan_id": plan["id"], "secret": "x"}))
        .await;
    assert_eq!(status, 400, "unknown fields are refused");
    app.stop().await;
}

#[tokio::test]
async fn patch_changes_and_clears_fields_and_follows_in_redis() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let created = app
        .create_key(json!({"plan_id": plan["id"], "name": "n", "owner_id": "o"}))
        .await;
    let raw = created["key"].as_str().unwrap().to_owned();
    let path = format!("/v1/keys/{}", id(&created));
    let own = json!([{"name": "burst", "algorithm": "token_bucket", "limit": 5, "window_ms": 1000, "burst": 10}]);

    let (status, updated) = app
        .patch(
            &path,
            json!({"name": null, "limits": own, "metadata": {"a": 1}}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["name"], serde_json::Value::Null);
    assert_eq!(updated["owner_id"], "o", "untouched");
    assert_eq!(updated["limits"], own);
    assert_eq!(updated["limits_overridden"], true);
    let took = app
        .eventually("override reaches Redis", || async {
            app.record_of(&raw)
                .await
                .is_some_and(|r| r.limits.len() == 1 && r.limits[0].name == "burst")
        })
        .await;
    assert!(took < std::time::Duration::from_secs(1), "{took:?}");

    let (_, back) = app.patch(&path, json!({"limits": null})).await;
    assert_eq!(
        back["limits"], plan["limits"],
        "null restores the plan's limits"
    );

    let (status, disabled) = app.patch(&path, json!({"enabled": false})).await;
    assert_eq!(status, 200);
    assert_eq!(disabled["status"], "disabled");
    app.eventually("disabled in Redis", || async {
        app.record_of(&raw).await.is_some_and(|r| !r.enabled)
    })
    .await;
    let (_, enabled) = app.patch(&path, json!({"enabled": true})).await;
    assert_eq!(enabled["status"], "active");

    let (_, expired) = app
        .patch(&path, json!({"expires_at": "2001-01-01T00:00:00Z"}))
        .await;
    assert_eq!(expired["status"], "expired");

    let (status, _) = app
        .patch(
            &path,
            json!({"plan_id": "0190c0de-0000-7000-8000-000000000000"}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = app.patch(&path, json!({"enabled": "yes"})).await;
    assert_eq!(status, 400);
    app.stop().await;
}

#[tokio::test]
async fn plan_changes_reach_every_key_within_a_second() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let raws = app.create_projected_keys(&plan, 3).await;
    let started = std::time::Instant::now();
    let (status, _) = app
        .patch(
            &format!("/v1/plans/{}", id(&plan)),
            json!({"limits": [{"name": "per_minute", "algorithm": "sliding_window", "limit": 60, "window_ms": 60000}]}),
        )
        .await;
    assert_eq!(status, 200);
    for raw in &raws {
        app.eventually("new limits", || async {
            app.record_of(raw)
                .await
                .is_some_and(|r| r.limits[0].name == "per_minute")
        })
        .await;
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    app.stop().await;
}

#[tokio::test]
async fn revoke_is_irreversible() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let created = app.create_key(json!({"plan_id": plan["id"]})).await;
    let raw = created["key"].as_str().unwrap().to_owned();
    let path = format!("/v1/keys/{}", id(&created));
    let (status, revoked) = app.post(&format!("{path}/revoke"), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["revoked_at"].is_string());
    let (status, again) = app.post(&format!("{path}/revoke"), json!({})).await;
    assert_eq!(status, 200, "revoking twice changes nothing");
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);
    let (status, _) = app.patch(&path, json!({"enabled": true})).await;
    assert_eq!(status, 409);
    let (status, _) = app.post(&format!("{path}/rotate"), json!({})).await;
    assert_eq!(status, 409);
    app.eventually("revoked in Redis", || async {
        app.record_of(&raw).await.is_some_and(|r| r.revoked)
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn rotation_keeps_both_secrets_during_the_grace_then_only_the_new_one() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let created = app.create_key(json!({"plan_id": plan["id"]})).await;
    let old = created["key"].as_str().unwrap().to_owned();
    let path = format!("/v1/keys/{}", id(&created));
    let (status, rotated) = app
        .post(&format!("{path}/rotate"), json!({"grace_period_ms": 1500}))
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(rotated["rotated_at"].is_string());

    app.eventually("both secrets projected", || async {
        let (a, b) = (app.record_of(&old).await, app.record_of(&new).await);
        matches!((a, b), (Some(a), Some(b)) if a.key_id == b.key_id)
    })
    .await;
    // The same key id means the same counters in Redis.
    assert_eq!(
        app.record_of(&new).await.unwrap().key_id.to_string(),
        id(&created)
    );
    app.eventually("old secret gone after the grace", || async {
        app.record_of(&old).await.is_none()
    })
    .await;
    assert!(app.record_of(&new).await.is_some());

    // No grace: the old secret stops at once.
    let (_, again) = app.post(&format!("{path}/rotate"), json!({})).await;
    let newest = again["key"].as_str().unwrap().to_owned();
    app.eventually("previous secret removed", || async {
        app.record_of(&new).await.is_none()
    })
    .await;
    assert!(app.record_of(&newest).await.is_some());

    let (status, problem) = app
        .post(
            &format!("{path}/rotate"),
            json!({"grace_period_ms": 604800001u64}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(problem["errors"][0]["field"], "grace_period_ms");
    app.stop().await;
}

#[tokio::test]
async fn delete_hides_the_key_and_removes_its_projection() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let created = app
        .create_key(json!({"plan_id": plan["id"], "credits": {"remaining": 5}}))
        .await;
    let raw = created["key"].as_str().unwrap().to_owned();
    let key_id: uuid::Uuid = id(&created).parse().unwrap();
    app.eventually("projected with credits", || async {
        storage::redis_cluster::projection::credits_remaining(&app.redis, &app.layout, key_id)
            .await
            .unwrap()
            == Some(5)
    })
    .await;
    let path = format!("/v1/keys/{key_id}");
    assert_eq!(app.delete(&path).await.0, 204);
    assert_eq!(app.get(&path).await.0, 404);
    assert_eq!(app.delete(&path).await.0, 404);
    app.eventually("record removed", || async {
        app.record_of(&raw).await.is_none()
    })
    .await;
    let (_, deleted) = app.get("/v1/keys?status=deleted").await;
    assert_eq!(deleted["items"][0]["id"], key_id.to_string());
    assert_eq!(deleted["items"][0]["status"], "deleted");
    let (_, live) = app.get("/v1/keys").await;
    assert!(live["items"].as_array().unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn lists_filter_by_owner_plan_and_status_and_page() {
    let app = TestApp::spawn().await;
    let plan_a = app.default_plan().await;
    let plan_b = app.default_plan().await;
    let mut acme = Vec::new();
    for i in 0..5 {
        let key = app
            .create_key(json!({"plan_id": if i < 3 { &plan_a["id"] } else { &plan_b["id"] }, "owner_id": "acme"}))
            .await;
        acme.push(id(&key));
    }
    let other = app
        .create_key(json!({"plan_id": plan_a["id"], "owner_id": "other"}))
        .await;
    app.patch(
        &format!("/v1/keys/{}", id(&other)),
        json!({"enabled": false}),
    )
    .await;

    let mut seen = Vec::new();
    let mut path = "/v1/keys?owner_id=acme&limit=2".to_owned();
    loop {
        let (status, page) = app.get(&path).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(page["items"].as_array().unwrap().iter().map(id));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/keys?owner_id=acme&limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, acme);

    let (_, on_b) = app.get(&format!("/v1/keys?plan_id={}", id(&plan_b))).await;
    assert_eq!(on_b["items"].as_array().unwrap().len(), 2);
    let (_, disabled) = app.get("/v1/keys?status=disabled").await;
    assert_eq!(
        disabled["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(id)
            .collect::<Vec<_>>(),
        vec![id(&other)]
    );
    let (_, active) = app.get("/v1/keys?status=active").await;
    assert_eq!(active["items"].as_array().unwrap().len(), 5);
    let (status, _) = app.get("/v1/keys?status=sleeping").await;
    assert_eq!(status, 400);
    app.stop().await;
}

#[tokio::test]
async fn credits_are_set_in_redis_and_reset_when_changed() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let created = app
        .create_key(json!({"plan_id": plan["id"], "credits": {"remaining": 1000, "refill": {"amount": 1000, "interval_ms": 86400000}}}))
        .await;
    let key_id: uuid::Uuid = id(&created).parse().unwrap();
    let remaining = || async {
        storage::redis_cluster::projection::credits_remaining(&app.redis, &app.layout, key_id)
            .await
            .unwrap()
    };
    app.eventually("balance set", || async { remaining().await == Some(1000) })
        .await;
    let raw = created["key"].as_str().unwrap();
    let record = app.record_of(raw).await.unwrap();
    assert_eq!(record.credits.unwrap().refill.unwrap().amount, 1000);

    app.patch(
        &format!("/v1/keys/{key_id}"),
        json!({"credits": {"remaining": 7}}),
    )
    .await;
    app.eventually("balance reset", || async { remaining().await == Some(7) })
        .await;
    // Some of it is spent; the same credits sent again set the balance back (a top-up).
    storage::redis_cluster::projection::reset_credits(&app.redis, &app.layout, key_id, 3)
        .await
        .unwrap();
    let (status, _) = app
        .patch(
            &format!("/v1/keys/{key_id}"),
            json!({"credits": {"remaining": 7}}),
        )
        .await;
    assert_eq!(status, 200);
    app.eventually("balance topped up", || async {
        remaining().await == Some(7)
    })
    .await;
    app.patch(&format!("/v1/keys/{key_id}"), json!({"credits": null}))
        .await;
    app.eventually("balance removed", || async { remaining().await.is_none() })
        .await;
    app.stop().await;
}

#[tokio::test]
async fn keys_need_their_scopes() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let reader = app.token_with(&["keys:read"]).await;
    let (status, _) = app
        .send(
            reqwest::Method::POST,
            "/v1/keys",
            Some(&reader),
            Some(json!({"plan_id": plan["id"]})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .send(reqwest::Method::GET, "/v1/keys", Some(&reader), None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = app.send(reqwest::Method::GET, "/v1/keys", None, None).await;
    assert_eq!(status, 401);
    let missing = "/v1/keys/0190c0de-0000-7000-8000-000000000000";
    assert_eq!(app.get(missing).await.0, 404);
    assert_eq!(app.patch(missing, json!({"name": "x"})).await.0, 404);
    assert_eq!(
        app.post(&format!("{missing}/revoke"), json!({})).await.0,
        404
    );
    assert_eq!(
        app.post(&format!("{missing}/rotate"), json!({})).await.0,
        404
    );
    app.stop().await;
}

#[tokio::test]
async fn bodies_must_be_json_objects_and_rotate_refuses_a_bad_body() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let (status, _) = app
        .patch(&format!("/v1/plans/{}", id(&plan)), json!([null, null]))
        .await;
    assert_eq!(status, 400, "an array is not an object");
    let key = app.create_key(json!({"plan_id": plan["id"]})).await;
    let rotate = format!("/v1/keys/{}/rotate", id(&key));
    let (status, _) = app.post(&rotate, json!({"grace_period_ms": -430})).await;
    assert_eq!(status, 400);
    let response = app
        .client
        .post(format!("{}{rotate}", app.base))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "an empty body means no grace");
    let (status, problem) = app
        .post(
            "/v1/keys",
            json!({"plan_id": plan["id"], "metadata": {"n": 1.7976931348623157e308}}),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    app.stop().await;
}

#[tokio::test]
async fn a_time_postgres_cannot_store_is_a_400() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let created = app.create_key(json!({"plan_id": plan["id"]})).await;
    let (status, problem) = app
        .patch(
            &format!("/v1/keys/{}", id(&created)),
            json!({"expires_at": "-5000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    let (status, problem) = app.get("/v1/audit-log?from=-5000-01-01T00:00:00Z").await;
    assert_eq!(status, 400, "{problem}");
    app.stop().await;
}

#[tokio::test]
async fn a_plan_deleted_while_keys_are_created_on_it_never_leaves_a_live_key_on_a_deleted_plan() {
    let app = TestApp::spawn().await;
    for round in 0..10 {
        let plan = app.create_plan(&format!("race-{round}"), json!([])).await;
        let plan_id = plan["id"].as_str().unwrap().to_owned();
        let create = app.post("/v1/keys", json!({"plan_id": plan_id}));
        let plan_path = format!("/v1/plans/{plan_id}");
        let delete = app.delete(&plan_path);
        let ((created, key), (deleted, _)) = tokio::join!(create, delete);
        // Either order is fine; both succeeding is not. The key's plan lookup share-locks
        // the plan: the delete then waits for the key and refuses, or went first and the
        // key finds no plan.
        match (created.as_u16(), deleted.as_u16()) {
            (201, 409) | (400, 204) => {}
            other => panic!("round {round}: create and delete answered {other:?}: {key}"),
        }
        if created == 201 {
            assert_eq!(app.get(&format!("/v1/plans/{plan_id}")).await.0, 200);
        }
    }
    app.stop().await;
}
