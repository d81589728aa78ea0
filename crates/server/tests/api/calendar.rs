use chrono::{DateTime, Duration, SecondsFormat, Utc};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{TestApp, cast, error_code, spawn_app, spawn_app_with};

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn starts(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|o| o["starts_at"].as_str().unwrap().to_owned())
        .collect()
}

async fn range(app: &TestApp, token: &str, from: &str, to: &str) -> Value {
    let (status, list) = app.get(&format!("/api/v1/events?from={from}&to={to}"), token).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list
}

#[tokio::test]
async fn events_crud_rsvp_and_authorization() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let (team, owner, member, guest, outsider) = (c.team, c.owner, c.member, c.guest, c.outsider);

    let (status, event) = app
        .post(
            "/api/v1/events",
            Some(&member.access),
            json!({
                "title": "Planning", "team_id": team, "event_type": "meeting",
                "starts_at": "2026-06-01T09:00:00Z", "ends_at": "2026-06-01T10:00:00Z",
                "time_zone": "Europe/Paris", "location": "Room 1",
                "attendees": [guest.user_id], "reminders": [10, 60]
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    let id = event["id"].as_str().unwrap();
    assert_eq!(event["organizer"], member.user_id.as_str());
    assert_eq!(event["reminders"], json!([10, 60]));
    assert_eq!(event["attendees"].as_array().unwrap().len(), 2);

    // Visibility: team members and attendees see it; outsiders learn nothing.
    assert_eq!(
        app.get(&format!("/api/v1/events/{id}"), &owner.access).await.0,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/api/v1/events/{id}"), &guest.access).await.0,
        StatusCode::OK
    );
    let (status, body) = app.get(&format!("/api/v1/events/{id}"), &outsider.access).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let list = range(&app, &outsider.access, "2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z").await;
    assert!(list.as_array().unwrap().is_empty());

    // RSVP: attendees answer; others cannot.
    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/events/{id}/rsvp"),
            Some(&guest.access),
            Some(json!({ "rsvp": "declined" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rsvp = body["attendees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["user_id"] == guest.user_id.as_str())
        .unwrap()["rsvp"]
        .clone();
    assert_eq!(rsvp, "declined");
    let (status, _) = app
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/events/{id}/rsvp"),
            Some(&owner.access),
            Some(json!({ "rsvp": "maybe" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Editing: organizer and team admins; not plain attendees.
    let (status, body) = app
        .patch(
            &format!("/api/v1/events/{id}"),
            &guest.access,
            json!({ "title": "Mine" }),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, body) = app
        .patch(
            &format!("/api/v1/events/{id}"),
            &owner.access,
            json!({ "title": "Planning v2", "rrule": "FREQ=DAILY;COUNT=2" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rrule"], "FREQ=DAILY;COUNT=2");
    let list = range(&app, &member.access, "2026-06-01T00:00:00Z", "2026-06-10T00:00:00Z").await;
    assert_eq!(starts(&list), ["2026-06-01T09:00:00Z", "2026-06-02T09:00:00Z"]);

    // Bad input is a 4xx with the error envelope.
    let base = json!({ "title": "X", "starts_at": "2026-06-01T09:00:00Z", "ends_at": "2026-06-01T10:00:00Z" });
    for (patch, field) in [
        (json!({ "time_zone": "Mars/Olympus" }), "time_zone"),
        (json!({ "rrule": "FREQ=YEARLY" }), "rrule"),
        (json!({ "ends_at": "2026-06-01T08:00:00Z" }), "ends_at"),
        (json!({ "reminders": [-5] }), "reminders"),
        (json!({ "title": " " }), "title"),
        (
            json!({ "starts_at": "0001-01-01T00:00:00Z", "rrule": "FREQ=DAILY" }),
            "starts_at",
        ),
        (json!({ "attendees": [outsider.user_id] }), "attendees"),
    ] {
        let mut req = base.clone();
        req.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
        let (status, body) = app.post("/api/v1/events", Some(&member.access), req).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body["error"]["fields"].get(field).is_some(), "{field}: {body}");
    }
    let (status, body) = app
        .post(
            "/api/v1/events",
            Some(&member.access),
            json!({ "title": "X", "starts_at": "yesterday" }),
        )
        .await;
    assert!(status.is_client_error(), "{body}");
    let (status, _) = app
        .post(
            "/api/v1/events",
            Some(&guest.access),
            json!({ "title": "X", "team_id": team, "starts_at": "2026-06-01T09:00:00Z", "ends_at": "2026-06-01T10:00:00Z" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "guests cannot schedule team events");
    let (status, body) = app
        .get(
            "/api/v1/events?from=2026-06-01T00:00:00Z&to=2028-06-01T00:00:00Z",
            &member.access,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
    );

    // Deleting: organizer or admin only.
    let path = format!("/api/v1/events/{id}");
    app.assert_deleted_only_by(&path, &[(&guest, StatusCode::FORBIDDEN)], &member, &member)
        .await;
}

#[tokio::test]
async fn recurrence_expands_across_dst_on_the_31st_and_with_exceptions() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let create = |body: Value| {
        let app = &app;
        let token = alice.access.clone();
        async move {
            let (status, event) = app.post("/api/v1/events", Some(&token), body).await;
            assert_eq!(status, StatusCode::CREATED, "{event}");
            event["id"].as_str().unwrap().to_owned()
        }
    };

    // Weekly Monday 09:00 in Berlin: 08:00Z before the DST change (2026-03-29), 07:00Z after.
    let weekly = create(json!({
        "title": "Weekly", "starts_at": "2026-03-16T08:00:00Z", "ends_at": "2026-03-16T08:30:00Z",
        "time_zone": "Europe/Berlin", "rrule": "FREQ=WEEKLY;BYDAY=MO"
    }))
    .await;
    let list = range(&app, &alice.access, "2026-03-20T00:00:00Z", "2026-04-07T00:00:00Z").await;
    assert_eq!(
        starts(&list),
        ["2026-03-23T08:00:00Z", "2026-03-30T07:00:00Z", "2026-04-06T07:00:00Z"]
    );
    assert!(list[0]["recurring"].as_bool().unwrap());

    // EXDATE the 30th, move the 6th by an hour.
    let (status, body) = app
        .delete(
            &format!("/api/v1/events/{weekly}/occurrences/2026-03-30T07:00:00Z"),
            &alice.access,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/events/{weekly}/occurrences/2026-04-06T07:00:00Z"),
            Some(&alice.access),
            Some(json!({ "starts_at": "2026-04-06T08:00:00Z", "title": "Weekly (late)" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list = range(&app, &alice.access, "2026-03-20T00:00:00Z", "2026-04-07T00:00:00Z").await;
    assert_eq!(starts(&list), ["2026-03-23T08:00:00Z", "2026-04-06T08:00:00Z"]);
    assert_eq!(list[1]["title"], "Weekly (late)");
    assert_eq!(list[1]["ends_at"], "2026-04-06T08:30:00Z");
    assert_eq!(list[1]["original_start"], "2026-04-06T07:00:00Z");
    // An occurrence that is not in the series is 404.
    let (status, _) = app
        .delete(
            &format!("/api/v1/events/{weekly}/occurrences/2026-03-31T07:00:00Z"),
            &alice.access,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .delete(
            &format!("/api/v1/events/{weekly}/occurrences/not-a-time"),
            &alice.access,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Monthly on the 31st: months without one are skipped, not moved.
    create(json!({
        "title": "Month end", "starts_at": "2026-01-31T12:00:00Z", "ends_at": "2026-01-31T13:00:00Z",
        "rrule": "FREQ=MONTHLY;COUNT=4", "event_type": "deadline"
    }))
    .await;
    let (_, list) = app
        .get(
            "/api/v1/events?from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z&event_type=deadline",
            &alice.access,
        )
        .await;
    assert_eq!(
        starts(&list),
        [
            "2026-01-31T12:00:00Z",
            "2026-03-31T12:00:00Z",
            "2026-05-31T12:00:00Z",
            "2026-07-31T12:00:00Z"
        ]
    );

    // All-day events cover whole local days.
    let id = create(json!({
        "title": "Offsite", "starts_at": "2026-05-04T10:00:00Z", "ends_at": "2026-05-04T10:00:00Z",
        "time_zone": "America/New_York", "all_day": true
    }))
    .await;
    let (_, event) = app.get(&format!("/api/v1/events/{id}"), &alice.access).await;
    assert_eq!(
        (event["starts_at"].as_str(), event["ends_at"].as_str()),
        (Some("2026-05-04T04:00:00Z"), Some("2026-05-05T04:00:00Z"))
    );
}

#[tokio::test]
async fn the_ical_feed_parses_and_needs_its_token() {
    use icalendar::parser::{read_calendar, unfold};

    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let (status, event) = app
        .post(
            "/api/v1/events",
            Some(&alice.access),
            json!({
                "title": "Sync; with, commas", "description": "line one\nline two",
                "starts_at": "2026-03-16T08:00:00Z", "ends_at": "2026-03-16T08:30:00Z",
                "time_zone": "Europe/Berlin", "rrule": "FREQ=WEEKLY;BYDAY=MO;COUNT=5"
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = event["id"].as_str().unwrap();
    app.delete(
        &format!("/api/v1/events/{id}/occurrences/2026-03-23T08:00:00Z"),
        &alice.access,
    )
    .await;
    app.call(
        reqwest::Method::PUT,
        &format!("/api/v1/events/{id}/occurrences/2026-03-30T07:00:00Z"),
        Some(&alice.access),
        Some(json!({ "title": "Moved" })),
    )
    .await;

    let (status, feed) = app.post("/api/v1/calendar/feed", Some(&alice.access), json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{feed}");
    let url = feed["url"].as_str().unwrap();
    assert!(url.ends_with(".ics"));
    let res = app.client.get(url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/calendar")
    );
    let text = res.text().await.unwrap();
    assert!(text.lines().all(|l| l.len() <= 75), "lines are folded");

    let unfolded = unfold(&text);
    let calendars = read_calendar(&unfolded).expect("the feed parses as iCalendar");
    assert!(
        calendars
            .properties
            .iter()
            .any(|p| p.name == "VERSION" && p.val == "2.0")
    );
    let events: Vec<_> = calendars.components.iter().filter(|c| c.name == "VEVENT").collect();
    assert_eq!(events.len(), 2, "the series and its edited occurrence");
    let prop = |c: &icalendar::parser::Component<'_>, name: &str| {
        c.properties.iter().find(|p| p.name == name).map(|p| p.val.to_string())
    };
    assert_eq!(prop(events[0], "SUMMARY").as_deref(), Some("Sync; with, commas"));
    assert_eq!(
        prop(events[0], "RRULE").as_deref(),
        Some("FREQ=WEEKLY;COUNT=5;BYDAY=MO")
    );
    assert_eq!(prop(events[0], "DTSTART").as_deref(), Some("20260316T090000"));
    assert_eq!(prop(events[0], "EXDATE").as_deref(), Some("20260323T090000"));
    assert_eq!(prop(events[1], "RECURRENCE-ID").as_deref(), Some("20260330T090000"));
    assert_eq!(prop(events[1], "SUMMARY").as_deref(), Some("Moved"));
    assert_eq!(prop(events[0], "UID"), prop(events[1], "UID"));

    // A new feed address revokes the old one; unknown tokens are 404.
    app.post("/api/v1/calendar/feed", Some(&alice.access), json!({})).await;
    assert_eq!(
        app.client.get(url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let res = app.client.get(app.url("/api/v1/calendar/nope")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_reminder_fires_after_a_restart() {
    let mut first = spawn_app().await;
    let alice = first.register("alice").await;
    let bob = first.register("bob").await;
    let team = first.team(&alice, "T").await;
    first.add(&alice, &team, &bob, "member").await;
    // Due in about three seconds: after the restart below.
    let starts = Utc::now() + Duration::minutes(1) + Duration::seconds(3);
    let (status, body) = first
        .post(
            "/api/v1/events",
            Some(&alice.access),
            json!({
                "title": "Retro", "team_id": team, "starts_at": rfc(starts),
                "ends_at": rfc(starts + Duration::minutes(30)), "attendees": [bob.user_id], "reminders": [1]
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    first.stop();

    let url = first.database_url.clone();
    let second = spawn_app_with(|c| c.database_url = Some(url)).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws/events?access_token={}", second.addr, bob.access))
            .await
            .expect("websocket connects");
    let notification = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let Message::Text(t) = ws.next().await.unwrap().unwrap() else {
                continue;
            };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "notification.created" {
                return v["data"].clone();
            }
        }
    })
    .await
    .expect("the reminder fires");
    assert_eq!(notification["reason"], "reminder");
    assert_eq!(notification["title"], "Retro");
    assert!(
        notification["message"]
            .as_str()
            .unwrap()
            .starts_with("Starts in 1 min (")
    );
    let (_, list) = second.get("/api/v1/notifications", &alice.access).await;
    let reminders: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["reason"] == "reminder")
        .collect();
    assert_eq!(reminders.len(), 1, "the organizer is reminded once: {list}");
}
