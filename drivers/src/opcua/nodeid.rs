//! Node ids as written in the config: `ns=2;s=Line1.Bore`, `i=2258`, `ns=3;g=<uuid>`, `ns=1;b=<base64>`,
//! and `nsu=<namespace URI>;s=...`. A namespace URI is resolved to the server's current index at every
//! connect, because the index of a URI can change when the server restarts or its address space changes.

use std::fmt;
use std::str::FromStr;

use opcua::types::{ByteString, Guid, Identifier, NodeId, UAString};

/// Where a node id's namespace comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    Index(u16),
    Uri(String),
}

/// A node id parsed from the config; [`NodeRef::resolve`] turns it into a wire `NodeId`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    pub namespace: Namespace,
    pub identifier: Identifier,
}

impl NodeRef {
    /// The wire node id, with a namespace URI looked up in the server's namespace array (index = position).
    pub fn resolve(&self, namespaces: &[String]) -> Result<NodeId, UnknownNamespace> {
        let ns = match &self.namespace {
            Namespace::Index(i) => *i,
            Namespace::Uri(uri) => namespaces
                .iter()
                .position(|n| n == uri)
                .and_then(|i| u16::try_from(i).ok())
                .ok_or_else(|| UnknownNamespace(uri.clone()))?,
        };
        Ok(NodeId {
            namespace: ns,
            identifier: self.identifier.clone(),
        })
    }

    /// True when the node id needs the server's namespace array to resolve.
    pub fn needs_namespace_array(&self) -> bool {
        matches!(self.namespace, Namespace::Uri(_))
    }
}

impl From<NodeId> for NodeRef {
    fn from(id: NodeId) -> Self {
        NodeRef {
            namespace: Namespace::Index(id.namespace),
            identifier: id.identifier,
        }
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Namespace::Index(0) => {}
            Namespace::Index(i) => write!(f, "ns={i};")?,
            Namespace::Uri(u) => write!(f, "nsu={u};")?,
        }
        write_identifier(f, &self.identifier)
    }
}

/// Writes an identifier in the form this module parses (`g=` without braces, `b=` base64).
pub fn write_identifier(f: &mut impl fmt::Write, id: &Identifier) -> fmt::Result {
    match id {
        Identifier::Numeric(n) => write!(f, "i={n}"),
        Identifier::String(s) => write!(f, "s={}", s.as_ref()),
        Identifier::Guid(g) => write!(f, "g={g}"),
        Identifier::ByteString(b) => write!(f, "b={}", b.as_base64()),
    }
}

/// Formats a wire node id as `ns=<i>;...` (the browse output and log lines use this).
pub fn format_node_id(id: &NodeId) -> String {
    let mut out = String::new();
    if id.namespace != 0 {
        out.push_str(&format!("ns={};", id.namespace));
    }
    // Writing into a String cannot fail.
    let _ = write_identifier(&mut out, &id.identifier);
    out
}

/// A namespace URI the server does not (or no longer) publish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("namespace URI {0:?} is not in the server's namespace array")]
pub struct UnknownNamespace(pub String);

/// A node id string that does not parse; the text names the string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    #[error("empty node id; {EXPECTED}")]
    Empty,
    #[error("{0:?}: `nsu=` must be followed by `;i=`, `;s=`, `;g=` or `;b=`")]
    UriWithoutIdentifier(String),
    #[error("{0:?}: empty namespace URI after `nsu=`")]
    EmptyUri(String),
    #[error("{0:?}: `ns=<index>` must be followed by `;` and an identifier")]
    IndexWithoutIdentifier(String),
    #[error("{text:?}: namespace index {index:?} is not a number from 0 to 65535")]
    Index { text: String, index: String },
    #[error("{text:?}: {error}")]
    Identifier {
        text: String,
        error: IdentifierError,
    },
}

/// The identifier part (`i=`, `s=`, `g=`, `b=`) of a node id that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    #[error("missing identifier; {EXPECTED}")]
    Missing,
    #[error("numeric identifier {0:?} is not a number from 0 to 4294967295")]
    Numeric(String),
    #[error("empty string identifier after `s=`")]
    EmptyString,
    #[error("{0:?} is not a GUID (write e.g. g=72962b91-fa75-4ae6-8d28-b404dc7daf63)")]
    Guid(String),
    #[error("{0:?} is not valid base64 for a `b=` identifier")]
    Base64(String),
    #[error("unknown identifier kind {0:?}; {EXPECTED}")]
    UnknownKind(String),
}

impl FromStr for NodeRef {
    type Err = NodeIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text)
    }
}

const EXPECTED: &str = "expected a node id like \"ns=2;s=Line1.Bore\", \"i=2258\", \"ns=3;g=<uuid>\", \
                        \"ns=1;b=<base64>\" or \"nsu=<namespace URI>;s=...\"";

/// Parses a node id string. The identifier part of `s=` is taken verbatim (it may contain `;` and `=`).
pub fn parse(text: &str) -> Result<NodeRef, NodeIdError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(NodeIdError::Empty);
    }
    let (namespace, rest) = if let Some(after) = trimmed.strip_prefix("nsu=") {
        // The URI ends at the first `;<kind>=`; URIs practically never contain that sequence.
        let split = [";i=", ";s=", ";g=", ";b="]
            .iter()
            .filter_map(|marker| after.find(marker))
            .min()
            .ok_or_else(|| NodeIdError::UriWithoutIdentifier(text.to_string()))?;
        let uri = &after[..split];
        if uri.is_empty() {
            return Err(NodeIdError::EmptyUri(text.to_string()));
        }
        (Namespace::Uri(uri.to_string()), &after[split + 1..])
    } else if let Some(after) = trimmed.strip_prefix("ns=") {
        let (index, rest) = after
            .split_once(';')
            .ok_or_else(|| NodeIdError::IndexWithoutIdentifier(text.to_string()))?;
        let index: u16 = index.parse().map_err(|_| NodeIdError::Index {
            text: text.to_string(),
            index: index.to_string(),
        })?;
        (Namespace::Index(index), rest)
    } else {
        (Namespace::Index(0), trimmed)
    };
    let identifier = parse_identifier(rest).map_err(|error| NodeIdError::Identifier {
        text: text.to_string(),
        error,
    })?;
    Ok(NodeRef {
        namespace,
        identifier,
    })
}

fn parse_identifier(text: &str) -> Result<Identifier, IdentifierError> {
    let (kind, value) = text.split_at_checked(2).ok_or(IdentifierError::Missing)?;
    match kind {
        "i=" => value
            .parse::<u32>()
            .map(Identifier::Numeric)
            .map_err(|_| IdentifierError::Numeric(value.to_string())),
        "s=" if value.is_empty() => Err(IdentifierError::EmptyString),
        "s=" => Ok(Identifier::String(UAString::from(value))),
        "g=" => Guid::from_str(value.trim_start_matches('{').trim_end_matches('}'))
            .map(Identifier::Guid)
            .map_err(|_| IdentifierError::Guid(value.to_string())),
        "b=" => ByteString::from_base64(value)
            .filter(|b| !b.is_null())
            .map(Identifier::ByteString)
            .ok_or_else(|| IdentifierError::Base64(value.to_string())),
        _ => Err(IdentifierError::UnknownKind(kind.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let n = parse("ns=2;s=Line1.Bore").unwrap();
        assert_eq!(n.namespace, Namespace::Index(2));
        assert_eq!(n.identifier, Identifier::String("Line1.Bore".into()));

        let n = parse("i=2258").unwrap();
        assert_eq!(n.namespace, Namespace::Index(0));
        assert_eq!(n.identifier, Identifier::Numeric(2258));

        let n = parse("ns=3;g=72962b91-fa75-4ae6-8d28-b404dc7daf63").unwrap();
        assert!(matches!(n.identifier, Identifier::Guid(_)));
        assert_eq!(n.to_string(), "ns=3;g=72962b91-fa75-4ae6-8d28-b404dc7daf63");

        let n = parse("ns=1;b=AQID").unwrap();
        assert_eq!(
            n.identifier,
            Identifier::ByteString(ByteString::from(vec![1u8, 2, 3]))
        );
        assert_eq!(n.to_string(), "ns=1;b=AQID");

        let n = parse("nsu=urn:plant:cnc;s=Spindle;Speed=1").unwrap();
        assert_eq!(n.namespace, Namespace::Uri("urn:plant:cnc".into()));
        assert_eq!(n.identifier, Identifier::String("Spindle;Speed=1".into()));
        assert_eq!(n.to_string(), "nsu=urn:plant:cnc;s=Spindle;Speed=1");

        let n = parse("nsu=http://example.com/UA/;i=1001").unwrap();
        assert_eq!(n.namespace, Namespace::Uri("http://example.com/UA/".into()));
    }

    #[test]
    fn rejects_malformed_ids_with_a_reason() {
        for (text, needle) in [
            ("", "empty"),
            ("ns=2", "must be followed"),
            ("ns=x;i=1", "namespace index"),
            ("ns=70000;i=1", "namespace index"),
            ("i=abc", "numeric identifier"),
            ("ns=2;s=", "empty string"),
            ("g=not-a-guid", "not a GUID"),
            ("b=!!", "base64"),
            ("x=1", "unknown identifier kind"),
            ("nsu=urn:x", "must be followed"),
            ("nsu=;i=1", "empty namespace URI"),
            ("Line1.Bore", "unknown identifier kind"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn resolves_namespace_uris_against_the_server_array() {
        let ns: Vec<String> = [
            "http://opcfoundation.org/UA/",
            "urn:server",
            "urn:plant:cnc",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let id = parse("nsu=urn:plant:cnc;s=Spindle")
            .unwrap()
            .resolve(&ns)
            .unwrap();
        assert_eq!(id, NodeId::new(2, "Spindle"));
        let err = parse("nsu=urn:other;s=X")
            .unwrap()
            .resolve(&ns)
            .unwrap_err();
        assert!(err.to_string().contains("urn:other"), "{err}");
        assert_eq!(
            parse("ns=7;i=5").unwrap().resolve(&[]).unwrap(),
            NodeId::new(7, 5u32)
        );
        assert_eq!(format_node_id(&NodeId::new(7, 5u32)), "ns=7;i=5");
        assert_eq!(format_node_id(&NodeId::new(0, 85u32)), "i=85");
    }
}
