//! `[cluster]`: several nodes sharing state in Redis.

/// `[cluster]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Share this node's state in Redis (`cluster.enabled`).
    pub enabled: bool,
    /// The Redis server (`cluster.redis`): `redis://HOST[:PORT][/DB]`.
    pub redis: String,
    /// This node's name, unique in the cluster; it prefixes its keys (`cluster.node_id`).
    pub node_id: String,
    /// The cluster's SIP front toward the core, `HOST:PORT` (`cluster.sip_front`).
    pub sip_front: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { enabled: false, redis: "redis://127.0.0.1:6379".to_owned(), node_id: String::new(), sip_front: None }
    }
}
