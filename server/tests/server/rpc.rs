//! Every RPC and every error of the protocol, on both backends.

use dcbstore_server::proto::{self, error_response::ErrorType};
use tonic::Code;

use crate::common::*;

#[tokio::test]
async fn events_round_trip_byte_for_byte() {
    for backend in Backend::all() {
        let (server, mut client) = serve(&backend).await;
        let mut sent = vec![
            event(
                "Registered",
                &["student:1"],
                br#"{ "name" :"Ada",  "score": 1.50 }"#,
            ),
            event("Note", &[], b"plain text, not JSON"),
            event("Blob", &["a", "b"], &[0, 159, 146, 150, 255]),
            event("Empty", &["a"], b""),
            event("Array", &[], b"[1, 2, 3]"),
            // Written as serde_json writes it: stored once, as the payload, whose keys
            // PostgreSQL keeps in another order (shorter first).
            event(
                "Canonical",
                &["a"],
                r#"{"aa":1,"b":{"ccc":[1,-2,18446744073709551615],"d":"é\n\"x\""},"e":null}"#
                    .as_bytes(),
            ),
            event("Float", &[], br#"{"a":1e+19,"b":-0.0}"#),
        ];
        sent[0].metadata = vec![
            proto::MetadataEntry {
                key: "z".into(),
                value: "last".into(),
            },
            proto::MetadataEntry {
                key: "a".into(),
                value: "first".into(),
            },
        ];
        let position = append(&mut client, sent.clone(), None)
            .await
            .expect("appended");
        let (read, head) = read(&mut client, None).await;
        assert_eq!(head, Some(position), "{backend:?}");
        let got: Vec<proto::Event> = read.iter().map(|e| e.event.clone().unwrap()).collect();
        assert_eq!(got, sent, "{backend:?}: every field comes back as sent");
        let positions: Vec<u64> = read.iter().map(|e| e.position).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(positions.last(), Some(&position));
        end(server, &backend).await;
    }
}

#[tokio::test]
async fn a_replay_returns_the_original_position_and_other_content_is_refused() {
    for backend in Backend::all() {
        let (server, mut client) = serve(&backend).await;
        let e = event("Registered", &["student:1"], br#"{"n":1}"#);
        let first = append(&mut client, vec![e.clone()], None).await.unwrap();
        append(&mut client, vec![event("Other", &[], b"{}")], None)
            .await
            .unwrap();
        let again = append(&mut client, vec![e.clone()], None).await.unwrap();
        assert_eq!(
            again, first,
            "{backend:?}: the same id and content is a replay"
        );
        let mut changed = e.clone();
        changed.data = br#"{"n":2}"#.to_vec();
        let refused = append(&mut client, vec![changed], None).await.unwrap_err();
        assert_eq!(
            refusal(&refused),
            (Code::FailedPrecondition, ErrorType::Integrity),
            "{backend:?}: {refused:?}"
        );
        let (all, _) = read(&mut client, None).await;
        assert_eq!(all.len(), 2, "{backend:?}: nothing written twice");
        end(server, &backend).await;
    }
}

#[tokio::test]
async fn a_failed_condition_is_an_integrity_error_and_writes_nothing() {
    for backend in Backend::all() {
        let (server, mut client) = serve(&backend).await;
        let q = query(&[(&[], &["username:ada"])]);
        let claim = |n: &str| {
            event(
                "Claimed",
                &["username:ada"],
                format!(r#"{{"by":"{n}"}}"#).as_bytes(),
            )
        };
        let (seen, head) = read(&mut client, Some(q.clone())).await;
        assert!(seen.is_empty());
        assert_eq!(head, None);
        let condition = proto::AppendCondition {
            fail_if_events_match: Some(q.clone()),
            after: head,
        };
        append(&mut client, vec![claim("1")], Some(condition.clone()))
            .await
            .unwrap();
        let refused = append(&mut client, vec![claim("2")], Some(condition))
            .await
            .unwrap_err();
        assert_eq!(
            refusal(&refused),
            (Code::FailedPrecondition, ErrorType::Integrity),
            "{backend:?}"
        );
        // After the position it read, the condition holds again.
        let (seen, head) = read(&mut client, Some(q.clone())).await;
        assert_eq!(seen.len(), 1);
        let after = proto::AppendCondition {
            fail_if_events_match: Some(q.clone()),
            after: head,
        };
        append(
            &mut client,
            vec![event("Released", &["username:ada"], b"{}")],
            Some(after),
        )
        .await
        .unwrap();
        // A condition with no query fails on any event after its position.
        let anything = proto::AppendCondition {
            fail_if_events_match: None,
            after: Some(1),
        };
        let refused = append(&mut client, vec![claim("3")], Some(anything))
            .await
            .unwrap_err();
        assert_eq!(
            refusal(&refused),
            (Code::FailedPrecondition, ErrorType::Integrity)
        );
        let (all, _) = read(&mut client, None).await;
        assert_eq!(all.len(), 2, "{backend:?}");
        end(server, &backend).await;
    }
}

#[tokio::test]
async fn bad_requests_are_invalid_arguments_and_write_nothing() {
    for backend in Backend::all() {
        let (server, mut client) = serve(&backend).await;
        let cases = [
            vec![event("", &[], b"{}")],
            vec![],
            vec![proto::Event {
                uuid: "not-a-uuid".into(),
                ..event("A", &[], b"{}")
            }],
            vec![event("A", &[""], b"{}")],
        ];
        for events in cases {
            let refused = append(&mut client, events.clone(), None).await.unwrap_err();
            assert_eq!(
                refusal(&refused),
                (Code::InvalidArgument, ErrorType::InvalidArgument),
                "{backend:?} {events:?}: {refused:?}"
            );
        }
        #[allow(deprecated)]
        let request = proto::ReadRequest {
            subscribe: Some(true),
            ..Default::default()
        };
        let refused = read_all(&mut client, request).await.unwrap_err();
        assert_eq!(
            refusal(&refused),
            (Code::InvalidArgument, ErrorType::InvalidArgument)
        );
        let head = client
            .head(proto::HeadRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(head.position, None, "{backend:?}: nothing was written");
        end(server, &backend).await;
    }
}

#[tokio::test]
async fn reads_honour_start_backwards_limit_and_batches() {
    for backend in Backend::all() {
        let (server, mut client) = serve(&backend).await;
        let events: Vec<_> = (0..25)
            .map(|i| {
                event(
                    if i % 2 == 0 { "Even" } else { "Odd" },
                    &["t"],
                    format!("{i}").as_bytes(),
                )
            })
            .collect();
        let last = append(&mut client, events, None).await.unwrap();
        let first = last - 24;
        let request = |start, backwards, limit, batch_size| proto::ReadRequest {
            query: None,
            start,
            backwards: Some(backwards),
            limit,
            batch_size,
            ..Default::default()
        };
        let positions = |responses: &[proto::ReadResponse]| -> Vec<u64> {
            responses
                .iter()
                .flat_map(|r| r.events.iter().map(|e| e.position))
                .collect()
        };
        // Batches of 10: three responses, each with the head.
        let responses = read_all(&mut client, request(None, false, None, Some(10)))
            .await
            .unwrap();
        assert_eq!(
            responses.iter().map(|r| r.events.len()).collect::<Vec<_>>(),
            [10, 10, 5]
        );
        assert!(
            responses.iter().all(|r| r.head == Some(last)),
            "{backend:?}"
        );
        assert_eq!(positions(&responses), (first..=last).collect::<Vec<_>>());
        // From a position, with a limit: the head is the last position sent.
        let responses = read_all(
            &mut client,
            request(Some(first + 5), false, Some(7), Some(3)),
        )
        .await
        .unwrap();
        assert_eq!(
            positions(&responses),
            (first + 5..first + 12).collect::<Vec<_>>()
        );
        assert_eq!(responses.last().unwrap().head, Some(first + 11));
        // Backwards from a position.
        let responses = read_all(&mut client, request(Some(first + 4), true, None, None))
            .await
            .unwrap();
        assert_eq!(
            positions(&responses),
            (first..=first + 4).rev().collect::<Vec<_>>()
        );
        // Backwards, the last three.
        let responses = read_all(&mut client, request(None, true, Some(3), Some(2)))
            .await
            .unwrap();
        assert_eq!(positions(&responses), [last, last - 1, last - 2]);
        // By type.
        let odd = proto::ReadRequest {
            query: Some(query(&[(&["Odd"], &[])])),
            ..Default::default()
        };
        let responses = read_all(&mut client, odd).await.unwrap();
        assert_eq!(positions(&responses).len(), 12);
        // Past the end: one empty response with the head.
        let responses = read_all(&mut client, request(Some(last + 1), false, None, None))
            .await
            .unwrap();
        assert_eq!(responses.len(), 1);
        assert!(responses[0].events.is_empty());
        assert_eq!(responses[0].head, Some(last));
        end(server, &backend).await;
    }
}

#[tokio::test]
async fn tracking_moves_forward_with_its_append_only() {
    for backend in Backend::all() {
        let (server, mut client) = serve(&backend).await;
        let source = proto::TrackingRequest {
            source: "orders".into(),
        };
        let tracked = |position: u64, e: proto::Event| proto::AppendRequest {
            events: vec![e],
            condition: None,
            tracking_info: Some(proto::TrackingInfo {
                source: "orders".into(),
                position,
            }),
        };
        let none = client
            .get_tracking_info(source.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(none.position, None);
        client
            .append(tracked(5, event("A", &[], b"{}")))
            .await
            .unwrap();
        let at = client
            .get_tracking_info(source.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(at.position, Some(5), "{backend:?}");
        for stale in [5, 4] {
            let refused = client
                .append(tracked(stale, event("B", &[], b"{}")))
                .await
                .unwrap_err();
            assert_eq!(
                refusal(&refused),
                (Code::FailedPrecondition, ErrorType::Integrity),
                "{backend:?}"
            );
        }
        // A failed condition leaves the position where it was.
        let mut failing = tracked(9, event("C", &[], b"{}"));
        failing.condition = Some(proto::AppendCondition {
            fail_if_events_match: None,
            after: None,
        });
        client.append(failing).await.unwrap_err();
        let at = client
            .get_tracking_info(source.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(at.position, Some(5), "{backend:?}");
        client
            .append(tracked(6, event("D", &[], b"{}")))
            .await
            .unwrap();
        let at = client.get_tracking_info(source).await.unwrap().into_inner();
        assert_eq!(at.position, Some(6));
        let (all, _) = read(&mut client, None).await;
        let types: Vec<String> = all
            .into_iter()
            .map(|e| e.event.unwrap().event_type)
            .collect();
        assert_eq!(
            types,
            ["A", "D"],
            "{backend:?}: refused appends wrote nothing"
        );
        end(server, &backend).await;
    }
}

#[tokio::test]
async fn an_api_key_is_required_when_set_and_health_answers_without_it() {
    let backend = Backend::Memory;
    let mut config = backend.config();
    config.api_key = Some("s3cret".into());
    let server = start_with(config).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut anonymous = dcbstore_server::proto::dcb_client::DcbClient::new(channel.clone());
    let refused = anonymous.head(proto::HeadRequest {}).await.unwrap_err();
    assert_eq!(
        refusal(&refused),
        (Code::Unauthenticated, ErrorType::Authentication)
    );
    let mut keyed = dcbstore_server::proto::dcb_client::DcbClient::with_interceptor(
        channel.clone(),
        |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", "Bearer s3cret".parse().unwrap());
            Ok(request)
        },
    );
    keyed
        .append(proto::AppendRequest {
            events: vec![event("A", &[], b"{}")],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        keyed
            .head(proto::HeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .position,
        Some(1)
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "umadb.v1.DCB"] {
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            answer.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
    }
    server.stop().await.unwrap();
}

/// A graceful stop (SIGTERM) finishes the appends in flight: one waiting on a boundary lock held
/// by a library transaction gets its answer once the lock is let go, and the server stops after.
#[tokio::test]
async fn stopping_finishes_the_appends_in_flight() {
    use dcbstore::{AppendCondition, Event, Query, QueryItem};
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let (server, mut client) = serve(&backend).await;
    let store = backend.store().await;
    let mut held = store.pool().get().await.unwrap();
    let transaction = held.transaction().await.unwrap();
    let boundary = Query::from(QueryItem::tagged(["seat:1"]));
    let guard = Some(AppendCondition::new(boundary, None));
    let taken = Event::new("Taken", serde_json::json!({})).with_tags(["seat:1"]);
    store.append_in(&transaction, [taken], guard).await.unwrap();
    let condition = proto::AppendCondition {
        fail_if_events_match: Some(query(&[(&[], &["seat:1"])])),
        after: None,
    };
    let in_flight = tokio::spawn(async move {
        append(
            &mut client,
            vec![event("Taken", &["seat:1"], b"{}")],
            Some(condition),
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !stopping.is_finished(),
        "the stop waits for the append in flight"
    );
    transaction.commit().await.unwrap();
    let answer = in_flight.await.unwrap().unwrap_err();
    assert_eq!(
        answer.code(),
        Code::FailedPrecondition,
        "an answer, not a dropped call: {answer:?}"
    );
    stopping.await.unwrap().expect("a clean stop");
    drop_schema(&backend).await;
}
