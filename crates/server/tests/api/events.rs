use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::helpers::{TestApp, spawn_app};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &TestApp, query: &str) -> Ws {
    let url = format!("ws://{}/ws/events?{query}", app.addr);
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects")
        .0
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await.expect("stream open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

#[tokio::test]
async fn requires_a_valid_token() {
    let app = spawn_app().await;
    let err = tokio_tungstenite::connect_async(format!("ws://{}/ws/events", app.addr))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let err = tokio_tungstenite::connect_async(format!("ws://{}/ws/events?access_token=forged", app.addr))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test]
async fn events_arrive_in_order_and_resume_without_gaps_or_repeats() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut ws = connect(&app, &format!("access_token={}", alice.access)).await;
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "hello");
    let epoch = hello["epoch"].as_str().unwrap().to_owned();

    app.events.publish(
        [alice.user_id.as_str(), bob.user_id.as_str()],
        "test.one",
        &json!({ "n": 1 }),
    );
    app.events
        .publish([alice.user_id.as_str()], "test.two", &json!({ "n": 2 }));
    let one = next_json(&mut ws).await;
    let two = next_json(&mut ws).await;
    assert_eq!(
        (one["seq"].as_u64(), one["type"].as_str(), one["data"]["n"].as_u64()),
        (Some(1), Some("test.one"), Some(1))
    );
    assert_eq!(two["seq"], 2);
    ws.close(None).await.unwrap();

    // Missed while away: exactly 3 and 4, then live 5.
    app.events.publish([alice.user_id.as_str()], "test.three", &json!({}));
    app.events.publish([alice.user_id.as_str()], "test.four", &json!({}));
    let mut ws = connect(&app, &format!("access_token={}&last_seq=2&epoch={epoch}", alice.access)).await;
    assert_eq!(next_json(&mut ws).await["resumed"], true);
    assert_eq!(next_json(&mut ws).await["seq"], 3);
    assert_eq!(next_json(&mut ws).await["seq"], 4);
    app.events.publish([alice.user_id.as_str()], "test.five", &json!({}));
    assert_eq!(next_json(&mut ws).await["seq"], 5);

    // Bob's stream is his own.
    let mut bob_ws = connect(&app, &format!("access_token={}&last_seq=0&epoch={epoch}", bob.access)).await;
    next_json(&mut bob_ws).await;
    let first = next_json(&mut bob_ws).await;
    assert_eq!(
        (first["seq"].as_u64(), first["type"].as_str()),
        (Some(1), Some("test.one"))
    );

    // Another epoch (a restarted server) cannot be resumed.
    let mut stale = connect(
        &app,
        &format!("access_token={}&last_seq=2&epoch=previous", alice.access),
    )
    .await;
    let msg = next_json(&mut stale).await;
    assert_eq!(msg["type"], "resync_required");
    assert_eq!(msg["latest_seq"], 5);
}

#[tokio::test]
async fn shutdown_closes_streams_with_going_away() {
    let mut app = spawn_app().await;
    let alice = app.register("alice").await;
    let mut ws = connect(&app, &format!("access_token={}", alice.access)).await;
    next_json(&mut ws).await;
    app.stop();
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(frame.code, CloseCode::Away);
                break;
            }
            Some(Ok(Message::Ping(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}
