//! Listening sockets with SO_REUSEPORT (one per worker and address, so the kernel
//! spreads queries over the workers), and batched UDP I/O with recvmmsg/sendmmsg.
//!
//! Sockets bound to a wildcard address ask for the destination address of each
//! datagram (IP_PKTINFO / IPV6_RECVPKTINFO) and send the reply from it, so that on a
//! multi-homed host the client sees the answer come from the address it asked. A socket
//! bound to one address needs neither: it receives and sends with no control messages
//! at all (the kernel's source address is the bound one).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn set_opt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` lives for the call and its size is passed.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// Encodes a socket address for the kernel.
pub fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Decodes a socket address the kernel filled in.
pub fn from_sockaddr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Creates a non-blocking socket bound to `addr` with SO_REUSEPORT (and IPV6_V6ONLY for
/// IPv6, so that v4 and v6 wildcards can be bound side by side).
fn bound_socket(addr: SocketAddr, ty: libc::c_int) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2) call; the result is checked and owned at once.
    let fd = check(unsafe { libc::socket(family, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = fd.as_raw_fd();
    set_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    set_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if addr.is_ipv6() {
        set_opt(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    if ty == libc::SOCK_DGRAM && addr.ip().is_unspecified() {
        if addr.is_ipv4() {
            set_opt(raw, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
        } else {
            set_opt(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        }
    }
    if ty == libc::SOCK_STREAM {
        // Queries are small and answered at once: send them without Nagle's delay.
        set_opt(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    }
    let (ss, len) = to_sockaddr(addr);
    // SAFETY: `ss` holds a valid address of length `len`.
    check(unsafe { libc::bind(raw, (&ss as *const libc::sockaddr_storage).cast(), len) })?;
    Ok(fd)
}

/// The receive buffer asked for on every UDP socket. The kernel's default (about
/// 208 KiB) holds only 256 small datagrams, so a burst from one client can overflow a
/// worker that is busy for half a millisecond; 2 MiB (the kernel doubles it, within
/// `net.core.rmem_max`) holds a few milliseconds of the most a worker can answer.
const UDP_RECEIVE_BUFFER: libc::c_int = 2 << 20;

/// A UDP socket for one worker on `addr`.
pub fn udp_listener(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let fd = bound_socket(addr, libc::SOCK_DGRAM)?;
    // As root, SO_RCVBUFFORCE passes rmem_max; otherwise take what rmem_max allows.
    if set_opt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        UDP_RECEIVE_BUFFER,
    )
    .is_err()
    {
        let _ = set_opt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, UDP_RECEIVE_BUFFER);
    }
    Ok(std::net::UdpSocket::from(fd))
}

/// A TCP listener for one worker on `addr`.
pub fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let fd = bound_socket(addr, libc::SOCK_STREAM)?;
    // SAFETY: a bound stream socket; backlog is clamped by the kernel.
    check(unsafe { libc::listen(fd.as_raw_fd(), 1024) })?;
    Ok(std::net::TcpListener::from(fd))
}

/// The address a socket is bound to (to learn the port when binding port 0).
pub fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: all-zero is a valid sockaddr_storage; getsockname fills at most `len`.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    check(unsafe { libc::getsockname(fd, (&mut ss as *mut libc::sockaddr_storage).cast(), &mut len) })?;
    from_sockaddr(&ss).ok_or_else(|| io::Error::other("unknown address family"))
}

/// Datagrams per recvmmsg/sendmmsg call, as many as the reference harness's echo floor
/// reads at once. Under its closed-loop load (128 queries in flight) more than 32 wait
/// at most wake-ups: with 32, a run made 0.034 recvmmsg and 0.031 sendmmsg calls per
/// query where the echo made 0.020 of each.
pub const BATCH: usize = 64;
/// Largest query accepted over UDP; a longer datagram is cut short by the kernel and
/// answered FORMERR.
pub const MAX_UDP_QUERY: usize = 4096;
const CMSG_SPACE: usize = 64;

/// Receive and send state for batched UDP I/O on one socket: the mmsghdr arrays point
/// into the buffers, so everything lives in one boxed struct that never moves.
pub struct UdpBatch {
    rx: Box<[u8]>,
    rx_addr: [libc::sockaddr_storage; BATCH],
    rx_ctrl: [[u8; CMSG_SPACE]; BATCH],
    rx_iov: [libc::iovec; BATCH],
    rx_hdr: [libc::mmsghdr; BATCH],
    tx_addr: [libc::sockaddr_storage; BATCH],
    tx_ctrl: [[u8; CMSG_SPACE]; BATCH],
    tx_iov: [libc::iovec; BATCH],
    tx_hdr: [libc::mmsghdr; BATCH],
    tx_len: usize,
    /// Receive headers the kernel may have written since they were last set (the
    /// first ones, up to the last receive's count): only these are set again.
    rx_dirty: usize,
    /// Whether the receive headers have room for a control message.
    rx_with_ctrl: bool,
}

/// One received datagram.
pub struct Datagram<'a> {
    pub data: &'a [u8],
    pub from: SocketAddr,
    /// The destination address when the socket reports it (wildcard sockets).
    pub to: Option<IpAddr>,
    /// The kernel cut the datagram short.
    pub truncated: bool,
}

impl UdpBatch {
    pub fn new() -> Box<UdpBatch> {
        // SAFETY (each `zeroed`): C structs and byte arrays for which all-zero is
        // valid; the pointers inside the headers are set once boxed (the box never
        // moves) and before any use.
        let mut b = Box::new(UdpBatch {
            rx: vec![0u8; BATCH * MAX_UDP_QUERY].into_boxed_slice(),
            rx_addr: unsafe { zeroed() },
            rx_ctrl: [[0; CMSG_SPACE]; BATCH],
            rx_iov: unsafe { zeroed() },
            rx_hdr: unsafe { zeroed() },
            tx_addr: unsafe { zeroed() },
            tx_ctrl: [[0; CMSG_SPACE]; BATCH],
            tx_iov: unsafe { zeroed() },
            tx_hdr: unsafe { zeroed() },
            tx_len: 0,
            rx_dirty: 0,
            rx_with_ctrl: false,
        });
        b.set_rx_headers(BATCH, false);
        b
    }

    /// Points receive headers [0, upto) at their buffers, with room for a control
    /// message when `destinations`, ready for the kernel.
    fn set_rx_headers(&mut self, upto: usize, destinations: bool) {
        let ctrl_len = if destinations { CMSG_SPACE } else { 0 };
        for i in 0..upto {
            self.rx_iov[i] = libc::iovec {
                iov_base: self.rx[i * MAX_UDP_QUERY..].as_mut_ptr().cast(),
                iov_len: MAX_UDP_QUERY,
            };
            let h = &mut self.rx_hdr[i].msg_hdr;
            h.msg_name = (&mut self.rx_addr[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.rx_iov[i];
            h.msg_iovlen = 1;
            h.msg_control = if destinations {
                self.rx_ctrl[i].as_mut_ptr().cast()
            } else {
                std::ptr::null_mut()
            };
            h.msg_controllen = ctrl_len as _;
            h.msg_flags = 0;
            self.rx_hdr[i].msg_len = 0;
        }
    }

    /// Receives up to BATCH datagrams; returns how many (0 when nothing is waiting).
    /// `destinations`: the socket reports each datagram's destination (a wildcard
    /// socket, see [`udp_listener`]); only then is room made for the control message.
    /// Only the headers the last receive used are set again, so a call that gets one
    /// datagram costs one header's setting, not BATCH.
    pub fn recv(&mut self, fd: RawFd, destinations: bool) -> io::Result<usize> {
        let upto = if destinations == self.rx_with_ctrl {
            self.rx_dirty
        } else {
            BATCH
        };
        self.set_rx_headers(upto, destinations);
        self.rx_with_ctrl = destinations;
        // Until the call returns, any header may have been written.
        self.rx_dirty = BATCH;
        // SAFETY: the headers point into buffers owned by `self`, sized as declared.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.rx_hdr.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                self.rx_dirty = 0;
                return Ok(0);
            }
            return Err(e);
        }
        // The kernel wrote the first n headers; the one after may have been read
        // and failed, so it is set again too.
        self.rx_dirty = (n as usize + 1).min(BATCH);
        Ok(n as usize)
    }

    /// Datagram `i` of the last [`Self::recv`].
    pub fn datagram(&self, i: usize) -> Option<Datagram<'_>> {
        let h = &self.rx_hdr[i];
        let from = from_sockaddr(&self.rx_addr[i])?;
        let len = (h.msg_len as usize).min(MAX_UDP_QUERY);
        Some(Datagram {
            data: &self.rx[i * MAX_UDP_QUERY..i * MAX_UDP_QUERY + len],
            from,
            to: packet_destination(&h.msg_hdr),
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        })
    }

    /// Queues a reply. The bytes must stay alive and unchanged until [`Self::flush`].
    pub fn queue(&mut self, fd: RawFd, data: &[u8], to: SocketAddr, from: Option<IpAddr>) -> io::Result<()> {
        if self.tx_len == BATCH {
            self.flush(fd)?;
        }
        let i = self.tx_len;
        let (ss, len) = to_sockaddr(to);
        self.tx_addr[i] = ss;
        self.tx_iov[i] = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let h = &mut self.tx_hdr[i].msg_hdr;
        h.msg_name = (&mut self.tx_addr[i] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = len;
        h.msg_iov = &mut self.tx_iov[i];
        h.msg_iovlen = 1;
        h.msg_flags = 0;
        h.msg_controllen = 0;
        h.msg_control = std::ptr::null_mut();
        if let Some(src) = from {
            let n = write_pktinfo(&mut self.tx_ctrl[i], src);
            if n > 0 {
                h.msg_control = self.tx_ctrl[i].as_mut_ptr().cast();
                h.msg_controllen = n as _;
            }
        }
        self.tx_len += 1;
        Ok(())
    }

    /// Forgets the queued replies unsent (their socket is gone).
    pub fn clear(&mut self) {
        self.tx_len = 0;
    }

    /// Sends every queued reply. A reply the kernel will not take now (full socket
    /// buffer) is dropped and counted, never queued: the client will retry.
    pub fn flush(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut sent = 0;
        let mut dropped = 0;
        while sent + dropped < self.tx_len {
            let start = sent + dropped;
            // SAFETY: headers [start, tx_len) point at live buffers (see `queue`).
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.tx_hdr[start..].as_mut_ptr(),
                    (self.tx_len - start) as libc::c_uint,
                    libc::MSG_DONTWAIT as _,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Skip the datagram that failed (full buffer, unreachable client).
                dropped += 1;
                continue;
            }
            sent += n as usize;
        }
        self.tx_len = 0;
        Ok(dropped)
    }
}

/// Reads IP_PKTINFO / IPV6_PKTINFO from a received message's control data.
fn packet_destination(h: &libc::msghdr) -> Option<IpAddr> {
    if h.msg_controllen == 0 {
        return None;
    }
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
    // msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            let hdr = &*c;
            if hdr.cmsg_level == libc::IPPROTO_IP && hdr.cmsg_type == libc::IP_PKTINFO {
                let info = &*(libc::CMSG_DATA(c) as *const libc::in_pktinfo);
                return Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))));
            }
            if hdr.cmsg_level == libc::IPPROTO_IPV6 && hdr.cmsg_type == libc::IPV6_PKTINFO {
                let info = &*(libc::CMSG_DATA(c) as *const libc::in6_pktinfo);
                return Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// Writes a PKTINFO control message choosing the reply's source address; returns its length.
fn write_pktinfo(buf: &mut [u8; CMSG_SPACE], src: IpAddr) -> usize {
    // SAFETY: a msghdr over `buf` lets the CMSG macros lay out one control message
    // within CMSG_SPACE bytes (checked against the buffer size).
    unsafe {
        let mut h: libc::msghdr = zeroed();
        h.msg_control = buf.as_mut_ptr().cast();
        match src {
            IpAddr::V4(ip) => {
                let space = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize;
                if space > CMSG_SPACE {
                    return 0;
                }
                h.msg_controllen = space as _;
                let c = libc::CMSG_FIRSTHDR(&h);
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
                let info = libc::CMSG_DATA(c) as *mut libc::in_pktinfo;
                std::ptr::write_unaligned(
                    info,
                    libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr {
                            s_addr: u32::from(ip).to_be(),
                        },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    },
                );
                space
            }
            IpAddr::V6(ip) => {
                let space = libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as usize;
                if space > CMSG_SPACE {
                    return 0;
                }
                h.msg_controllen = space as _;
                let c = libc::CMSG_FIRSTHDR(&h);
                (*c).cmsg_level = libc::IPPROTO_IPV6;
                (*c).cmsg_type = libc::IPV6_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as _;
                let info = libc::CMSG_DATA(c) as *mut libc::in6_pktinfo;
                std::ptr::write_unaligned(
                    info,
                    libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr { s6_addr: ip.octets() },
                        ipi6_ifindex: 0,
                    },
                );
                space
            }
        }
    }
}

/// One worker's sockets for one address: its UDP sockets (none for DNS over TLS, which is
/// TCP only) and its TCP listeners. A worker binds one of each; sockets passed in by
/// systemd or by a predecessor may be more or fewer than the workers, and are then
/// spread over them (see [`spread`]).
pub type SocketPair = (Vec<std::net::UdpSocket>, Vec<std::net::TcpListener>);

/// Binds one UDP socket (when `udp`) and one TCP listener per worker for `addr`.
pub fn bind_all(addr: SocketAddr, workers: usize, udp: bool) -> io::Result<Vec<SocketPair>> {
    let mut out = Vec::with_capacity(workers);
    let mut addr = addr;
    for _ in 0..workers {
        let u = if udp { Some(udp_listener(addr)?) } else { None };
        // With port 0 the first socket picks the port; the rest join it.
        if addr.port() == 0 {
            if let Some(u) = &u {
                addr = local_addr(u.as_raw_fd())?;
            }
        }
        let tcp = tcp_listener(addr)?;
        if addr.port() == 0 {
            addr = local_addr(tcp.as_raw_fd())?;
        }
        out.push((u.into_iter().collect(), vec![tcp]));
    }
    Ok(out)
}

/// Which of `sockets` each of `workers` serves: every socket is served by at least one
/// worker and every worker serves at least one socket (when there is any). With more
/// sockets than workers a worker serves several; with fewer, workers share one (each
/// polls its own duplicate of the descriptor, and the kernel wakes them all).
pub fn spread(sockets: usize, workers: usize) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); workers];
    if sockets == 0 || workers == 0 {
        return out;
    }
    // No worker gets a socket twice: with more sockets than workers each j is another
    // socket, with fewer each j is another worker.
    for j in 0..sockets.max(workers) {
        out[j % workers].push(j % sockets);
    }
    out
}

/// What kind of listening socket a descriptor passed in (by systemd, or by a
/// predecessor) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Udp,
    /// A TCP socket in the listening state.
    Tcp,
}

/// The kind and local address of a descriptor passed in, or why it cannot serve DNS.
pub fn inspect(fd: RawFd) -> Result<(Kind, SocketAddr), String> {
    let get = |level, name| -> io::Result<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` live across the call and describe an int.
        check(unsafe { libc::getsockopt(fd, level, name, (&mut v as *mut libc::c_int).cast(), &mut len) })?;
        Ok(v)
    };
    let ty = get(libc::SOL_SOCKET, libc::SO_TYPE).map_err(|e| format!("not a socket ({e})"))?;
    let addr = local_addr(fd).map_err(|e| format!("not an IPv4 or IPv6 socket ({e})"))?;
    match ty {
        libc::SOCK_DGRAM => Ok((Kind::Udp, addr)),
        libc::SOCK_STREAM => match get(libc::SOL_SOCKET, libc::SO_ACCEPTCONN) {
            Ok(1) => Ok((Kind::Tcp, addr)),
            _ => Err(format!("a TCP socket on {addr} that is not listening")),
        },
        other => Err(format!("a socket of type {other} on {addr}, neither UDP nor TCP")),
    }
}

/// Readies a UDP socket passed in for a worker: non-blocking, close-on-exec, and told
/// to report each datagram's destination when bound to a wildcard address (as
/// [`udp_listener`] does). Its receive buffer is whatever its creator gave it.
pub fn adopt_udp(fd: OwnedFd) -> io::Result<std::net::UdpSocket> {
    let raw = fd.as_raw_fd();
    adopt(raw)?;
    let addr = local_addr(raw)?;
    if addr.ip().is_unspecified() {
        if addr.is_ipv4() {
            set_opt(raw, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
        } else {
            set_opt(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        }
    }
    Ok(std::net::UdpSocket::from(fd))
}

/// Readies a TCP listener passed in for a worker: non-blocking, close-on-exec, no
/// Nagle delay on the connections it accepts.
pub fn adopt_tcp(fd: OwnedFd) -> io::Result<std::net::TcpListener> {
    let raw = fd.as_raw_fd();
    adopt(raw)?;
    let _ = set_opt(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
    Ok(std::net::TcpListener::from(fd))
}

fn adopt(raw: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns.
    let fl = check(unsafe { libc::fcntl(raw, libc::F_GETFL) })?;
    check(unsafe { libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK) })?;
    let fd_flags = check(unsafe { libc::fcntl(raw, libc::F_GETFD) })?;
    check(unsafe { libc::fcntl(raw, libc::F_SETFD, fd_flags | libc::FD_CLOEXEC) })?;
    Ok(())
}

/// A second descriptor for the same socket (close-on-exec).
pub fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a fresh descriptor, owned at once.
    let new = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

#[cfg(test)]
mod spread_tests {
    use super::spread;

    #[test]
    fn every_socket_served_and_every_worker_busy() {
        assert_eq!(spread(2, 2), vec![vec![0], vec![1]]);
        assert_eq!(spread(1, 3), vec![vec![0], vec![0], vec![0]]);
        assert_eq!(spread(5, 2), vec![vec![0, 2, 4], vec![1, 3]]);
        assert_eq!(spread(0, 2), vec![Vec::<usize>::new(), vec![]]);
        for s in 1..9 {
            for w in 1..9 {
                let got = spread(s, w);
                assert!(got.iter().all(|v| !v.is_empty()));
                for i in 0..s {
                    assert!(got.iter().any(|v| v.contains(&i)), "{s} {w}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;

    fn received(b: &UdpBatch, n: usize) -> Vec<(Vec<u8>, Option<IpAddr>)> {
        (0..n)
            .map(|i| {
                let d = b.datagram(i).unwrap();
                (d.data.to_vec(), d.to)
            })
            .collect()
    }

    /// Receives what `sent` datagrams brought (a few tries: loopback delivery is quick
    /// but not synchronous).
    fn recv_all(b: &mut UdpBatch, fd: RawFd, destinations: bool, sent: usize) -> usize {
        let mut n = 0;
        for _ in 0..200 {
            n = b.recv(fd, destinations).unwrap();
            if n >= sent {
                break;
            }
            assert_eq!(n, 0, "datagrams were received apart");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        n
    }

    #[test]
    fn headers_set_again_only_where_used_still_receive_every_datagram_whole() {
        let one = udp_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let any = udp_listener("0.0.0.0:0".parse().unwrap()).unwrap();
        let to_one = one.local_addr().unwrap();
        let to_any = SocketAddr::new([127, 0, 0, 1].into(), any.local_addr().unwrap().port());
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut b = UdpBatch::new();
        // Nothing waiting.
        assert_eq!(b.recv(one.as_raw_fd(), false).unwrap(), 0);
        // Three short datagrams, then one longer than any before: its length is not
        // held to what a header was last given.
        for m in [&b"a"[..], b"bb", b"ccc"] {
            client.send_to(m, to_one).unwrap();
        }
        let n = recv_all(&mut b, one.as_raw_fd(), false, 3);
        assert_eq!(
            received(&b, n),
            vec![(b"a".to_vec(), None), (b"bb".to_vec(), None), (b"ccc".to_vec(), None)]
        );
        let long = vec![7u8; 1000];
        client.send_to(&long, to_one).unwrap();
        let n = recv_all(&mut b, one.as_raw_fd(), false, 1);
        assert_eq!(received(&b, n), vec![(long.clone(), None)]);
        // A wildcard socket reports each destination; the same batch then serves the
        // one-address socket again without control messages.
        client.send_to(b"dd", to_any).unwrap();
        let n = recv_all(&mut b, any.as_raw_fd(), true, 1);
        assert_eq!(received(&b, n), vec![(b"dd".to_vec(), Some([127, 0, 0, 1].into()))]);
        client.send_to(b"e", to_one).unwrap();
        let n = recv_all(&mut b, one.as_raw_fd(), false, 1);
        assert_eq!(received(&b, n), vec![(b"e".to_vec(), None)]);
        // More than a whole batch: BATCH at once, then the rest.
        for i in 0..BATCH + 3 {
            client.send_to(&[i as u8; 3], to_one).unwrap();
        }
        let n = recv_all(&mut b, one.as_raw_fd(), false, BATCH);
        assert_eq!(n, BATCH);
        assert!(received(&b, n).iter().enumerate().all(|(i, (d, _))| *d == [i as u8; 3]));
        let n = recv_all(&mut b, one.as_raw_fd(), false, 3);
        let rest: Vec<Vec<u8>> = received(&b, n).into_iter().map(|(d, _)| d).collect();
        assert_eq!(rest, (BATCH..BATCH + 3).map(|i| vec![i as u8; 3]).collect::<Vec<_>>());
    }
}
