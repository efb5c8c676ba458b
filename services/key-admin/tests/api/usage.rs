//! Usage analytics over counts written straight into `usage_logs` (as usage-ingest does).

use chrono::{DateTime, Duration, DurationRound, Utc};
use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use reqwest::Method;
use serde_json::{Value, json};

use crate::TestApp;

async fn add_usage(app: &TestApp, key_id: &str, minute: DateTime<Utc>, counts: (i64, i64, i64)) {
    let mut conn = app.db.connection().await;
    diesel::sql_query(
        "SELECT usage_logs_ensure_partitions(($1::timestamptz AT TIME ZONE 'UTC')::date, 1)",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(minute)
    .execute(&mut conn)
    .await
    .unwrap();
    diesel::sql_query(
        "INSERT INTO usage_logs (key_id, minute, allowed, denied, cost) VALUES ($1::uuid, $2, $3, $4, $5)",
    )
    .bind::<Text, _>(key_id)
    .bind::<diesel::sql_types::Timestamptz, _>(minute)
    .bind::<diesel::sql_types::BigInt, _>(counts.0)
    .bind::<diesel::sql_types::BigInt, _>(counts.1)
    .bind::<diesel::sql_types::BigInt, _>(counts.2)
    .execute(&mut conn)
    .await
    .unwrap();
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn buckets(body: &Value) -> Vec<(String, i64, i64, i64)> {
    body["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["start"].as_str().unwrap().to_owned(),
                b["allowed"].as_i64().unwrap(),
                b["denied"].as_i64().unwrap(),
                b["cost"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_keys_usage_in_minute_hour_and_day_buckets() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let key = app.create_key(json!({"plan_id": plan["id"]})).await;
    let id = key["id"].as_str().unwrap();
    add_usage(&app, id, at("2026-03-01T10:00:00Z"), (5, 1, 10)).await;
    add_usage(&app, id, at("2026-03-01T10:01:00Z"), (2, 0, 2)).await;
    add_usage(&app, id, at("2026-03-01T11:30:00Z"), (1, 3, 1)).await;
    add_usage(&app, id, at("2026-03-02T00:00:00Z"), (4, 0, 4)).await;

    let range = "from=2026-03-01T00:00:00Z&to=2026-03-03T00:00:00Z";
    let (status, body) = app
        .get(&format!("/v1/keys/{id}/usage?{range}&granularity=minute"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["key_id"], id);
    assert_eq!(body["granularity"], "minute");
    assert_eq!(
        buckets(&body),
        vec![
            ("2026-03-01T10:00:00Z".into(), 5, 1, 10),
            ("2026-03-01T10:01:00Z".into(), 2, 0, 2),
            ("2026-03-01T11:30:00Z".into(), 1, 3, 1),
            ("2026-03-02T00:00:00Z".into(), 4, 0, 4),
        ]
    );
    let (_, body) = app.get(&format!("/v1/keys/{id}/usage?{range}")).await;
    assert_eq!(body["granularity"], "hour", "hour is the default");
    assert_eq!(
        buckets(&body),
        vec![
            ("2026-03-01T10:00:00Z".into(), 7, 1, 12),
            ("2026-03-01T11:00:00Z".into(), 1, 3, 1),
            ("2026-03-02T00:00:00Z".into(), 4, 0, 4),
        ]
    );
    let (_, body) = app
        .get(&format!("/v1/keys/{id}/usage?{range}&granularity=day"))
        .await;
    assert_eq!(
        buckets(&body),
        vec![
            ("2026-03-01T00:00:00Z".into(), 8, 4, 13),
            ("2026-03-02T00:00:00Z".into(), 4, 0, 4),
        ]
    );
    // `from` is inclusive and `to` exclusive, also inside a bucket.
    let (_, body) = app
        .get(&format!(
            "/v1/keys/{id}/usage?from=2026-03-01T10:01:00Z&to=2026-03-01T11:30:00Z&granularity=hour"
        ))
        .await;
    assert_eq!(
        buckets(&body),
        vec![("2026-03-01T10:00:00Z".into(), 2, 0, 2)]
    );
    // A deleted key's history stays readable.
    app.delete(&format!("/v1/keys/{id}")).await;
    let (status, body) = app
        .get(&format!("/v1/keys/{id}/usage?{range}&granularity=day"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(buckets(&body).len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn usage_summed_over_an_owner_or_a_plan() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let other_plan = app
        .create_plan(
            "other",
            json!([{"name": "s", "algorithm": "fixed_window", "limit": 5, "window_ms": 1000}]),
        )
        .await;
    let a = app
        .create_key(json!({"plan_id": plan["id"], "owner_id": "acme"}))
        .await;
    let b = app
        .create_key(json!({"plan_id": other_plan["id"], "owner_id": "acme"}))
        .await;
    let c = app
        .create_key(json!({"plan_id": plan["id"], "owner_id": "globex"}))
        .await;
    let minute = at("2026-03-05T08:15:00Z");
    add_usage(&app, a["id"].as_str().unwrap(), minute, (1, 0, 1)).await;
    add_usage(&app, b["id"].as_str().unwrap(), minute, (10, 1, 20)).await;
    add_usage(&app, c["id"].as_str().unwrap(), minute, (100, 2, 100)).await;
    let range = "from=2026-03-05T00:00:00Z&to=2026-03-06T00:00:00Z&granularity=day";

    let (status, body) = app.get(&format!("/v1/usage?owner_id=acme&{range}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["owner_id"], "acme");
    assert_eq!(
        buckets(&body),
        vec![("2026-03-05T00:00:00Z".into(), 11, 1, 21)]
    );
    let plan_id = plan["id"].as_str().unwrap();
    let (_, body) = app
        .get(&format!("/v1/usage?plan_id={plan_id}&{range}"))
        .await;
    assert_eq!(body["plan_id"], plan_id);
    assert_eq!(
        buckets(&body),
        vec![("2026-03-05T00:00:00Z".into(), 101, 2, 101)]
    );
    let (_, body) = app.get(&format!("/v1/usage?owner_id=nobody&{range}")).await;
    assert_eq!(buckets(&body), vec![]);

    for query in [
        range.to_owned(),
        format!("owner_id=acme&plan_id={plan_id}&{range}"),
        format!("owner_id=&{range}"),
    ] {
        let (status, body) = app.get(&format!("/v1/usage?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["errors"][0]["field"], "owner_id", "{query}");
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_usage_queries_are_refused_clearly() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let key = app.create_key(json!({"plan_id": plan["id"]})).await;
    let id = key["id"].as_str().unwrap();
    let cases = [
        ("from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z", "from"),
        (
            "from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z&granularity=minute",
            "to",
        ),
        ("granularity=week", ""),
        ("to=-262143-01-01T00:00:00Z", "to"),
        (
            "from=1900-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&granularity=day",
            "from",
        ),
        ("from=yesterday", ""),
        ("page=2", ""),
    ];
    for (query, field) in cases {
        let (status, body) = app.get(&format!("/v1/keys/{id}/usage?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(
            body["type"]
                .as_str()
                .map(|t| t.starts_with("urn:keymeter:problem:")),
            Some(true)
        );
        if !field.is_empty() {
            assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
        }
    }
    // A month of minutes, aligned, is exactly the most one answer holds.
    let (status, body) = app
        .get(&format!(
            "/v1/keys/{id}/usage?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&granularity=minute"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = app
        .get("/v1/keys/00000000-0000-7000-8000-000000000000/usage")
        .await;
    assert_eq!(status, 404);
    let (status, _) = app.get("/v1/keys/not-a-uuid/usage").await;
    assert_eq!(status, 404, "as for every id that is not a UUID");

    let keys_only = app.token_with(&["keys:read"]).await;
    let (status, _) = app
        .send(
            Method::GET,
            &format!("/v1/keys/{id}/usage"),
            Some(&keys_only),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .send(Method::GET, "/v1/usage?owner_id=a", None, None)
        .await;
    assert_eq!(status, 401);
    let reader = app.token_with(&["usage:read"]).await;
    let (status, _) = app
        .send(
            Method::GET,
            &format!("/v1/keys/{id}/usage"),
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .send(
            Method::POST,
            &format!("/v1/keys/{id}/usage"),
            Some(&reader),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 405);
    app.stop().await;
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

/// A month of a busy key: one row for every minute of 30 days (43,200 rows), among
/// 432,000 rows of other keys. The answer reads the primary key index of each day's partition; the time is
/// printed (not asserted: timing is for the benchmark notes).
#[tokio::test]
async fn a_month_of_a_busy_key_is_read_through_the_index() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let key = app.create_key(json!({"plan_id": plan["id"]})).await;
    let id = key["id"].as_str().unwrap();
    let start = (Utc::now() - Duration::days(31))
        .duration_trunc(Duration::days(1))
        .unwrap();
    let mut conn = app.db.connection().await;
    diesel::sql_query(
        "SELECT usage_logs_ensure_partitions(($1::timestamptz AT TIME ZONE 'UTC')::date, 33)",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(start)
    .execute(&mut conn)
    .await
    .unwrap();
    // The busy key, and 100 other keys every 10 minutes, so the index has to pick.
    diesel::sql_query(
        "INSERT INTO usage_logs (key_id, minute, allowed, denied, cost) \
         SELECT $1::uuid, m, 100, 3, 100 FROM generate_series($2::timestamptz, $2::timestamptz + interval '30 days' - interval '1 minute', interval '1 minute') m \
         UNION ALL \
         SELECT gen_random_uuid(), m, 1, 0, 1 FROM generate_series($2::timestamptz, $2::timestamptz + interval '30 days', interval '10 minutes') m, generate_series(1, 100)",
    )
    .bind::<Text, _>(id)
    .bind::<diesel::sql_types::Timestamptz, _>(start)
    .execute(&mut conn)
    .await
    .unwrap();
    diesel::sql_query("ANALYZE usage_logs")
        .execute(&mut conn)
        .await
        .unwrap();

    let from = start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = (start + Duration::days(30)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let started = std::time::Instant::now();
    let (status, body) = app
        .get(&format!(
            "/v1/keys/{id}/usage?from={from}&to={to}&granularity=day"
        ))
        .await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200);
    let days = buckets(&body);
    assert_eq!(days.len(), 30);
    assert!(
        days.iter()
            .all(|d| (d.1, d.2, d.3) == (144_000, 4_320, 144_000))
    );
    eprintln!("a month of one busy key (43,200 rows), by day, over HTTP: {elapsed:?}");

    let plan: Vec<PlanLine> = diesel::sql_query(format!(
        "EXPLAIN (ANALYZE, BUFFERS) SELECT date_trunc('day', minute, 'UTC'), sum(allowed), sum(denied), sum(cost) \
         FROM usage_logs WHERE minute >= '{from}' AND minute < '{to}' AND key_id = '{id}' GROUP BY 1 ORDER BY 1"
    ))
    .load(&mut conn)
    .await
    .unwrap();
    let text: Vec<&str> = plan.iter().map(|l| l.line.as_str()).collect();
    eprintln!("{}", text.join("\n"));
    assert!(
        !text.iter().any(|l| l.contains("Seq Scan")),
        "the key's rows come from an index:\n{}",
        text.join("\n")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_usage_query_that_runs_out_of_time_is_503_and_the_next_one_is_answered() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let key = app.create_key(json!({"plan_id": plan["id"]})).await;
    let id = key["id"].as_str().unwrap();
    add_usage(&app, id, at("2026-03-01T10:00:00Z"), (5, 1, 10)).await;
    let path = format!(
        "/v1/keys/{id}/usage?from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z&granularity=hour"
    );

    // Someone holds a lock the query must wait for (a long maintenance statement, say);
    // the test app's usage timeout is 2 s.
    let mut holder = app.db.connection().await;
    diesel::sql_query("BEGIN")
        .execute(&mut holder)
        .await
        .unwrap();
    diesel::sql_query("LOCK TABLE usage_logs IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    // Without the timeout the request would wait as long as the lock is held.
    let (status, body) = tokio::time::timeout(std::time::Duration::from_secs(30), app.get(&path))
        .await
        .expect("an answer, not a request left waiting on the lock");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["title"], "Service unavailable", "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("shorter range"), "{body}");

    diesel::sql_query("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    let (status, body) = app.get(&path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(buckets(&body).len(), 1);
    app.stop().await;
}
