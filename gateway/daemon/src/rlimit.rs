//! Open-file limit. The daemon holds three UDP sockets per call (the web BUNDLE port, IMS RTP
//! and RTCP) plus one descriptor per connection, so the usual soft limit of 1024 would cap it
//! near 300 calls while the hard limit allows far more. At start the soft limit is raised to
//! the hard one, as proxies and media relays do; the result is logged so an operator sees the
//! ceiling.

/// Raises RLIMIT_NOFILE's soft limit to its hard limit; returns the soft limit now in force.
pub fn raise_nofile() -> std::io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit reads one rlimit from a struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim = raised;
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every target
    Ok(lim.rlim_cur as u64)
}
