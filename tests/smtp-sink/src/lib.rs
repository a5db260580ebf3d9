//! An SMTP server for tests: it listens on `127.0.0.1`, receives real SMTP,
//! and parses every message on arrival.
//!
//! Tests of e-mail delivery must see a message travel over SMTP and come out
//! the other side as a parseable message, not just check that a client
//! library was called. [`SmtpSink::start`] binds an ephemeral port and serves
//! each connection on a tokio task. The SMTP dialogue itself (EHLO/HELO, AUTH
//! PLAIN/LOGIN, MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT) is the
//! state machine of the `mailin` crate; this crate only moves lines between
//! the socket and that state machine, and hands each finished message to
//! `mail-parser`, a real MIME parser, before recording it as a
//! [`ReceivedMail`].
//!
//! The sink never offers STARTTLS: a client that requires TLS must fail
//! against it, which is itself worth testing. [`SinkOptions`] can demand
//! authentication (over the plain connection, acceptable on loopback only) and
//! refuse chosen recipients, to exercise a sender's error paths.
//!
//! This is test code, not a mail server: no TLS, no relaying, everything kept
//! in memory, and stopping the sink (dropping it) drops open connections.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mail_parser::MessageParser;
use mailin::{response, Action, AuthMechanism, Handler, Response, SessionBuilder};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The longest command or data line accepted; SMTP allows 1000 octets, and a
/// longer line means a broken client, whose connection is closed.
const MAX_LINE: u64 = 64 * 1024;
/// The largest message accepted, so a runaway client cannot exhaust memory.
const MAX_MESSAGE: usize = 10 * 1024 * 1024;

/// One message as it arrived: the SMTP envelope and the parsed content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// `MAIL FROM:` of the envelope.
    pub envelope_from: String,
    /// Every accepted `RCPT TO:` of the envelope.
    pub envelope_to: Vec<String>,
    /// The address in the `From:` header.
    pub from: Option<String>,
    /// The addresses in the `To:` header.
    pub to: Vec<String>,
    /// The decoded `Subject:` header.
    pub subject: Option<String>,
    /// The first text body part, decoded (quoted-printable, base64, charset).
    pub text_body: Option<String>,
    /// The user name the client authenticated as, if it did.
    pub authenticated_as: Option<String>,
    /// The message exactly as received after dot-unstuffing.
    pub raw: Vec<u8>,
}

/// How a sink behaves; the default accepts any message without authentication.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// When set, clients must `AUTH` (PLAIN or LOGIN) with this user name and
    /// password before `MAIL`; other credentials are refused with 535.
    pub credentials: Option<(String, String)>,
    /// Recipients refused at `RCPT TO:` with 550, as a mailbox that does not exist.
    pub rejected_recipients: Vec<String>,
}

/// A running sink. Dropping it stops the server and closes its connections.
pub struct SmtpSink {
    addr: SocketAddr,
    received: watch::Receiver<Vec<ReceivedMail>>,
    accept: JoinHandle<()>,
}

impl SmtpSink {
    /// Starts a sink that accepts every message, on `127.0.0.1` and an
    /// ephemeral port.
    pub async fn start() -> io::Result<SmtpSink> {
        SmtpSink::start_with(SinkOptions::default()).await
    }

    pub async fn start_with(options: SinkOptions) -> io::Result<SmtpSink> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (sender, received) = watch::channel(Vec::new());
        let mut session = SessionBuilder::new("manifold-smtp-sink");
        if options.credentials.is_some() {
            session
                .enable_auth(AuthMechanism::Plain)
                .enable_auth(AuthMechanism::Login)
                // There is no TLS here; plain-text AUTH is tolerable only
                // because the sink listens on loopback.
                .insecure_enable_plaintext_auth();
        }
        let shared = Arc::new(Shared {
            options,
            session,
            received: sender,
        });
        let accept = tokio::spawn(accept_loop(listener, shared));
        Ok(SmtpSink {
            addr,
            received,
            accept,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every message received so far, oldest first.
    pub fn received(&self) -> Vec<ReceivedMail> {
        self.received.borrow().clone()
    }

    /// Waits until message number `index` (0-based, in order of arrival) has
    /// arrived and returns it. Wrap it in a timeout: it waits as long as it takes.
    pub async fn wait_for_message(&self, index: usize) -> ReceivedMail {
        let mut received = self.received.clone();
        let mails = received
            .wait_for(|mails| mails.len() > index)
            .await
            // The sender lives in the accept task, which only ends when the
            // sink is dropped, and `self` is borrowed here.
            .expect("the sink is running while it is borrowed");
        mails[index].clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        // The accept task owns the connection tasks (a JoinSet), so aborting
        // it ends them too.
        self.accept.abort();
    }
}

struct Shared {
    options: SinkOptions,
    session: SessionBuilder,
    received: watch::Sender<Vec<ReceivedMail>>,
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(stream, peer.ip(), shared.clone()));
                }
                // Transient (out of descriptors): back off instead of spinning.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Feeds the client's lines to the `mailin` state machine and writes its
/// replies back, until the client quits or misbehaves.
async fn serve_connection(stream: TcpStream, peer: IpAddr, shared: Arc<Shared>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut session = shared.session.build(peer, Session::new(shared.clone()));
    reply(&mut write, &session.greeting()).await?;
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 || !line.ends_with(b"\n") {
            // End of stream, or a line longer than MAX_LINE.
            return Ok(());
        }
        let response = session.process(&line);
        match response.action {
            Action::Reply => reply(&mut write, &response).await?,
            Action::Close => {
                reply(&mut write, &response).await?;
                return Ok(());
            }
            // Never offered, so never reached; close rather than pretend.
            Action::UpgradeTls => return Ok(()),
            Action::NoReply => {}
        }
    }
}

async fn reply(write: &mut (impl AsyncWriteExt + Unpin), response: &Response) -> io::Result<()> {
    let bytes = response.buffer()?;
    write.write_all(&bytes).await?;
    write.flush().await
}

/// The `mailin` handler of one connection: collects the envelope and data of
/// the current message.
struct Session {
    shared: Arc<Shared>,
    envelope_from: String,
    envelope_to: Vec<String>,
    data: Vec<u8>,
    too_large: bool,
    authenticated_as: Option<String>,
}

impl Session {
    fn new(shared: Arc<Shared>) -> Self {
        Session {
            shared,
            envelope_from: String::new(),
            envelope_to: Vec::new(),
            data: Vec::new(),
            too_large: false,
            authenticated_as: None,
        }
    }

    fn check_credentials(&mut self, username: &str, password: &str) -> Response {
        match &self.shared.options.credentials {
            Some((user, pass)) if user == username && pass == password => {
                self.authenticated_as = Some(username.to_owned());
                response::AUTH_OK
            }
            _ => response::INVALID_CREDENTIALS,
        }
    }
}

impl Handler for Session {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        self.envelope_from = from.to_owned();
        self.envelope_to.clear();
        response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        if self
            .shared
            .options
            .rejected_recipients
            .iter()
            .any(|rejected| rejected.eq_ignore_ascii_case(to))
        {
            return response::NO_MAILBOX;
        }
        self.envelope_to.push(to.to_owned());
        response::OK
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.envelope_from = from.to_owned();
        self.envelope_to = to.to_vec();
        self.data.clear();
        self.too_large = false;
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.data.len() + buf.len() > MAX_MESSAGE {
            self.too_large = true;
        } else {
            self.data.extend_from_slice(buf);
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if self.too_large {
            return response::NO_STORAGE;
        }
        let raw = std::mem::take(&mut self.data);
        let Some(mail) = parse(
            &raw,
            self.envelope_from.clone(),
            self.envelope_to.clone(),
            self.authenticated_as.clone(),
        ) else {
            return response::TRANSACTION_FAILED;
        };
        self.shared.received.send_modify(|mails| mails.push(mail));
        response::OK
    }

    fn auth_plain(
        &mut self,
        _authorization_id: &str,
        authentication_id: &str,
        password: &str,
    ) -> Response {
        self.check_credentials(authentication_id, password)
    }

    fn auth_login(&mut self, username: &str, password: &str) -> Response {
        self.check_credentials(username, password)
    }
}

/// Parses a message as it came out of DATA; `None` if it is not a message.
fn parse(
    raw: &[u8],
    envelope_from: String,
    envelope_to: Vec<String>,
    authenticated_as: Option<String>,
) -> Option<ReceivedMail> {
    let message = MessageParser::default().parse(raw)?;
    let addresses = |address: Option<&mail_parser::Address>| -> Vec<String> {
        address
            .map(|address| {
                address
                    .iter()
                    .filter_map(|addr| addr.address().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(ReceivedMail {
        envelope_from,
        envelope_to,
        from: addresses(message.from()).into_iter().next(),
        to: addresses(message.to()),
        subject: message.subject().map(str::to_owned),
        text_body: message.body_text(0).map(|text| text.into_owned()),
        authenticated_as,
        raw: raw.to_vec(),
    })
}
