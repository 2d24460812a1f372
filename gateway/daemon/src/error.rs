//! Start-up errors: each names the config key whose value could not be put to work.

use std::io;
use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A listener could not be bound.
    #[error("{key} {addr}: {reason}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        reason: String,
    },
    /// A configured value could not be used (certificate file, next hop name, ...).
    #[error("{key}: {reason}")]
    Setup { key: &'static str, reason: String },
}

impl DaemonError {
    pub fn bind(key: &'static str, addr: SocketAddr, e: &io::Error) -> Self {
        let reason = match e.kind() {
            io::ErrorKind::AddrInUse => "address in use".to_owned(),
            io::ErrorKind::AddrNotAvailable => "address not available on this host".to_owned(),
            io::ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need privileges)".to_owned()
            }
            _ => e.to_string(),
        };
        DaemonError::Bind { key, addr, reason }
    }

    pub fn setup(key: &'static str, reason: impl Into<String>) -> Self {
        DaemonError::Setup {
            key,
            reason: reason.into(),
        }
    }
}
