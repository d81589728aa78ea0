//! E-mail digests: every interval, each user who is offline (no open `/ws/events` stream)
//! and has unread, not yet mailed mention, DM or reminder notifications gets one e-mail listing them.
//! Without SMTP settings the mailer only logs that a digest would go out (user id and count;
//! never addresses or message text).

use std::collections::BTreeMap;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use sqlx::FromRow;
use tokio::task::JoinHandle;

use crate::chat;
use crate::db::now_ms;
use crate::state::AppState;

/// Notifications listed in one digest; the rest wait for the next one.
const MAX_PER_DIGEST: usize = 50;

/// Where digests go.
pub enum Mailer {
    /// Logs that a digest would be sent; the default.
    Log,
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("invalid SMTP URL: {0}")]
    Url(#[from] lettre::transport::smtp::Error),
    #[error("invalid sender address: {0}")]
    From(#[from] lettre::address::AddressError),
}

impl Mailer {
    /// An SMTP mailer for `url` (`smtp://host:port` plain or `?tls=required` for STARTTLS,
    /// `smtps://host` for TLS; credentials as `user:pass@`) sending as `from`.
    pub fn smtp(url: &str, from: &str) -> Result<Self, MailerError> {
        Ok(Self::Smtp {
            transport: AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?.build(),
            from: from.parse()?,
        })
    }
}

#[derive(FromRow)]
struct Pending {
    id: String,
    user_id: String,
    email: String,
    display_name: String,
    title: String,
    message: String,
}

struct Digest {
    to: Mailbox,
    ids: Vec<String>,
    text: String,
}

/// Sends digests every `interval` until the server shuts down.
pub fn spawn_digests(state: AppState, mailer: Mailer, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = state.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = send_digests(&state, &mailer).await {
                tracing::warn!(error = %e, "e-mail digests failed; retrying next interval");
            }
        }
    })
}

async fn send_digests(state: &AppState, mailer: &Mailer) -> Result<(), sqlx::Error> {
    let pending: Vec<Pending> = sqlx::query_as(
        "SELECT n.id, n.user_id, u.email, u.display_name, n.title, n.message FROM notifications n \
         JOIN users u ON u.id = n.user_id \
         WHERE n.emailed_at IS NULL AND n.read_at IS NULL AND n.reason IN ('mention', 'dm', 'reminder') \
         ORDER BY n.user_id, n.id LIMIT 5000",
    )
    .fetch_all(state.db.pool())
    .await?;
    let mut digests: BTreeMap<String, Digest> = BTreeMap::new();
    for p in pending {
        if chat::presence_of(state, &p.user_id) != chat::Status::Offline {
            continue;
        }
        let Ok(address) = p.email.parse() else {
            continue;
        };
        let digest = digests.entry(p.user_id).or_insert_with(|| Digest {
            to: Mailbox::new(Some(p.display_name), address),
            ids: Vec::new(),
            text: String::new(),
        });
        if digest.ids.len() < MAX_PER_DIGEST {
            digest.text.push_str(&format!("- {}\n  {}\n\n", p.title, p.message));
            digest.ids.push(p.id);
        }
    }
    for (user_id, digest) in digests {
        let count = digest.ids.len();
        let sent = match mailer {
            Mailer::Log => {
                tracing::info!(user_id = %user_id, count, "e-mail digest (no SMTP configured; not sent)");
                true
            }
            Mailer::Smtp { transport, from } => {
                let text = format!(
                    "While you were away:\n\n{}Open Convene: {}\n",
                    digest.text, state.config.public_url
                );
                let subject = if count == 1 {
                    "1 new notification on Convene".to_owned()
                } else {
                    format!("{count} new notifications on Convene")
                };
                let email = lettre::Message::builder()
                    .from(from.clone())
                    .to(digest.to)
                    .subject(subject)
                    .body(text);
                match email {
                    Ok(email) => match transport.send(email).await {
                        Ok(_) => {
                            tracing::info!(user_id = %user_id, count, "e-mail digest sent");
                            true
                        }
                        Err(e) => {
                            // The error text may echo the address: log its kind only.
                            let code = e.status().map(|c| c.to_string());
                            tracing::warn!(user_id = %user_id, permanent = e.is_permanent(), code = ?code,
                                "e-mail digest not sent");
                            false
                        }
                    },
                    Err(_) => {
                        tracing::warn!(user_id = %user_id, "e-mail digest not built");
                        false
                    }
                }
            }
        };
        if sent {
            let now = now_ms();
            for id in &digest.ids {
                sqlx::query("UPDATE notifications SET emailed_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(id)
                    .execute(state.db.pool())
                    .await?;
            }
        }
    }
    Ok(())
}
