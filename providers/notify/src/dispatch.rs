//! [`Dispatcher`]: one [`Notifier`] that routes each message by its channel.
//!
//! The channel follows the customer's source: a provider with a `mobile_no`
//! sends [`Channel::Sms`], one with only an `email` sends [`Channel::Email`].
//! The dispatcher hands each to the sender configured for that channel, and
//! a channel with no sender configured goes to the development
//! [`OutboxNotifier`] — the default, so a switch with no gateway still runs,
//! and says so in its start-up log.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use manifold_config::NotificationsConfig;
use manifold_provider::notify::{Channel, OutboxNotifier};
use manifold_provider::{Notification, Notifier, NotifyError};

use crate::email::SmtpMailer;
use crate::sms::SmsGateway;

/// One channel's sender and how to name it in logs.
struct Route {
    notifier: Arc<dyn Notifier>,
    description: String,
    is_outbox: bool,
}

/// Routes notifications by channel; see the module documentation.
pub struct Dispatcher {
    sms: Route,
    email: Route,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("sms", &self.sms.description)
            .field("email", &self.email.description)
            .finish()
    }
}

impl Dispatcher {
    /// Every channel to the outbox file at `outbox`, until [`with_sms`] or
    /// [`with_email`] replaces one.
    ///
    /// [`with_sms`]: Dispatcher::with_sms
    /// [`with_email`]: Dispatcher::with_email
    pub fn new(outbox: impl Into<PathBuf>) -> Dispatcher {
        let outbox = Arc::new(OutboxNotifier::new(outbox));
        let description = format!("the development outbox {}", outbox.path().display());
        let route = || Route {
            notifier: outbox.clone(),
            description: description.clone(),
            is_outbox: true,
        };
        Dispatcher {
            sms: route(),
            email: route(),
        }
    }

    /// Sends SMS through `notifier`; `description` names it in logs (never
    /// put a credential in it).
    pub fn with_sms(mut self, notifier: Arc<dyn Notifier>, description: impl Into<String>) -> Self {
        self.sms = Route {
            notifier,
            description: description.into(),
            is_outbox: false,
        };
        self
    }

    /// Sends e-mail through `notifier`; `description` names it in logs.
    pub fn with_email(
        mut self,
        notifier: Arc<dyn Notifier>,
        description: impl Into<String>,
    ) -> Self {
        self.email = Route {
            notifier,
            description: description.into(),
            is_outbox: false,
        };
        self
    }

    /// The host's `[notifications]`: an [`SmsGateway`] for `[notifications.sms]`,
    /// an [`SmtpMailer`] for `[notifications.email]`, the outbox for what is
    /// not configured. Logs, once, where each channel goes.
    pub fn from_config(config: &NotificationsConfig) -> Result<Dispatcher, NotifyError> {
        let mut dispatcher = Dispatcher::new(config.outbox.clone());
        if let Some(sms) = &config.sms {
            let gateway = SmsGateway::new(sms)?;
            let description = format!("the SMS gateway at {}", gateway.endpoint());
            dispatcher = dispatcher.with_sms(Arc::new(gateway), description);
        }
        if let Some(email) = &config.email {
            let mailer = SmtpMailer::new(email)?;
            let description = format!("the SMTP server {}", mailer.server());
            dispatcher = dispatcher.with_email(Arc::new(mailer), description);
        }
        dispatcher.log_channels();
        Ok(dispatcher)
    }

    /// Where messages of `channel` go, in words fit for a log.
    pub fn route_of(&self, channel: Channel) -> &str {
        &self.route(channel).description
    }

    /// Whether messages of `channel` go to the development outbox.
    pub fn uses_outbox(&self, channel: Channel) -> bool {
        self.route(channel).is_outbox
    }

    fn route(&self, channel: Channel) -> &Route {
        match channel {
            Channel::Sms => &self.sms,
            Channel::Email => &self.email,
        }
    }

    fn log_channels(&self) {
        for channel in [Channel::Sms, Channel::Email] {
            let route = self.route(channel);
            if route.is_outbox {
                // `info`, not `warn`: the outbox is the intended development
                // default, and the log shows at the default level all the same.
                tracing::info!(
                    "{channel} messages go to {}: no [notifications.{}] is configured (development only: the file holds OTPs in clear)",
                    route.description,
                    match channel {
                        Channel::Sms => "sms",
                        Channel::Email => "email",
                    }
                );
            } else {
                tracing::info!("{channel} messages go to {}", route.description);
            }
        }
    }
}

#[async_trait]
impl Notifier for Dispatcher {
    async fn send(&self, notification: &Notification) -> Result<(), NotifyError> {
        let route = self.route(notification.channel);
        let result = route.notifier.send(notification).await;
        if let Err(error) = &result {
            // The caller decides what a failure means and logs it; this only
            // adds where the message went. The error never holds the body.
            tracing::debug!(%error, via = %route.description, "notification not sent");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Building and dropping every channel needs no async runtime: the switch
    /// may be opened, and dropped, outside one.
    #[test]
    fn channels_are_built_and_dropped_without_a_runtime() {
        let text = "listen = \"127.0.0.1:0\"\n[data_at_rest]\nkey_id = \"test\"\nkey = \"5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87\"\n[storage]\npath = \"unused\"\n\
                    [notifications.sms]\nurl = \"https://sms.example.com/send\"\ntoken = \"t\"\n\
                    [notifications.email]\nhost = \"smtp.example.com\"\ntls = \"starttls\"\n\
                    from = \"no-reply@example.com\"\nusername = \"u\"\npassword = \"p\"\n";
        let config =
            manifold_config::SwitchConfig::from_toml(text, std::path::Path::new("t.toml")).unwrap();
        let dispatcher = Dispatcher::from_config(&config.notifications).unwrap();
        assert_eq!(
            dispatcher.route_of(Channel::Sms),
            "the SMS gateway at https://sms.example.com:443"
        );
        assert_eq!(
            dispatcher.route_of(Channel::Email),
            "the SMTP server smtp.example.com:587"
        );
        let printed = format!("{dispatcher:?}");
        assert!(
            !printed.contains("token") && !printed.contains("\"p\""),
            "{printed}"
        );
        drop(dispatcher);
    }
}
