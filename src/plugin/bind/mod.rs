//! `bind`: the addresses a server block listens on (README.md beside this file). It is
//! not part of the chain: the server reads it when it creates the listeners.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::{ConfigError, Directive};
use crate::settings::BlockSettings;

/// The table's entry: the block's listen addresses.
pub fn configure(dirs: &[&Directive], block: &mut BlockSettings) -> Result<(), ConfigError> {
    block.binds = Some(addresses(dirs)?);
    Ok(())
}

/// Parses every `bind` directive of a block into the addresses to listen on:
/// `bind ADDRESS|INTERFACE... [{ except ADDRESS|INTERFACE... }]`. Interfaces stand for
/// all their addresses. Several `bind` lines add up.
pub fn addresses(dirs: &[&Directive]) -> Result<Vec<IpAddr>, ConfigError> {
    let mut addrs: Vec<IpAddr> = Vec::new();
    let mut except: Vec<IpAddr> = Vec::new();
    for d in dirs {
        if d.args.is_empty() {
            return Err(d.arg_err("bind"));
        }
        for a in &d.args {
            addrs.extend(resolve(a.as_str()).map_err(|m| ConfigError::at(&a.loc, format!("bind: {m}")))?);
        }
        for opt in d.options() {
            match opt.name.as_str() {
                "except" => {
                    if opt.args.is_empty() {
                        return Err(opt.arg_err("bind"));
                    }
                    for a in &opt.args {
                        except.extend(resolve(a.as_str()).map_err(|m| ConfigError::at(&a.loc, format!("bind: {m}")))?);
                    }
                }
                other => return Err(opt.err("bind", format!("unknown property '{other}'"))),
            }
        }
    }
    addrs.retain(|a| !except.contains(a));
    let mut unique = Vec::with_capacity(addrs.len());
    for a in addrs {
        if !unique.contains(&a) {
            unique.push(a);
        }
    }
    if unique.is_empty() {
        let d = dirs[0];
        return Err(d.err("bind", "no address left to bind to after 'except'"));
    }
    Ok(unique)
}

/// An IP address, or the addresses of the interface of that name.
fn resolve(s: &str) -> Result<Vec<IpAddr>, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let found = interface_addresses(s);
    if found.is_empty() {
        return Err(format!("not a valid IP address or interface name: '{s}'"));
    }
    Ok(found)
}

/// The IPv4 and IPv6 addresses of interface `name` (getifaddrs(3)). Link-local IPv6
/// addresses are skipped: they cannot be bound without a scope.
pub fn interface_addresses(name: &str) -> Vec<IpAddr> {
    all_interface_addresses()
        .into_iter()
        .filter(|(n, _)| n == name)
        .map(|(_, a)| a)
        .filter(|a| !matches!(a, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80))
        .collect()
}

/// Every (interface name, address) pair on the host.
pub fn all_interface_addresses() -> Vec<(String, IpAddr)> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned and is not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr is non-null and points at a sockaddr whose family tells its type.
        let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
        let ip = match family {
            libc::AF_INET => {
                // SAFETY: the family says this is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says this is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
            }
            _ => continue,
        };
        out.push((name, ip));
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_interface_resolves() {
        let lo = interface_addresses("lo");
        assert!(lo.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{lo:?}");
        assert!(resolve("no-such-interface0").is_err());
        assert_eq!(resolve("::1").unwrap(), vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]);
    }
}
