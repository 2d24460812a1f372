//! A node of a test cluster: the settings every cluster test gives its daemons.

use std::net::SocketAddr;

use crate::gateway::{Gateway, GatewayBuilder};

/// Node `name` (its `cluster.node_id` and User-Agent) sending to the core at `core` over UDP,
/// sharing state in `redis`, registering `front` (the dispatcher) at the core, and keeping the
/// registrations of closed WebSockets for browsers that come back (a cluster requires it).
pub fn node(name: &str, core: SocketAddr, front: SocketAddr, redis: &str) -> GatewayBuilder {
    Gateway::builder()
        .next_hop_udp(core.port())
        .set("sip.user_agent", &format!("Estuary {name}"))
        .set("cluster.enabled", "true")
        .set("registrar.on_ws_close", "keep")
        .set("cluster.node_id", name)
        .set("cluster.redis", redis)
        .set("cluster.sip_front", &front.to_string())
}
