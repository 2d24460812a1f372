//! ICMP errors for the unconnected IMS UDP socket (RFC 3261 §18.4: a transport error such as
//! ICMP port unreachable SHOULD reach the transaction, which then fails at once with 503
//! instead of retransmitting until Timer B).
//!
//! An unconnected UDP socket hears no ICMP at all unless `IP_RECVERR` (`IPV6_RECVERR`) is set.
//! With it, each error is queued on the socket with the destination of the datagram that
//! caused it, and the next receive returns the error once. [`drain`] reads that queue
//! (`MSG_ERRQUEUE`) and returns the destinations that are unreachable. The queue must be
//! drained completely: while it holds an entry the socket stays in error state.
//!
//! Linux only; elsewhere [`enable`] does nothing and the transaction times out as before.

use std::net::SocketAddr;

/// Ask the kernel to queue ICMP errors on `sock` (one call at start).
#[cfg(target_os = "linux")]
pub fn enable(sock: &std::net::UdpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (level, name) = match sock.local_addr()? {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_RECVERR),
        SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_RECVERR),
    };
    let on: libc::c_int = 1;
    // SAFETY: a valid fd owned by `sock`, and a pointer/length pair to a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub fn enable(_sock: &std::net::UdpSocket) -> std::io::Result<()> {
    Ok(())
}

/// Read every queued error; return the destinations reported unreachable (port, host or
/// network unreachable, administratively prohibited). Other reports (e.g. "fragmentation
/// needed") are read and ignored. At most `limit` entries per call, so a flood of ICMP
/// cannot hold the receive task.
#[cfg(target_os = "linux")]
pub fn drain(sock: &impl std::os::fd::AsRawFd, limit: usize) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for _ in 0..limit {
        match read_one(sock.as_raw_fd()) {
            Some(Some(dest)) => {
                if !out.contains(&dest) {
                    out.push(dest);
                }
            }
            Some(None) => {}
            None => break,
        }
    }
    out
}

#[cfg(not(target_os = "linux"))]
pub fn drain(_sock: &impl std::os::fd::AsRawFd, _limit: usize) -> Vec<SocketAddr> {
    Vec::new()
}

/// One `recvmsg(MSG_ERRQUEUE)`: `None` when the queue is empty, `Some(None)` for an entry
/// that is not an unreachable report, `Some(Some(dest))` for one that is.
#[cfg(target_os = "linux")]
fn read_one(fd: std::os::fd::RawFd) -> Option<Option<SocketAddr>> {
    // The payload (our own datagram) is not needed; a small buffer and MSG_TRUNC suffice.
    let mut payload = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr (plain C structs).
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 64];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` refers to a live local buffer of the stated length.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if n < 0 {
        return None;
    }
    let mut unreachable = false;
    // SAFETY: CMSG_* walk the control buffer the kernel just filled, within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            let is_err = (c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_RECVERR)
                || (c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_RECVERR);
            if is_err {
                let ee = std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<libc::sock_extended_err>(),
                );
                let icmp = ee.ee_origin == libc::SO_EE_ORIGIN_ICMP
                    || ee.ee_origin == libc::SO_EE_ORIGIN_ICMP6;
                unreachable |= icmp
                    && matches!(
                        ee.ee_errno as i32,
                        libc::ECONNREFUSED
                            | libc::EHOSTUNREACH
                            | libc::ENETUNREACH
                            | libc::EHOSTDOWN
                            | libc::EACCES
                    );
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if !unreachable {
        return Some(None);
    }
    Some(sockaddr_to_std(&name))
}

#[cfg(target_os = "linux")]
fn sockaddr_to_std(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match s.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A datagram to a closed loopback port comes back as ICMP port unreachable; the
    /// destination must be reported, and the queue left empty.
    #[test]
    fn closed_port_is_reported_unreachable() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dest = closed.local_addr().unwrap();
        drop(closed);
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enable(&sock).unwrap();
        sock.send_to(b"OPTIONS", dest).unwrap();
        // Loopback ICMP is delivered synchronously with the send, but allow for scheduling.
        let mut found = Vec::new();
        for _ in 0..100 {
            found = drain(&sock, 16);
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(found, vec![dest]);
        assert!(drain(&sock, 16).is_empty());
    }

    #[test]
    fn empty_queue_reports_nothing() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enable(&sock).unwrap();
        assert!(drain(&sock, 16).is_empty());
    }
}
