//! Messages that can never be counted: decoded once, judged, and sent to the dead-letter
//! queue with the reason in a header, never retried.

use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::{EventError, UsageBatch};
use lapin::types::{AMQPValue, ShortString};
use storage::rabbitmq::{AmqpError, Delivery, RabbitLink, dead_letter};

/// The header that carries why a message was dead-lettered.
pub const REASON_HEADER: &str = "x-keymeter-reason";

/// Why a message is poison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    /// A short, stable label for the metric: `malformed`, `impossible`, `too_old` or
    /// `out_of_range`.
    pub kind: &'static str,
    pub detail: String,
}

/// Decodes a message. A batch whose id says it was made longer ago than `dedup_window` is
/// refused: its id may already be pruned from `ingested_batches`, so counting it could
/// count it twice. It goes to the dead-letter queue for an operator, not into the counts.
pub fn judge(
    body: &[u8],
    now: DateTime<Utc>,
    dedup_window: Duration,
) -> Result<UsageBatch, Poison> {
    let batch = UsageBatch::decode(body).map_err(|error| match error {
        EventError::Malformed(detail) => Poison {
            kind: "malformed",
            detail,
        },
        EventError::Impossible(detail) => Poison {
            kind: "impossible",
            detail,
        },
    })?;
    match too_old(&batch, now, dedup_window).or_else(|| out_of_range(&batch, now, dedup_window)) {
        Some(poison) => Err(poison),
        None => Ok(batch),
    }
}

/// How far ahead of this host's clock a minute may be (the limiters stamp minutes with
/// Redis's clock).
const CLOCK_SKEW: chrono::Duration = chrono::Duration::hours(1);

/// `out_of_range` poison when an entry's minute is more than `CLOCK_SKEW` ahead, or older
/// than the dedup window and a day: no limiter holds usage that long in a batch it still
/// makes, and every such day would get a partition of its own.
pub fn out_of_range(
    batch: &UsageBatch,
    now: DateTime<Utc>,
    dedup_window: Duration,
) -> Option<Poison> {
    let oldest = chrono::Duration::from_std(dedup_window)
        .ok()
        .and_then(|window| now.checked_sub_signed(window + chrono::Duration::days(1)))?;
    let latest = now + CLOCK_SKEW;
    let outside = batch
        .entries
        .iter()
        .find(|entry| entry.minute < oldest || entry.minute > latest)?;
    Some(Poison {
        kind: "out_of_range",
        detail: format!(
            "minute {} is outside {oldest} to {latest} (this host's clock)",
            outside.minute
        ),
    })
}

/// `too_old` poison when the batch's id says it was made longer ago than `dedup_window`.
pub fn too_old(batch: &UsageBatch, now: DateTime<Utc>, dedup_window: Duration) -> Option<Poison> {
    let made = made_at(batch)?;
    let age = now.signed_duration_since(made);
    age.to_std()
        .is_ok_and(|age| age > dedup_window)
        .then(|| Poison {
            kind: "too_old",
            detail: format!(
                "batch made at {made}, older than the {} s a batch id is remembered",
                dedup_window.as_secs()
            ),
        })
}

/// When the batch was made, from its id when the id is a UUIDv7 (limiters make v7 ids).
pub fn made_at(batch: &UsageBatch) -> Option<DateTime<Utc>> {
    let (seconds, nanos) = batch.batch_id.get_timestamp()?.to_unix();
    DateTime::from_timestamp(i64::try_from(seconds).ok()?, nanos)
}

/// Publishes the message to the dead-letter exchange with the reason in a header, waits for
/// the broker's confirm, then acks the original. If that publish fails the message is
/// rejected instead, and the queue's own dead-lettering takes it (without our header).
pub async fn send_to_dead_letters(
    link: &RabbitLink,
    delivery: &Delivery,
    poison: &Poison,
) -> Result<(), AmqpError> {
    metrics::counter!("keymeter_ingest_dead_lettered_total", "reason" => poison.kind).increment(1);
    tracing::warn!(reason = poison.kind, detail = %poison.detail, "usage message dead-lettered");
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(
        ShortString::from(REASON_HEADER),
        AMQPValue::LongString(format!("{}: {}", poison.kind, poison.detail).into()),
    );
    let published = match link.publisher().await {
        Ok(publisher) => {
            publisher
                .publish(
                    &link.topology().dead_letter_exchange(),
                    "",
                    &delivery.data,
                    None,
                    headers,
                )
                .await
        }
        Err(error) => Err(error),
    };
    match published {
        Ok(()) => {
            let acked = delivery
                .acker
                .ack(lapin::options::BasicAckOptions::default())
                .await?;
            if !acked {
                // It comes back and is dead-lettered again: a duplicate among the dead
                // letters, never in the counts.
                tracing::warn!("channel closed before the poison message was acked");
            }
            Ok(())
        }
        Err(error) => {
            tracing::warn!(%error, "dead-letter publish failed; rejecting to the queue's dead-letter exchange");
            link.forget_publisher().await;
            dead_letter(delivery).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn body(batch_id: Uuid) -> String {
        body_at(batch_id, this_minute())
    }

    fn this_minute() -> DateTime<Utc> {
        let now = Utc::now().timestamp() / 60 * 60;
        DateTime::from_timestamp(now, 0).unwrap()
    }

    fn body_at(batch_id: Uuid, minute: DateTime<Utc>) -> String {
        format!(
            r#"{{"v":1,"batch_id":"{batch_id}","source":"a","entries":[{{"key_id":"{}","minute":"{}","allowed":1,"denied":0,"cost":1}}]}}"#,
            Uuid::nil(),
            minute.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }

    #[test]
    fn labels_each_kind_of_poison() {
        let window = Duration::from_secs(3600);
        let now = Utc::now();
        assert_eq!(
            judge(b"{", now, window).map_err(|p| p.kind),
            Err("malformed")
        );
        let v2 = body(Uuid::now_v7()).replace(r#""v":1"#, r#""v":2"#);
        assert_eq!(
            judge(v2.as_bytes(), now, window).map_err(|p| p.kind),
            Err("malformed")
        );
        let empty = body(Uuid::now_v7()).replace(r#""allowed":1"#, r#""allowed":0"#);
        assert_eq!(
            judge(empty.as_bytes(), now, window).map_err(|p| p.kind),
            Err("impossible")
        );
    }

    #[test]
    fn refuses_a_batch_older_than_the_dedup_window() {
        let window = Duration::from_secs(3600);
        let id = Uuid::now_v7();
        assert!(judge(body(id).as_bytes(), Utc::now(), window).is_ok());
        let later = Utc::now() + chrono::Duration::hours(2);
        assert_eq!(
            judge(body(id).as_bytes(), later, window).map_err(|p| p.kind),
            Err("too_old")
        );
        // A v4 id carries no time: it is counted, deduplicated while its id is remembered.
        assert!(judge(body(Uuid::new_v4()).as_bytes(), later, window).is_ok());
    }

    #[test]
    fn refuses_minutes_far_from_now() {
        let window = Duration::from_secs(3600);
        let now = Utc::now();
        let judged = |minute: DateTime<Utc>| {
            judge(body_at(Uuid::now_v7(), minute).as_bytes(), now, window).map_err(|p| p.kind)
        };
        let minute = this_minute();
        assert!(judged(minute - chrono::Duration::hours(24)).is_ok());
        assert!(judged(minute + chrono::Duration::minutes(30)).is_ok());
        assert_eq!(
            judged(minute - chrono::Duration::hours(26)),
            Err("out_of_range"),
            "older than the dedup window and a day"
        );
        assert_eq!(
            judged(minute + chrono::Duration::hours(2)),
            Err("out_of_range"),
            "ahead of this host's clock by more than an hour"
        );
        assert_eq!(
            judged(DateTime::from_timestamp(253_402_300_740, 0).unwrap()),
            Err("out_of_range"),
            "9999-12-31 23:59, a day no partition should be made for"
        );
    }
}
