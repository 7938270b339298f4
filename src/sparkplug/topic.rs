//! The Sparkplug topic namespace (specification chapter 4):
//! `spBv1.0/<group_id>/<message_type>/<edge_node_id>[/<device_id>]` and `spBv1.0/STATE/<host_id>`.

pub const NAMESPACE: &str = "spBv1.0";

/// Why an id cannot be a Sparkplug topic element.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("the {what} is empty")]
    Empty { what: &'static str },
    #[error("the {what} {id:?} contains {ch:?}, which Sparkplug reserves (+, /, #)")]
    Reserved {
        what: &'static str,
        id: String,
        ch: char,
    },
}

/// Group, edge node and device ids are UTF-8 without `+`, `/` and `#` (4.1.1).
pub fn check_id(what: &'static str, id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty { what });
    }
    if let Some(ch) = id.chars().find(|c| matches!(c, '+' | '/' | '#')) {
        return Err(IdError::Reserved {
            what,
            id: id.to_string(),
            ch,
        });
    }
    Ok(())
}

/// The message types an edge node publishes or receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    NBirth,
    NDeath,
    NData,
    NCmd,
    DBirth,
    DDeath,
    DData,
    DCmd,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::NBirth => "NBIRTH",
            MessageType::NDeath => "NDEATH",
            MessageType::NData => "NDATA",
            MessageType::NCmd => "NCMD",
            MessageType::DBirth => "DBIRTH",
            MessageType::DDeath => "DDEATH",
            MessageType::DData => "DDATA",
            MessageType::DCmd => "DCMD",
        }
    }
}

/// Topics of one edge node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTopics {
    group: String,
    node: String,
}

/// An incoming message the node listens to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming<'a> {
    NCmd,
    DCmd { device: &'a str },
    State { host: &'a str },
}

impl NodeTopics {
    pub fn new(group: &str, node: &str) -> Result<Self, IdError> {
        check_id("group_id", group)?;
        check_id("edge_node_id", node)?;
        Ok(NodeTopics {
            group: group.to_string(),
            node: node.to_string(),
        })
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn node_topic(&self, t: MessageType) -> String {
        format!("{NAMESPACE}/{}/{}/{}", self.group, t.as_str(), self.node)
    }

    pub fn device_topic(&self, t: MessageType, device: &str) -> String {
        format!(
            "{NAMESPACE}/{}/{}/{}/{device}",
            self.group,
            t.as_str(),
            self.node
        )
    }

    /// A Sparkplug host's STATE topic (3.0: `spBv1.0/STATE/<host_id>`).
    pub fn state(host: &str) -> String {
        format!("{NAMESPACE}/STATE/{host}")
    }

    /// Recognises the topics the node subscribes to: its NCMD, its devices' DCMD, STATE.
    pub fn parse_incoming<'a>(&self, topic: &'a str) -> Option<Incoming<'a>> {
        let rest = topic.strip_prefix(NAMESPACE)?.strip_prefix('/')?;
        if let Some(host) = rest.strip_prefix("STATE/") {
            return (!host.is_empty() && !host.contains('/')).then_some(Incoming::State { host });
        }
        let rest = rest.strip_prefix(self.group.as_str())?.strip_prefix('/')?;
        let (kind, rest) = rest.split_once('/')?;
        let (node, device) = match rest.split_once('/') {
            Some((n, d)) => (n, Some(d)),
            None => (rest, None),
        };
        if node != self.node {
            return None;
        }
        match (kind, device) {
            ("NCMD", None) => Some(Incoming::NCmd),
            ("DCMD", Some(d)) if !d.is_empty() && !d.contains('/') => {
                Some(Incoming::DCmd { device: d })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_namespace() {
        let t = NodeTopics::new("Plant 1", "line-3").unwrap();
        assert_eq!(
            t.node_topic(MessageType::NBirth),
            "spBv1.0/Plant 1/NBIRTH/line-3"
        );
        assert_eq!(
            t.device_topic(MessageType::DData, "press"),
            "spBv1.0/Plant 1/DDATA/line-3/press"
        );
        assert_eq!(NodeTopics::state("scada"), "spBv1.0/STATE/scada");
    }

    #[test]
    fn reserved_characters_are_refused() {
        assert!(NodeTopics::new("a/b", "n").is_err());
        assert!(NodeTopics::new("g", "n+").is_err());
        assert!(check_id("device_id", "#").is_err());
        assert!(check_id("device_id", "").is_err());
        assert!(check_id("device_id", "Presse 3 (links)").is_ok());
    }

    #[test]
    fn incoming_topics_are_recognised() {
        let t = NodeTopics::new("g", "n").unwrap();
        assert_eq!(t.parse_incoming("spBv1.0/g/NCMD/n"), Some(Incoming::NCmd));
        assert_eq!(
            t.parse_incoming("spBv1.0/g/DCMD/n/dev"),
            Some(Incoming::DCmd { device: "dev" })
        );
        assert_eq!(
            t.parse_incoming("spBv1.0/STATE/host"),
            Some(Incoming::State { host: "host" })
        );
        assert_eq!(t.parse_incoming("spBv1.0/g/NCMD/other"), None);
        assert_eq!(t.parse_incoming("spBv1.0/h/NCMD/n"), None);
        assert_eq!(t.parse_incoming("spBv1.0/g/NDATA/n"), None);
        assert_eq!(t.parse_incoming("lineside/n/cmd"), None);
    }
}
