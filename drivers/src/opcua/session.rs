//! One connection to a server: client (certificate store), endpoint selection, session, and the task that
//! drives the library's event loop.
//!
//! Reconnects are ours, not the library's: the library is told never to retry (`session_retry_limit(0)`)
//! and never to recreate subscriptions. When the link drops, the whole session is torn down and the
//! caller builds a new one, re-reads the namespace array and re-creates every monitored item. That avoids
//! the failure modes seen with in-library recovery (subscriptions silently not restored, items reading
//! "unknown" after a server restart because namespace indexes or node ids changed) at the cost of not
//! getting the values queued on the server during a short outage (every item re-sends its current value).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use opcua::client::{Client, ClientBuilder, Session, SessionPollResult, SubscriptionActivity};
use opcua::types::{
    AttributeId, EndpointDescription, MessageSecurityMode, ReadValueId, StatusCode,
    TimestampsToReturn, UserTokenType, VariableId, Variant,
};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::pki;
use super::security::{Identity, Mode, Policy};

/// Everything needed to open a session, independent of what is done with it.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub endpoint: String,
    pub policy: Policy,
    pub mode: Mode,
    pub identity: Identity,
    /// Base for relative identity paths (the agent's state dir).
    pub base_dir: PathBuf,
    pub pki_dir: PathBuf,
    pub auto_trust: bool,
    pub application_name: String,
    pub application_uri: String,
    pub request_timeout: Duration,
    pub keep_alive_interval: Duration,
    pub session_timeout: Duration,
}

impl ClientSettings {
    pub fn default_application_uri() -> String {
        let host = opcua::crypto::X509Data::computer_hostnames()
            .into_iter()
            .next()
            .unwrap_or_else(|| "localhost".to_string());
        format!("urn:lineside:{host}")
    }
}

/// Why a connect attempt failed, with a message an operator can act on.
#[derive(Debug, Clone)]
pub struct ConnectError {
    pub status: Option<StatusCode>,
    pub message: String,
    /// A timeout rather than a refusal (counted separately).
    pub timeout: bool,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnectError {}

impl ConnectError {
    fn new(message: impl std::fmt::Display) -> Self {
        ConnectError {
            status: None,
            message: message.to_string(),
            timeout: false,
        }
    }

    fn status(status: StatusCode, what: &str, settings: &ClientSettings) -> Self {
        ConnectError {
            status: Some(status),
            message: explain(status, what, settings),
            timeout: status == StatusCode::BadTimeout,
        }
    }

    fn timeout(what: &str) -> Self {
        ConnectError {
            status: Some(StatusCode::BadTimeout),
            message: format!("{what}: timed out"),
            timeout: true,
        }
    }
}

/// Turns the status codes operators actually meet into instructions.
fn explain(status: StatusCode, what: &str, s: &ClientSettings) -> String {
    let sub = status.sub_code();
    use opcua::types::SubStatusCode as S;
    let hint = match sub {
        S::BadCertificateUntrusted | S::BadSecurityChecksFailed if s.policy != Policy::None => format!(
            "the server certificate is not trusted; it was saved in {}; check its thumbprint with the \
             machine builder, then run `lineside opcua trust --pki-dir {} <thumbprint>`",
            s.pki_dir.join(pki::REJECTED).display(),
            s.pki_dir.display()
        ),
        S::BadCertificateHostNameInvalid => {
            "the server certificate does not name the host in the endpoint URL; use the host name the \
             certificate was issued for"
                .to_string()
        }
        S::BadCertificateUriInvalid => "the server certificate's application URI does not match the server".into(),
        S::BadCertificateTimeInvalid => "the server certificate has expired or is not yet valid".into(),
        S::BadIdentityTokenRejected | S::BadIdentityTokenInvalid | S::BadUserAccessDenied => {
            format!("the server refused the identity ({})", s.identity.describe())
        }
        S::BadSecurityPolicyRejected => "the server refused the security policy".into(),
        S::BadCommunicationError | S::BadConnectionRejected | S::BadNotConnected | S::BadConnectionClosed => {
            format!("cannot reach {}", s.endpoint)
        }
        _ => String::new(),
    };
    if hint.is_empty() {
        format!("{what}: {status}")
    } else {
        format!("{what}: {status}: {hint}")
    }
}

/// Why the client could not be set up (before any network traffic).
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("cannot create the client certificate in {}: {reason}", pki_dir.display())]
    Certificate { pki_dir: PathBuf, reason: String },
    #[error("invalid OPC UA client settings: {}", .0.join("; "))]
    Settings(Vec<String>),
    #[error("client set-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The server offers no endpoint lineside may use with the configured security and identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointChoiceError {
    #[error(
        "the server has no endpoint {url} with {}/{}; it offers {}",
        policy.name(),
        mode.name(),
        list_or_none(offered)
    )]
    NoMatch {
        url: String,
        policy: Policy,
        mode: Mode,
        offered: Vec<String>,
    },
    #[error(
        "the endpoint {}/{} does not accept {token:?} identities; it accepts {}",
        policy.name(),
        mode.name(),
        list_or_none(offered)
    )]
    TokenRefused {
        policy: Policy,
        mode: Mode,
        token: UserTokenType,
        offered: Vec<String>,
    },
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// The server's namespace array could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceArrayError {
    #[error("reading the namespace array: timed out")]
    Timeout,
    #[error("reading the namespace array: {0}")]
    Status(StatusCode),
    #[error("the server's namespace array is not an array of strings: {0}")]
    NotStrings(String),
}

/// Builds the client: application certificate (created in the PKI dir on first use) and trust policy.
/// Blocking (file I/O, RSA key generation on first use): call it from `spawn_blocking`.
pub fn build_client(s: &ClientSettings) -> Result<Client, ClientSetupError> {
    pki::ensure_layout(&s.pki_dir)?;
    ensure_own_certificate(s)?;
    let session_timeout_ms = u32::try_from(s.session_timeout.as_millis()).unwrap_or(u32::MAX);
    ClientBuilder::new()
        .application_name(s.application_name.clone())
        .application_uri(s.application_uri.clone())
        .product_uri("urn:lineside")
        .pki_dir(s.pki_dir.clone())
        .create_sample_keypair(true)
        .trust_server_certs(s.auto_trust)
        .verify_server_certs(true)
        // Recovery is ours (see the module docs).
        .session_retry_limit(0)
        .recreate_subscriptions(false)
        .keep_alive_interval(s.keep_alive_interval)
        .max_failed_keep_alive_count(3)
        .request_timeout(s.request_timeout)
        .publish_timeout(s.request_timeout.max(Duration::from_secs(10)) * 3)
        .session_timeout(session_timeout_ms)
        .session_name(format!("lineside {}", s.application_uri))
        // The library's decoding defaults (1,000 array elements, 320 KiB messages) break on one publish
        // response for 1,000 items or a browse of a big folder; these match what servers allow.
        .max_array_length(MAX_ARRAY_LENGTH)
        .max_message_size(16 * 1024 * 1024)
        .max_chunk_count(512)
        .max_string_length(1024 * 1024)
        .max_byte_string_length(1024 * 1024)
        .client()
        .map_err(ClientSetupError::Settings)
}

/// Largest array the client decodes (notifications per publish response, results per read, array values).
pub const MAX_ARRAY_LENGTH: usize = 100_000;

/// How long the agent's own certificate is valid. The library's default is one year, after which every
/// secured connection would fail on a gateway nobody touches; ten years matches the machines' lifetime.
const OWN_CERT_DAYS: u32 = 3650;

/// Creates the application instance certificate (own/cert.der, private/private.pem) on first use, with
/// the application URI and this host's names and addresses. An existing one is never replaced: servers
/// have it in their trust lists.
///
/// Devices sharing a PKI directory start together: creation is serialised in the process (the others then
/// find the certificate), and a certificate that appears while this one was being made (another process)
/// is taken as it is.
fn ensure_own_certificate(s: &ClientSettings) -> Result<(), ClientSetupError> {
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = CREATING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let store = opcua::crypto::CertificateStore::new(&s.pki_dir);
    let (cert_path, key_path) = (store.own_certificate_path(), store.own_private_key_path());
    if cert_path.exists() && key_path.exists() {
        return Ok(pki::check_readable(&s.pki_dir, &[&cert_path, &key_path])?);
    }
    let description = opcua::types::ApplicationDescription {
        application_uri: s.application_uri.as_str().into(),
        application_name: opcua::types::LocalizedText::new("", &s.application_name),
        application_type: opcua::types::ApplicationType::Client,
        product_uri: "urn:lineside".into(),
        ..Default::default()
    };
    let mut data = opcua::crypto::X509Data::from((description, None));
    data.certificate_duration_days = OWN_CERT_DAYS;
    let created = opcua::crypto::CertificateStore::create_certificate_and_key(
        &data, false, &cert_path, &key_path,
    );
    let cert = match created {
        Ok((cert, _)) => cert,
        // Made by another process in the meantime: use it.
        Err(_) if cert_path.exists() && key_path.exists() => {
            return Ok(pki::check_readable(&s.pki_dir, &[&cert_path, &key_path])?);
        }
        Err(e) => {
            pki::check_readable(&s.pki_dir, &[&cert_path, &key_path])?;
            return Err(ClientSetupError::Certificate {
                pki_dir: s.pki_dir.clone(),
                reason: e.to_string(),
            });
        }
    };
    tracing::info!(
        path = %cert_path.display(),
        thumbprint = %cert.thumbprint().as_hex_string().to_ascii_lowercase(),
        application_uri = %s.application_uri,
        "opcua: created the client certificate; servers with security on must trust it"
    );
    Ok(())
}

/// Builds the client off the async runtime.
pub async fn build_client_async(s: &ClientSettings) -> Result<Client, ClientSetupError> {
    let settings = s.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| build_client(&settings))).await?
}

/// What the session's driver task reports.
#[derive(Debug)]
pub enum LinkEvent {
    /// The connection is gone (the session is dead; build a new one).
    Lost(String),
}

/// A live session. Dropping it stops the library's event loop (and so the connection).
pub struct Connected {
    pub session: Arc<Session>,
    pub events: mpsc::UnboundedReceiver<LinkEvent>,
    /// The server's namespace array at connect time.
    pub namespaces: Vec<String>,
    pub endpoint: EndpointDescription,
    activity: Arc<Activity>,
    pump: tokio::task::JoinHandle<()>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

/// Time of the last successful publish response, for the subscription watchdog.
struct Activity {
    base: Instant,
    last_publish_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_publish_ms.store(ms, Ordering::Relaxed);
    }
}

impl Connected {
    /// Time since the server last answered a publish request (or since connect).
    pub fn since_last_publish(&self) -> Duration {
        let last = Duration::from_millis(self.activity.last_publish_ms.load(Ordering::Relaxed));
        self.activity.base.elapsed().saturating_sub(last)
    }

    /// Marks the subscription as alive (called when notifications arrive).
    pub fn touch(&self) {
        self.activity.touch();
    }

    /// Closes the session politely (deletes its subscriptions on the server), bounded in time.
    pub async fn close(self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.session.disconnect()).await;
    }

    /// Re-reads the namespace array (e.g. to resolve a `nsu=` that was missing at connect).
    pub async fn refresh_namespaces(
        &mut self,
        timeout: Duration,
    ) -> Result<(), NamespaceArrayError> {
        self.namespaces = read_namespaces(&self.session, timeout).await?;
        Ok(())
    }
}

/// Picks the server endpoint that matches policy, mode and the identity's token type.
pub fn select_endpoint(
    endpoints: &[EndpointDescription],
    url: &str,
    policy: Policy,
    mode: Mode,
    token: UserTokenType,
) -> Result<EndpointDescription, EndpointChoiceError> {
    let wanted_policy = policy.to_opcua();
    let wanted_mode: MessageSecurityMode = mode.to_opcua();
    let chosen = Client::find_matching_endpoint(endpoints, url, wanted_policy, wanted_mode)
        .ok_or_else(|| {
            let offered: Vec<String> = endpoints
                .iter()
                .map(|e| {
                    format!(
                        "{}/{:?} at {}",
                        opcua::crypto::SecurityPolicy::from_uri(e.security_policy_uri.as_ref()),
                        e.security_mode,
                        e.endpoint_url.as_ref()
                    )
                })
                .collect();
            EndpointChoiceError::NoMatch {
                url: url.to_string(),
                policy,
                mode,
                offered,
            }
        })?;
    // Connect where we were told to, not where the server says it is: behind NAT, port forwarding or
    // a relay the advertised host and port are often unreachable (the library only swaps the host).
    let mut chosen = chosen;
    chosen.endpoint_url = url.into();
    let tokens = chosen.user_identity_tokens.as_deref().unwrap_or(&[]);
    let supported = tokens.iter().any(|t| t.token_type == token)
        || (token == UserTokenType::Anonymous && chosen.user_identity_tokens.is_none());
    if !supported {
        let offered: Vec<String> = tokens
            .iter()
            .map(|t| format!("{:?}", t.token_type))
            .collect();
        return Err(EndpointChoiceError::TokenRefused {
            policy,
            mode,
            token,
            offered,
        });
    }
    Ok(chosen)
}

/// Opens a session: discovery (GetEndpoints), endpoint selection, secure channel, session activation,
/// then the namespace array. Every step is bounded by the request timeout.
pub async fn connect(client: &mut Client, s: &ClientSettings) -> Result<Connected, ConnectError> {
    let identity = s.identity.load(&s.base_dir).map_err(ConnectError::new)?;
    let step = s.request_timeout;
    let endpoints = tokio::time::timeout(
        step,
        client.get_server_endpoints_from_url(s.endpoint.as_str()),
    )
    .await
    .map_err(|_| ConnectError::timeout(&format!("GetEndpoints on {}", s.endpoint)))?
    .map_err(|e| ConnectError::status(e.status(), &format!("GetEndpoints on {}", s.endpoint), s))?;
    let endpoint = select_endpoint(
        &endpoints,
        &s.endpoint,
        s.policy,
        s.mode,
        s.identity.token_type(),
    )
    .map_err(ConnectError::new)?;
    let (session, event_loop) = client
        .connect_to_endpoint_directly(endpoint.clone(), identity)
        .map_err(|e| ConnectError::status(e.status(), "session set-up", s))?;

    let activity = Arc::new(Activity {
        base: Instant::now(),
        last_publish_ms: AtomicU64::new(0),
    });
    let (tx, events) = mpsc::unbounded_channel();
    let (up_tx, up_rx) = tokio::sync::oneshot::channel::<Result<(), StatusCode>>();
    let pump_activity = activity.clone();
    let pump = tokio::spawn(async move {
        let stream = event_loop.enter();
        futures_util::pin_mut!(stream);
        let mut up_tx = Some(up_tx);
        while let Some(event) = stream.next().await {
            match event {
                Ok(SessionPollResult::Reconnected(_)) => {
                    pump_activity.touch();
                    if let Some(up) = up_tx.take() {
                        let _ = up.send(Ok(()));
                    }
                }
                Ok(SessionPollResult::ConnectionLost(code)) => {
                    let _ = tx.send(LinkEvent::Lost(format!("connection lost: {code}")));
                    // Stop polling: the library would otherwise try to reconnect behind our back.
                    return;
                }
                Ok(SessionPollResult::Subscription(SubscriptionActivity::Publish)) => {
                    pump_activity.touch()
                }
                Ok(SessionPollResult::Subscription(SubscriptionActivity::FatalFailure(code))) => {
                    tracing::debug!(%code, "opcua: fatal subscription failure; the session will close");
                }
                Ok(_) => {}
                Err(code) => {
                    match up_tx.take() {
                        Some(up) => {
                            let _ = up.send(Err(code));
                        }
                        None => {
                            let _ = tx.send(LinkEvent::Lost(format!("session ended: {code}")));
                        }
                    }
                    return;
                }
            }
        }
        let _ = tx.send(LinkEvent::Lost("session closed".to_string()));
    }
    // The library logs from inside this task: keep the device's span on it.
    .in_current_span());

    // Secure channel + CreateSession + ActivateSession, each a request: allow a few request timeouts.
    let activation = tokio::time::timeout(step * 3, up_rx).await;
    let fail = |e: ConnectError, pump: &tokio::task::JoinHandle<()>| {
        pump.abort();
        e
    };
    match activation {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(code))) => {
            let mut e = ConnectError::status(code, "session activation", s);
            if is_certificate_refusal(code)
                && s.policy != Policy::None
                && !server_cert_rejected(&endpoint, s)
            {
                // Our own validation passed (the server's certificate is not in rejected/): it is the
                // server that refuses lineside's certificate.
                e.message = format!(
                    "session activation: {code}: the server does not trust lineside's certificate; add {} \
                     to the server's trusted certificates (or accept it on the machine's HMI)",
                    s.pki_dir.join("own").join("cert.der").display()
                );
            }
            return Err(fail(e, &pump));
        }
        Ok(Err(_)) => {
            return Err(fail(
                ConnectError::new("session activation: the session ended before it was activated"),
                &pump,
            ));
        }
        Err(_) => return Err(fail(ConnectError::timeout("session activation"), &pump)),
    }
    let mut connected = Connected {
        session,
        events,
        namespaces: Vec::new(),
        endpoint,
        activity,
        pump,
    };
    connected.namespaces = read_namespaces(&connected.session, step)
        .await
        .map_err(ConnectError::new)?;
    Ok(connected)
}

fn is_certificate_refusal(code: StatusCode) -> bool {
    use opcua::types::SubStatusCode as S;
    matches!(
        code.sub_code(),
        S::BadCertificateUntrusted | S::BadSecurityChecksFailed
    )
}

/// True when the endpoint's server certificate sits in our rejected/ directory.
fn server_cert_rejected(endpoint: &EndpointDescription, s: &ClientSettings) -> bool {
    let Ok(cert) = opcua::crypto::X509::from_byte_string(&endpoint.server_certificate) else {
        return false;
    };
    let thumbprint = cert.thumbprint().as_hex_string().to_ascii_lowercase();
    pki::list(&s.pki_dir)
        .map(|certs| {
            certs
                .iter()
                .any(|c| c.state == pki::CertState::Rejected && c.thumbprint == thumbprint)
        })
        .unwrap_or(false)
}

/// Reads `Server.NamespaceArray` (index = position).
pub async fn read_namespaces(
    session: &Session,
    timeout: Duration,
) -> Result<Vec<String>, NamespaceArrayError> {
    let read = ReadValueId {
        node_id: VariableId::Server_NamespaceArray.into(),
        attribute_id: AttributeId::Value as u32,
        ..Default::default()
    };
    let values = tokio::time::timeout(
        timeout,
        session.read(&[read], TimestampsToReturn::Neither, 0.0),
    )
    .await
    .map_err(|_| NamespaceArrayError::Timeout)?
    .map_err(|e| NamespaceArrayError::Status(e.status()))?;
    match values.into_iter().next().and_then(|dv| dv.value) {
        Some(Variant::Array(array)) => Ok(array
            .values
            .into_iter()
            .map(|v| match v {
                Variant::String(s) => s.as_ref().to_string(),
                _ => String::new(),
            })
            .collect()),
        other => Err(NamespaceArrayError::NotStrings(format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua::types::{ApplicationDescription, UserTokenPolicy};

    fn ep(
        policy: &str,
        mode: MessageSecurityMode,
        tokens: &[UserTokenType],
    ) -> EndpointDescription {
        EndpointDescription {
            endpoint_url: "opc.tcp://server-host:4840/ua".into(),
            security_policy_uri: policy.into(),
            security_mode: mode,
            server: ApplicationDescription::default(),
            user_identity_tokens: Some(
                tokens
                    .iter()
                    .map(|t| UserTokenPolicy {
                        token_type: *t,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn endpoint_selection_explains_what_the_server_offers() {
        let none = "http://opcfoundation.org/UA/SecurityPolicy#None";
        let b256 = "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256";
        let eps = vec![
            ep(none, MessageSecurityMode::None, &[UserTokenType::Anonymous]),
            ep(
                b256,
                MessageSecurityMode::SignAndEncrypt,
                &[UserTokenType::UserName],
            ),
        ];
        let url = "opc.tcp://10.1.2.3:4840/ua";
        let chosen = select_endpoint(
            &eps,
            url,
            Policy::Basic256Sha256,
            Mode::SignAndEncrypt,
            UserTokenType::UserName,
        )
        .unwrap();
        assert_eq!(
            chosen.endpoint_url.as_ref(),
            "opc.tcp://10.1.2.3:4840/ua",
            "the host we were given is kept"
        );

        let err = select_endpoint(
            &eps,
            url,
            Policy::Aes256Sha256RsaPss,
            Mode::Sign,
            UserTokenType::Anonymous,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("Basic256Sha256") && err.contains("offers"),
            "{err}"
        );
        let err = select_endpoint(&eps, url, Policy::None, Mode::None, UserTokenType::UserName)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not accept"), "{err}");
    }
}
