//! Logs and metrics: tracing without addresses, tokens or bodies; Prometheus text at `/metrics`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use convene_sfu::{Sfu, SfuStats};
use convene_turn::TurnServer;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber (`RUST_LOG` filters, default `info`). Idempotent.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route template (`/api/v1/teams/{team_id}`), never the raw path: bounded cardinality
    /// and no ids or tokens in metrics.
    route: String,
    status: u16,
}

/// The process's metric registry; features register their own metrics into it.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    /// The SFU's counters as of the last scrape; the SFU is asked afresh on every scrape.
    media: Option<(Sfu, Arc<Mutex<SfuStats>>)>,
}

impl std::fmt::Debug for TurnCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TurnCollector")
    }
}

/// Publishes the relay's counters, read on every scrape.
struct TurnCollector(Arc<TurnServer>);

impl Collector for TurnCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let m = self.0.metrics();
        let gauges = [
            ("turn_allocations", "Allocations now", m.allocations),
            ("turn_permissions", "Permissions now", m.permissions),
            ("turn_channels", "Channel bindings now", m.channels),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let counters = [
            (
                "turn_allocations_created",
                "Allocations ever created",
                m.allocations_total,
            ),
            (
                "turn_relayed_packets_to_peers",
                "Packets relayed from clients to peers",
                m.relayed_packets_to_peers,
            ),
            (
                "turn_relayed_bytes_to_peers",
                "Bytes relayed from clients to peers",
                m.relayed_bytes_to_peers,
            ),
            (
                "turn_relayed_packets_to_clients",
                "Packets relayed from peers to clients",
                m.relayed_packets_to_clients,
            ),
            (
                "turn_relayed_bytes_to_clients",
                "Bytes relayed from peers to clients",
                m.relayed_bytes_to_clients,
            ),
            (
                "turn_auth_failures",
                "Requests with wrong or expired credentials",
                m.auth_failures,
            ),
            (
                "turn_peers_denied",
                "Permissions refused by the peer policy",
                m.peers_denied,
            ),
            (
                "turn_quota_rejections",
                "Allocations refused by quotas",
                m.quota_rejections,
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        Ok(())
    }
}

impl Metrics {
    pub(crate) fn new(sfu: Option<Sfu>, turn: Option<Arc<TurnServer>>) -> Self {
        let mut registry = Registry::with_prefix("convene");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register("http_requests", "HTTP requests handled", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency", latency.clone());
        let media = sfu.map(|sfu| {
            let stats = Arc::new(Mutex::new(SfuStats::default()));
            registry.register_collector(Box::new(MediaCollector(stats.clone())));
            (sfu, stats)
        });
        if let Some(turn) = turn {
            registry.register_collector(Box::new(TurnCollector(turn)));
        }
        Self {
            registry,
            requests,
            latency,
            media,
        }
    }

    async fn render(&self) -> String {
        if let Some((sfu, stats)) = &self.media
            && let Ok(now) = sfu.stats().await
        {
            *stats.lock().unwrap_or_else(|p| p.into_inner()) = now;
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Middleware recording count and latency per route, method and status.
pub(crate) async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let start = Instant::now();
    let response = next.run(request).await;
    let labels = RequestLabels {
        method,
        route,
        status: response.status().as_u16(),
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .latency
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    response
}

pub(crate) async fn metrics_handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    let body = metrics.render().await;
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        body,
    )
}

/// Publishes the SFU's counters (read by the scrape handler) in the registry's format.
#[derive(Debug)]
struct MediaCollector(Arc<Mutex<SfuStats>>);

impl Collector for MediaCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        let gauges = [
            ("media_rooms", "Rooms with participants", s.rooms),
            ("media_participants", "Participants in rooms", s.participants),
            ("media_tracks", "Published tracks", s.tracks),
            ("media_peer_connections", "Peer connections", s.peer_connections),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let counters = [
            (
                "media_forwarded_packets",
                "RTP packets forwarded to subscribers",
                s.forwarded_packets,
            ),
            (
                "media_forwarded_bytes",
                "RTP payload bytes forwarded to subscribers",
                s.forwarded_bytes,
            ),
            (
                "media_dropped_packets",
                "Datagrams or packets dropped",
                s.dropped_packets,
            ),
            (
                "media_keyframe_requests",
                "Keyframe requests sent to publishers",
                s.keyframe_requests,
            ),
            (
                "media_nacks_received",
                "NACKs from subscribers, answered from the send buffer (RTX where negotiated)",
                s.nacks_received,
            ),
            (
                "media_nacks_sent",
                "NACKs sent to publishers for lost packets",
                s.nacks_sent,
            ),
            (
                "media_layer_switches",
                "Simulcast layer switches made by down-tracks",
                s.layer_switches,
            ),
            (
                "media_retransmitted_packets",
                "Packets resent to subscribers from the retransmission cache",
                s.retransmitted_packets,
            ),
            (
                "media_recorder_dropped_packets",
                "Packets of recorded rooms dropped because the recorder fell behind",
                s.recorder_dropped_packets,
            ),
            (
                "media_worker_late_timeouts",
                "Timeouts a media worker handled 20 ms or more late (short of CPU)",
                s.worker_late_timeouts,
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        Ok(())
    }
}
