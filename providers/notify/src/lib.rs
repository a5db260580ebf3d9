//! Real notification channels: how a provider's OTP reaches a customer.
//!
//! Providers send a [`Notification`](manifold_provider::Notification) through
//! the [`Notifier`](manifold_provider::Notifier) trait and never see a
//! gateway. This crate supplies the notifiers a host configures
//! (`[notifications.sms]`, `[notifications.email]` in the switch's file, as
//! [`manifold_config::NotificationsConfig`]), plus the client a provider
//! microservice uses to delegate dispatch to the switch.
//!
//! Whatever fails, the error never quotes the message body (it holds the
//! OTP) and names the destination only masked; the body is never logged.
//!
//! # Layout
//! - [`sms`]: [`SmsGateway`], SMS as one JSON `POST` to an HTTP gateway (`reqwest`).
//! - [`email`]: [`SmtpMailer`], e-mail over SMTP (`lettre`, rustls).
//! - [`dispatch`]: [`Dispatcher`], routes each message by channel to the
//!   configured sender, or to the development outbox when none is configured.
//! - [`switch_client`]: [`SwitchNotifier`], sends through the switch's
//!   `/notify/sms` and `/notify/email` services.
//! - [`wire`]: the request bodies and paths of those services, shared by the
//!   switch (server) and [`SwitchNotifier`] (client).
//! - [`destination`]: what counts as a phone number or e-mail address.

pub mod destination;
pub mod dispatch;
pub mod email;
pub mod sms;
pub mod switch_client;
pub mod wire;

pub use destination::{check_email_address, check_msisdn};
pub use dispatch::Dispatcher;
pub use email::SmtpMailer;
pub use sms::SmsGateway;
pub use switch_client::SwitchNotifier;
