//! ICE-lite agent (RFC 8445 lite) and consent freshness (RFC 7675), sans-IO, STUN by stun-rs.
