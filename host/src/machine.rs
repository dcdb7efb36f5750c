//! This machine's name: the default name of a host in its leases, its metrics and the
//! publications of its folder.

/// The kernel's host name, else `$HOSTNAME`, else `host`.
pub fn name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}
