//! Commissioning: what a technician needs to write an OPC UA device config. `endpoints` lists what the
//! server offers (policies, modes, identity token types); `browse` walks the address space and shows each
//! node's id, browse name, data type and current value. Certificate trust is in [`super::pki`].
//!
//! The `lineside opcua ...` commands are thin wrappers over these functions.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowseResultMask, DataTypeId, DataValue,
    NodeClass, NodeId, ReadValueId, ReferenceDescription, ReferenceTypeId, StatusCode,
    TimestampsToReturn, Variant,
};
use serde::Serialize;

use super::nodeid::{self, Namespace, NodeRef, format_node_id};
use super::security::{Identity, Mode, Policy};
use super::session::{self, ClientSettings, Connected};
use super::values;

/// The server to commission and how to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoint: String,
    pub policy: Policy,
    pub mode: Mode,
    pub identity: Identity,
    pub pki_dir: PathBuf,
    /// Trust the server certificate on first contact (the explicit commissioning opt-in).
    pub auto_trust: bool,
    pub timeout: Duration,
}

impl Target {
    /// Anonymous, no security, default timeout: the usual first look at a server.
    pub fn new(endpoint: impl Into<String>, pki_dir: impl Into<PathBuf>) -> Self {
        Target {
            endpoint: endpoint.into(),
            policy: Policy::None,
            mode: Mode::None,
            identity: Identity::Anonymous,
            pki_dir: pki_dir.into(),
            auto_trust: false,
            timeout: Duration::from_secs(10),
        }
    }

    pub fn settings(&self) -> ClientSettings {
        ClientSettings {
            endpoint: self.endpoint.clone(),
            policy: self.policy,
            mode: self.mode,
            identity: self.identity.clone(),
            base_dir: std::env::current_dir().unwrap_or_default(),
            pki_dir: self.pki_dir.clone(),
            auto_trust: self.auto_trust,
            application_name: "lineside".to_string(),
            application_uri: ClientSettings::default_application_uri(),
            request_timeout: self.timeout,
            keep_alive_interval: Duration::from_secs(10),
            session_timeout: Duration::from_secs(60),
        }
    }

    /// Opens a session with these settings.
    pub async fn connect(&self) -> Result<Connected, CommissionError> {
        let settings = self.settings();
        validate(&settings)?;
        let mut client = session::build_client_async(&settings).await?;
        Ok(session::connect(&mut client, &settings).await?)
    }
}

/// Why a commissioning command (endpoints, browse) failed.
#[derive(Debug, thiserror::Error)]
pub enum CommissionError {
    #[error(transparent)]
    Endpoint(#[from] super::config::EndpointUrlError),
    #[error(transparent)]
    Security(#[from] super::security::SecurityConfigError),
    #[error("identity {key}: {message}")]
    Identity { key: String, message: String },
    #[error(transparent)]
    Setup(#[from] session::ClientSetupError),
    #[error(transparent)]
    Connect(#[from] session::ConnectError),
    #[error(transparent)]
    NodeId(#[from] nodeid::NodeIdError),
    #[error(transparent)]
    Namespace(#[from] nodeid::UnknownNamespace),
    /// `service` names the request (`Browse`, `Read`, `GetEndpoints on <url>`).
    #[error("{service}: timed out")]
    Timeout { service: String },
    #[error("{service}: {status}")]
    Status { service: String, status: StatusCode },
}

impl CommissionError {
    fn timeout(service: impl Into<String>) -> Self {
        CommissionError::Timeout {
            service: service.into(),
        }
    }

    fn status(service: impl Into<String>, status: StatusCode) -> Self {
        CommissionError::Status {
            service: service.into(),
            status,
        }
    }
}

fn validate(s: &ClientSettings) -> Result<(), CommissionError> {
    super::config::check_endpoint(&s.endpoint)?;
    super::security::check_pair(s.policy, s.mode)?;
    if let Some((key, message)) = s.identity.validate().into_iter().next() {
        return Err(CommissionError::Identity { key, message });
    }
    Ok(())
}

/// One endpoint the server offers.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointSummary {
    pub url: String,
    pub security_policy: String,
    pub security_mode: String,
    /// The server's own ranking (higher is more secure).
    pub security_level: u8,
    /// Identity token types accepted: Anonymous, UserName, Certificate, IssuedToken.
    pub user_tokens: Vec<String>,
    /// True when lineside supports this policy.
    pub supported: bool,
    pub server_application_uri: String,
    pub server_certificate_thumbprint: Option<String>,
}

/// Lists the server's endpoints (GetEndpoints needs no session and no security).
pub async fn endpoints(target: &Target) -> Result<Vec<EndpointSummary>, CommissionError> {
    let settings = target.settings();
    super::config::check_endpoint(&settings.endpoint)?;
    let client = session::build_client_async(&settings).await?;
    let eps = tokio::time::timeout(
        target.timeout,
        client.get_server_endpoints_from_url(settings.endpoint.as_str()),
    )
    .await
    .map_err(|_| CommissionError::timeout(format!("GetEndpoints on {}", target.endpoint)))?
    .map_err(|e| {
        CommissionError::status(format!("GetEndpoints on {}", target.endpoint), e.status())
    })?;
    Ok(eps
        .into_iter()
        .map(|e| {
            let policy = opcua::crypto::SecurityPolicy::from_uri(e.security_policy_uri.as_ref());
            let thumbprint = opcua::crypto::X509::from_byte_string(&e.server_certificate)
                .ok()
                .map(|c| c.thumbprint().as_hex_string().to_ascii_lowercase());
            EndpointSummary {
                url: e.endpoint_url.as_ref().to_string(),
                security_policy: policy.to_string(),
                security_mode: format!("{:?}", e.security_mode),
                security_level: e.security_level,
                user_tokens: e
                    .user_identity_tokens
                    .iter()
                    .flatten()
                    .map(|t| format!("{:?}", t.token_type))
                    .collect(),
                supported: Policy::ALL.iter().any(|p| p.to_opcua() == policy),
                server_application_uri: e.server.application_uri.as_ref().to_string(),
                server_certificate_thumbprint: thumbprint,
            }
        })
        .collect())
}

/// One node found by [`browse`].
#[derive(Debug, Clone, Serialize)]
pub struct BrowseEntry {
    /// How deep below the start node (1 = direct child).
    pub depth: u32,
    /// `ns=<index>;...` as the server numbers it today.
    pub node_id: String,
    /// `nsu=<uri>;...`: stable across server restarts; prefer this form in configs.
    pub node_id_nsu: Option<String>,
    pub browse_name: String,
    pub display_name: String,
    pub node_class: String,
    pub data_type: Option<String>,
    pub value: Option<String>,
    /// Status of the value read when not Good.
    pub status: Option<String>,
}

/// Browses the hierarchy below `start` (default: the Objects folder) down to `depth` levels, reading
/// data type and current value of every variable. Stops after `limit` nodes.
pub async fn browse(
    target: &Target,
    start: Option<&str>,
    depth: u32,
    limit: usize,
) -> Result<Vec<BrowseEntry>, CommissionError> {
    let conn = target.connect().await?;
    let result = browse_on(&conn, target.timeout, start, depth, limit).await;
    conn.close(Duration::from_secs(2)).await;
    result
}

/// [`browse`] on an open session.
pub async fn browse_on(
    conn: &Connected,
    timeout: Duration,
    start: Option<&str>,
    depth: u32,
    limit: usize,
) -> Result<Vec<BrowseEntry>, CommissionError> {
    let start_id = match start {
        None => NodeId::from(opcua::types::ObjectId::ObjectsFolder),
        Some(text) => nodeid::parse(text)?.resolve(&conn.namespaces)?,
    };
    let mut out: Vec<BrowseEntry> = Vec::new();
    let mut found: Vec<(u32, ReferenceDescription)> = Vec::new();
    let mut level = vec![start_id];
    for d in 1..=depth.max(1) {
        let mut next = Vec::new();
        for parent in &level {
            for r in browse_children(conn, timeout, parent).await? {
                if found.len() >= limit {
                    break;
                }
                if r.node_id.server_index == 0 {
                    next.push(r.node_id.node_id.clone());
                }
                found.push((d, r));
            }
        }
        if found.len() >= limit {
            break;
        }
        level = next;
    }
    let variables: Vec<NodeId> = found
        .iter()
        .filter(|(_, r)| r.node_class == NodeClass::Variable)
        .map(|(_, r)| r.node_id.node_id.clone())
        .collect();
    let attrs = read_value_and_type(conn, timeout, &variables).await?;
    let type_names =
        data_type_names(conn, timeout, attrs.values().filter_map(|(_, t)| t.clone())).await;
    for (d, r) in found {
        let id = r.node_id.node_id.clone();
        let (value, data_type) = attrs.get(&id).cloned().unwrap_or((None, None));
        let (value_text, status) = match value {
            Some(dv) => describe_value(&dv),
            None => (None, None),
        };
        out.push(BrowseEntry {
            depth: d,
            node_id: format_node_id(&id),
            node_id_nsu: nsu_form(&id, &conn.namespaces),
            browse_name: format!(
                "{}:{}",
                r.browse_name.namespace_index,
                r.browse_name.name.as_ref()
            ),
            display_name: r.display_name.text.as_ref().to_string(),
            node_class: format!("{:?}", r.node_class),
            data_type: data_type.map(|t| {
                type_names
                    .get(&t)
                    .cloned()
                    .unwrap_or_else(|| format_node_id(&t))
            }),
            value: value_text,
            status,
        });
    }
    Ok(out)
}

fn nsu_form(id: &NodeId, namespaces: &[String]) -> Option<String> {
    if id.namespace == 0 {
        return None;
    }
    let uri = namespaces.get(id.namespace as usize)?;
    Some(
        NodeRef {
            namespace: Namespace::Uri(uri.clone()),
            identifier: id.identifier.clone(),
        }
        .to_string(),
    )
}

async fn browse_children(
    conn: &Connected,
    timeout: Duration,
    parent: &NodeId,
) -> Result<Vec<ReferenceDescription>, CommissionError> {
    let desc = BrowseDescription {
        node_id: parent.clone(),
        browse_direction: BrowseDirection::Forward,
        reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
        include_subtypes: true,
        node_class_mask: 0,
        result_mask: BrowseResultMask::All as u32,
    };
    let mut results = tokio::time::timeout(timeout, conn.session.browse(&[desc], 1000, None))
        .await
        .map_err(|_| CommissionError::timeout("Browse"))?
        .map_err(|e| {
            CommissionError::status(format!("Browse {}", format_node_id(parent)), e.status())
        })?;
    let mut refs = Vec::new();
    let mut guard = 0;
    while let Some(result) = results.pop() {
        if result.status_code.is_bad() {
            return Err(CommissionError::status(
                format!("Browse {}", format_node_id(parent)),
                result.status_code,
            ));
        }
        refs.extend(result.references.into_iter().flatten());
        if result.continuation_point.is_null_or_empty() || guard > 1000 {
            break;
        }
        guard += 1;
        results = tokio::time::timeout(
            timeout,
            conn.session
                .browse_next(false, &[result.continuation_point]),
        )
        .await
        .map_err(|_| CommissionError::timeout("BrowseNext"))?
        .map_err(|e| CommissionError::status("BrowseNext", e.status()))?;
    }
    Ok(refs)
}

type Attrs = HashMap<NodeId, (Option<DataValue>, Option<NodeId>)>;

async fn read_value_and_type(
    conn: &Connected,
    timeout: Duration,
    ids: &[NodeId],
) -> Result<Attrs, CommissionError> {
    let mut out = HashMap::new();
    for part in ids.chunks(250) {
        let mut reads = Vec::with_capacity(part.len() * 2);
        for id in part {
            for attr in [AttributeId::Value, AttributeId::DataType] {
                reads.push(ReadValueId {
                    node_id: id.clone(),
                    attribute_id: attr as u32,
                    ..Default::default()
                });
            }
        }
        let values = tokio::time::timeout(
            timeout,
            conn.session.read(&reads, TimestampsToReturn::Source, 0.0),
        )
        .await
        .map_err(|_| CommissionError::timeout("Read"))?
        .map_err(|e| CommissionError::status("Read", e.status()))?;
        for (k, id) in part.iter().enumerate() {
            let value = values.get(2 * k).cloned();
            let dtype = values.get(2 * k + 1).and_then(|dv| match &dv.value {
                Some(Variant::NodeId(n)) => Some((**n).clone()),
                _ => None,
            });
            out.insert(id.clone(), (value, dtype));
        }
    }
    Ok(out)
}

/// Names of data types: standard ones from the built-in table, others by reading their BrowseName.
async fn data_type_names(
    conn: &Connected,
    timeout: Duration,
    ids: impl Iterator<Item = NodeId>,
) -> HashMap<NodeId, String> {
    let mut names = HashMap::new();
    let mut unknown = Vec::new();
    for id in ids {
        if names.contains_key(&id) || unknown.contains(&id) {
            continue;
        }
        match (&id.identifier, id.namespace) {
            (opcua::types::Identifier::Numeric(n), 0) => match DataTypeId::try_from(*n) {
                Ok(t) => {
                    names.insert(id.clone(), format!("{t:?}"));
                }
                Err(_) => unknown.push(id.clone()),
            },
            _ => unknown.push(id.clone()),
        }
    }
    for part in unknown.chunks(500) {
        let reads: Vec<ReadValueId> = part
            .iter()
            .map(|id| ReadValueId {
                node_id: id.clone(),
                attribute_id: AttributeId::BrowseName as u32,
                ..Default::default()
            })
            .collect();
        if let Ok(Ok(values)) = tokio::time::timeout(
            timeout,
            conn.session.read(&reads, TimestampsToReturn::Neither, 0.0),
        )
        .await
        {
            for (id, dv) in part.iter().zip(values) {
                if let Some(Variant::QualifiedName(q)) = dv.value {
                    names.insert(id.clone(), q.name.as_ref().to_string());
                }
            }
        }
    }
    names
}

/// A value as text for the browse listing, and the status when it is not Good.
fn describe_value(dv: &DataValue) -> (Option<String>, Option<String>) {
    let status = dv.status.unwrap_or(StatusCode::Good);
    let status_text = (!status.is_good()).then(|| status.to_string());
    if status.is_bad() {
        return (None, status_text);
    }
    let text = match dv.value.as_ref() {
        None | Some(Variant::Empty) => None,
        Some(Variant::Array(a)) => {
            let shown: Vec<String> = a.values.iter().take(10).map(scalar_text).collect();
            let more = if a.values.len() > 10 {
                format!(", ... ({} elements)", a.values.len())
            } else {
                String::new()
            };
            Some(format!("[{}{more}]", shown.join(", ")))
        }
        Some(v) => Some(scalar_text(v)),
    };
    (text, status_text)
}

fn scalar_text(v: &Variant) -> String {
    match values::scalar(v) {
        Ok(crate::reading::Value::F64(x)) => x.to_string(),
        Ok(crate::reading::Value::I64(x)) => x.to_string(),
        Ok(crate::reading::Value::U64(x)) => x.to_string(),
        Ok(crate::reading::Value::Bool(b)) => b.to_string(),
        Ok(crate::reading::Value::Str(s)) => format!("{s:?}"),
        Err(_) => format!("<{}>", values::type_name(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_described_for_people() {
        assert_eq!(
            describe_value(&DataValue::new_now(1.5f64)),
            (Some("1.5".into()), None)
        );
        assert_eq!(
            describe_value(&DataValue::new_now("x")),
            (Some("\"x\"".into()), None)
        );
        let mut dv = DataValue::new_now(1i32);
        dv.status = Some(StatusCode::BadNotReadable);
        assert_eq!(describe_value(&dv), (None, Some("BadNotReadable".into())));
        let ns = vec![
            "http://opcfoundation.org/UA/".to_string(),
            "urn:cnc".to_string(),
        ];
        assert_eq!(
            nsu_form(&NodeId::new(1, "Bore"), &ns).unwrap(),
            "nsu=urn:cnc;s=Bore"
        );
        assert_eq!(nsu_form(&NodeId::new(0, 85u32), &ns), None);
    }
}
