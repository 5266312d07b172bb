//! Listening sockets that outlive the process: those systemd passes in (socket
//! activation, `LISTEN_FDS`), and those a running clusterdns hands to its successor over
//! a Unix socket (`-handover PATH`, file descriptors passed with SCM_RIGHTS), so that a
//! restart, an upgrade or a replaced pod loses no query.
//!
//! ```text
//!  new process                                  old process (listening on PATH)
//!   connect(PATH) ───────── HELLO v1, pid ────────▶ peer uid checked
//!                 ◀──── OFFER: count, per socket ─── its DNS sockets (UDP per worker, TCP,
//!                        kind, address; then the      TLS) and HTTP listeners, dup'd
//!                        descriptors, 200 a message
//!   build, start workers on them (binding what is
//!   missing, closing what it does not want), READY=1,
//!   wait until every plugin is ready
//!   bind PATH.new, rename over PATH
//!                 ────────────── DRAIN ───────────▶ stops its HTTP endpoints, its workers
//!                 ◀────────────── OK ─────────────── answer what they read, send the
//!                                                    answers in progress on TCP
//!                                                    connections (a new query on one
//!                                                    closes it), exit
//! ```
//!
//! A SIGTERM or SIGINT to the new process before its DRAIN: it exits without one, the
//! old process serves on. The new process dying after its DRAIN: nobody serves until
//! it is started again (the old one does not take its sockets back). A process that
//! stops (SIGTERM) refuses a successor (`ERR stopping`).
//!
//! Both processes read the same sockets (the same kernel objects, not two sockets in a
//! SO_REUSEPORT group), so a datagram queued when the old one stops reading is read by
//! the new one: nothing queued is lost, whenever the old one exits or is killed.
//!
//! Bounds: at most [`MAX_SOCKETS`] sockets, frames of at most [`MAX_FRAME`] bytes, every
//! read before the new process's DRAIN under a timeout. Only a peer with this process's
//! user ID (or root) is served or believed.

use std::io::{self, Read, Write};
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::process::ProcessState;
use crate::server::socket::{self, Kind};

/// The protocol version this build speaks.
pub const VERSION: u16 = 1;
const MAGIC: &[u8; 6] = b"CDNSHO";
/// Most sockets one hand-over carries.
pub const MAX_SOCKETS: usize = 4096;
/// Largest framed message.
pub const MAX_FRAME: usize = 1 << 20;
/// Descriptors per message (the kernel's limit is 253).
const FDS_PER_MESSAGE: usize = 200;
/// How long each step before the DRAIN may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the old process waits for the new one to become ready (it may be waiting
/// on the kubernetes plugin's first sync).
pub const READY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the new process waits for its own readiness before it sends DRAIN anyway:
/// less than [`READY_TIMEOUT`], so that the predecessor is still there to hear it.
pub const READY_WAIT: Duration = Duration::from_secs(600 - 2 * 10);
/// Bytes per socket in an OFFER.
const ENTRY: usize = 2 + 2 * ADDR;
const ADDR: usize = 1 + 16 + 2;

/// What a listening socket is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Dns(Kind),
    /// An HTTP endpoint (`health`, `ready`, `prometheus`).
    Http,
}

/// A socket this process serves, as it would hand it on: what it was asked to listen
/// on (the Corefile's address, with whether it has UDP: not DNS over TLS), and a
/// duplicate of the descriptor.
pub struct Held {
    pub role: Role,
    pub requested: (SocketAddr, bool),
    pub fd: OwnedFd,
}

/// What a process holds to hand on: kept in [`ProcessState::listening`] by the
/// workers (DNS) and the controller (HTTP).
#[derive(Default)]
pub struct Listening {
    pub dns: Vec<Held>,
    pub http: Vec<Held>,
}

/// A socket passed in.
pub struct Passed {
    pub role: Role,
    /// Where it is bound.
    pub local: SocketAddr,
    /// The address a predecessor's Corefile asked for (`None` from systemd).
    pub requested: Option<(SocketAddr, bool)>,
    pub fd: OwnedFd,
    /// systemd holds it whatever this process does: keep it for a later reload that
    /// asks for its address again.
    pub keep: bool,
}

/// Sockets passed in, taken by address as the configuration asks for them.
#[derive(Default)]
pub struct Pool {
    pub sockets: Vec<Passed>,
}

impl Pool {
    fn matches(p: &Passed, role: Role, want: (SocketAddr, bool)) -> bool {
        if p.role != role {
            return false;
        }
        match p.requested {
            Some(r) => r == want,
            None => p.local == want.0 || (want.0.port() == 0 && p.local.ip() == want.0.ip()),
        }
    }

    /// The sockets passed in for `want` in `role` (duplicates of those kept, the others
    /// themselves).
    pub fn take(&mut self, role: Role, want: (SocketAddr, bool)) -> io::Result<Vec<OwnedFd>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.sockets.len() {
            if Pool::matches(&self.sockets[i], role, want) {
                if self.sockets[i].keep {
                    out.push(socket::dup(self.sockets[i].fd.as_raw_fd())?);
                } else {
                    out.push(self.sockets.swap_remove(i).fd);
                    continue;
                }
            }
            i += 1;
        }
        Ok(out)
    }

    /// Closes what no listener took (a predecessor's sockets for addresses this
    /// configuration does not have: the predecessor answers what is queued on them
    /// before it exits), and says what systemd passed that nothing uses.
    pub fn close_unused(&mut self, used: &[(Role, (SocketAddr, bool))]) {
        // Linear: what `matches` compares, in sets.
        let exact: std::collections::HashSet<(u8, (SocketAddr, bool))> =
            used.iter().map(|(r, w)| (role_byte(*r), *w)).collect();
        let addrs: std::collections::HashSet<(u8, SocketAddr)> =
            used.iter().map(|(r, w)| (role_byte(*r), w.0)).collect();
        let any_port: std::collections::HashSet<(u8, IpAddr)> = used
            .iter()
            .filter(|(_, w)| w.0.port() == 0)
            .map(|(r, w)| (role_byte(*r), w.0.ip()))
            .collect();
        self.sockets.retain(|p| {
            let role = role_byte(p.role);
            let wanted = match p.requested {
                Some(r) => exact.contains(&(role, r)),
                None => addrs.contains(&(role, p.local)) || any_port.contains(&(role, p.local.ip())),
            };
            if !wanted {
                if p.keep {
                    log::warn!(
                        "systemd passed a {:?} socket on {} that no server block listens on: queries sent there go unanswered",
                        p.role,
                        p.local
                    );
                } else {
                    log::info!("hand-over: not taking {:?} {} (not in this Corefile)", p.role, p.local);
                }
            }
            p.keep
        });
    }

    /// Moves the sockets of `role` out into a pool of their own.
    pub fn split(&mut self, role: Role) -> Pool {
        let (theirs, ours) = std::mem::take(&mut self.sockets)
            .into_iter()
            .partition(|p| p.role == role);
        self.sockets = ours;
        Pool { sockets: theirs }
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }
}

// ------------------------------------------------------------------------------------
// systemd's socket activation

/// Most descriptors taken from `LISTEN_FDS`.
pub const MAX_LISTEN_FDS: usize = 4096;

/// The sockets systemd passed (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`, as
/// sd_listen_fds(3) reads them), starting at descriptor 3. The variables are removed
/// from the environment. None passed (or passed to another process): an empty pool.
/// A descriptor that is not a UDP socket or a listening TCP socket is an error.
pub fn from_systemd() -> Result<Pool, String> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    // SAFETY: called by main before any other thread exists.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    parse_listen_fds(pid.as_deref(), fds.as_deref(), names.as_deref(), std::process::id())
}

fn parse_listen_fds(pid: Option<&str>, fds: Option<&str>, names: Option<&str>, me: u32) -> Result<Pool, String> {
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(Pool::default());
    };
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| format!("LISTEN_PID={pid:?}: not a process ID"))?;
    if pid != me {
        // Meant for another process (a wrapper that did not clear it).
        return Ok(Pool::default());
    }
    let n: usize = fds
        .trim()
        .parse()
        .map_err(|_| format!("LISTEN_FDS={fds:?}: not a count"))?;
    if n > MAX_LISTEN_FDS {
        return Err(format!("LISTEN_FDS={n}: more than {MAX_LISTEN_FDS}"));
    }
    let names: Vec<&str> = names.map(|s| s.split(':').collect()).unwrap_or_default();
    let mut pool = Pool::default();
    for i in 0..n {
        let raw = (3 + i) as RawFd;
        let name = names.get(i).copied().unwrap_or("unknown");
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
            return Err(format!("LISTEN_FDS: descriptor {raw} ({name}) is not open"));
        }
        // SAFETY: systemd passed descriptors 3..3+LISTEN_FDS to this process, for it to
        // own; nothing else in the process refers to them.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Not inherited by what this process runs (systemd passes them without
        // FD_CLOEXEC, for the process it starts).
        // SAFETY: F_SETFD on a descriptor this process owns.
        if unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(format!(
                "LISTEN_FDS: descriptor {raw} ({name}): FD_CLOEXEC: {}",
                io::Error::last_os_error()
            ));
        }
        let (kind, local) =
            socket::inspect(fd.as_raw_fd()).map_err(|e| format!("LISTEN_FDS: descriptor {raw} ({name}): {e}"))?;
        log::info!("systemd passed {kind:?} {local} ({name}, descriptor {raw})");
        pool.sockets.push(Passed {
            role: Role::Dns(kind),
            local,
            requested: None,
            fd,
            keep: true,
        });
    }
    Ok(pool)
}

// ------------------------------------------------------------------------------------
// The wire

fn write_frame(s: &mut UnixStream, body: &[u8]) -> io::Result<()> {
    s.write_all(&(body.len() as u32).to_be_bytes())?;
    s.write_all(body)
}

fn read_frame(s: &mut UnixStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::other(format!(
            "a message of {len} bytes (at most {MAX_FRAME})"
        )));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(body)
}

fn put_addr(out: &mut Vec<u8>, a: SocketAddr) {
    let (family, ip) = match a.ip() {
        IpAddr::V4(v4) => (4u8, v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => (6u8, v6),
    };
    out.push(family);
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&a.port().to_be_bytes());
}

fn get_addr(b: &[u8]) -> Option<SocketAddr> {
    let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&b[1..17]).ok()?);
    let port = u16::from_be_bytes([b[17], b[18]]);
    match b[0] {
        4 => Some(SocketAddr::new(IpAddr::V4(ip.to_ipv4_mapped()?), port)),
        6 => Some(SocketAddr::new(IpAddr::V6(ip), port)),
        _ => None,
    }
}

fn role_byte(r: Role) -> u8 {
    match r {
        Role::Dns(Kind::Udp) => 0,
        Role::Dns(Kind::Tcp) => 1,
        Role::Http => 2,
    }
}

fn byte_role(b: u8) -> Option<Role> {
    match b {
        0 => Some(Role::Dns(Kind::Udp)),
        1 => Some(Role::Dns(Kind::Tcp)),
        2 => Some(Role::Http),
        _ => None,
    }
}

fn hello(pid: u32) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    b.extend_from_slice(&VERSION.to_be_bytes());
    b.extend_from_slice(&pid.to_be_bytes());
    b
}

/// (version, pid) from a HELLO or an OFFER's start.
fn read_hello(b: &[u8]) -> Result<(u16, u32), String> {
    if b.len() < 12 || &b[..6] != MAGIC {
        return Err("the peer is not a clusterdns hand-over (wrong greeting)".into());
    }
    Ok((
        u16::from_be_bytes([b[6], b[7]]),
        u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
    ))
}

/// The peer's user ID and process ID (SO_PEERCRED).
fn peer(s: &UnixStream) -> io::Result<(u32, i32)> {
    // SAFETY: all-zero is a valid ucred; getsockopt fills at most `len` bytes.
    let mut cred: libc::ucred = unsafe { zeroed() };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((cred.uid, cred.pid))
}

/// Refuses a peer running as another user than this process, unless it is root (a
/// process running as root too serves and believes only root: any other user who
/// could reach the path would otherwise take its sockets).
fn check_peer(s: &UnixStream) -> Result<i32, String> {
    let (uid, pid) = peer(s).map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if uid != me && uid != 0 {
        return Err(format!(
            "the peer (PID {pid}) runs as user {uid}, this process as {me}: refused"
        ));
    }
    Ok(pid)
}

fn send_fds(s: &UnixStream, fds: &[RawFd]) -> io::Result<()> {
    let byte = [b'F'];
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32) } as usize;
    let mut ctrl = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: byte.as_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    // SAFETY: the header points at `iov` and `ctrl`, which live across the call; the
    // CMSG macros stay within `ctrl` (sized by CMSG_SPACE for these descriptors).
    unsafe {
        let mut h: libc::msghdr = zeroed();
        h.msg_iov = &mut iov;
        h.msg_iovlen = 1;
        h.msg_control = ctrl.as_mut_ptr().cast();
        h.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(&h);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c) as *mut RawFd, fds.len());
        loop {
            if libc::sendmsg(s.as_raw_fd(), &h, libc::MSG_NOSIGNAL) >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Receives one message of descriptors (at most `FDS_PER_MESSAGE`).
fn recv_fds(s: &UnixStream, out: &mut Vec<OwnedFd>) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let space = unsafe { libc::CMSG_SPACE((FDS_PER_MESSAGE * size_of::<RawFd>()) as u32) } as usize;
    let mut ctrl = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: as in `send_fds`; the descriptors the kernel installed are owned at once.
    unsafe {
        let mut h: libc::msghdr = zeroed();
        h.msg_iov = &mut iov;
        h.msg_iovlen = 1;
        h.msg_control = ctrl.as_mut_ptr().cast();
        h.msg_controllen = space as _;
        let n = loop {
            let n = libc::recvmsg(s.as_raw_fd(), &mut h, libc::MSG_CMSG_CLOEXEC);
            if n >= 0 {
                break n;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let mut c = libc::CMSG_FIRSTHDR(&h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let len = (*c).cmsg_len as usize - (data as usize - c as usize);
                for i in 0..len / size_of::<RawFd>() {
                    out.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&h, c);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection",
            ));
        }
        if h.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other("descriptors cut short (MSG_CTRUNC)"));
        }
        if byte[0] != b'F' {
            return Err(io::Error::other("a descriptor message without its marker"));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------
// The new process's side

/// A hand-over in progress: the sockets taken, and the connection to the predecessor
/// that will be told to drain.
pub struct Taken {
    stream: UnixStream,
    pub peer_pid: i32,
    pub pool: Pool,
}

/// Connects to `path`. Nothing listening there (no file, or a stale one): `Ok(None)`,
/// bind as usual. A clusterdns there: its sockets. Anything else is an error (the
/// caller exits rather than serve next to a process it cannot stop).
pub fn take(path: &Path) -> Result<Option<Taken>, String> {
    let mut stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ECONNREFUSED)) => return Ok(None),
        Err(e) => return Err(format!("hand-over: connect {}: {e}", path.display())),
    };
    let fail = |e: String| format!("hand-over from {}: {e}", path.display());
    let peer_pid = check_peer(&stream).map_err(fail)?;
    stream
        .set_read_timeout(Some(STEP_TIMEOUT))
        .and_then(|_| stream.set_write_timeout(Some(STEP_TIMEOUT)))
        .map_err(|e| fail(e.to_string()))?;
    write_frame(&mut stream, &hello(std::process::id())).map_err(|e| fail(format!("sending the greeting: {e}")))?;
    let offer = read_frame(&mut stream).map_err(|e| fail(format!("reading the offer: {e}")))?;
    if let Some(err) = offer.strip_prefix(b"ERR ") {
        return Err(fail(format!("refused: {}", String::from_utf8_lossy(err))));
    }
    let (version, _) = read_hello(&offer).map_err(fail)?;
    if version != VERSION {
        return Err(fail(format!(
            "version mismatch: the running process speaks hand-over version {version}, this one {VERSION}"
        )));
    }
    if offer.len() < 16 {
        return Err(fail("a short offer".into()));
    }
    let count = u32::from_be_bytes([offer[12], offer[13], offer[14], offer[15]]) as usize;
    if count > MAX_SOCKETS || offer.len() != 16 + count * ENTRY {
        return Err(fail(format!("an offer of {count} sockets in {} bytes", offer.len())));
    }
    let mut fds = Vec::with_capacity(count);
    // The peer sends `count` descriptors in messages of FDS_PER_MESSAGE: one more
    // message than that (one without descriptors, say) is a broken peer, not a wait.
    for _ in 0..count.div_ceil(FDS_PER_MESSAGE) {
        if fds.len() >= count {
            break;
        }
        recv_fds(&stream, &mut fds).map_err(|e| fail(format!("receiving the sockets: {e}")))?;
    }
    if fds.len() != count {
        return Err(fail(format!("{} descriptors for {count} sockets", fds.len())));
    }
    let mut pool = Pool::default();
    for (i, fd) in fds.into_iter().enumerate() {
        let e = &offer[16 + i * ENTRY..16 + (i + 1) * ENTRY];
        let role = byte_role(e[0]).ok_or_else(|| fail(format!("socket {i}: unknown role {}", e[0])))?;
        let requested = get_addr(&e[2..2 + ADDR]).ok_or_else(|| fail(format!("socket {i}: bad address")))?;
        let (kind, local) = socket::inspect(fd.as_raw_fd()).map_err(|e| fail(format!("socket {i}: {e}")))?;
        let fits = match role {
            Role::Dns(k) => k == kind,
            Role::Http => kind == Kind::Tcp,
        };
        if !fits {
            return Err(fail(format!("socket {i}: announced as {role:?}, is {kind:?} {local}")));
        }
        pool.sockets.push(Passed {
            role,
            local,
            requested: Some((requested, e[1] != 0)),
            fd,
            keep: false,
        });
    }
    Ok(Some(Taken { stream, peer_pid, pool }))
}

impl Taken {
    /// Once this process serves: takes `path` over (a new listener renamed over it, so
    /// that it always names a live process) and tells the predecessor to drain and
    /// exit. Returns the listener for [`serve`].
    pub fn release(mut self, path: &Path) -> Result<UnixListener, String> {
        let listener = listen_at(path);
        let told = write_frame(&mut self.stream, b"DRAIN").and_then(|_| read_frame(&mut self.stream));
        match told {
            Ok(b) if b == b"OK" => log::info!(
                "hand-over: PID {} answers what it has read, finishes its TCP connections and exits",
                self.peer_pid
            ),
            Ok(other) => log::warn!(
                "hand-over: PID {} answered {:?} to DRAIN",
                self.peer_pid,
                String::from_utf8_lossy(&other)
            ),
            Err(e) => log::warn!("hand-over: telling PID {} to drain: {e}", self.peer_pid),
        }
        listener
    }
}

/// Listens on `path`: binds `PATH.new.PID`, makes it private to this user, renames it
/// over `path` (atomic: `path` names the old process until the new one serves).
pub fn listen_at(path: &Path) -> Result<UnixListener, String> {
    if path.as_os_str().len() > 100 {
        return Err(format!(
            "hand-over: {}: longer than a Unix socket path may be",
            path.display()
        ));
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(format!("hand-over: {} exists and is not a socket", path.display()));
        }
    }
    let mut tmp = PathBuf::from(path);
    tmp.set_file_name(format!(
        "{}.new.{}",
        path.file_name()
            .map_or_else(|| "handover".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    // Created private (no moment when another user may connect), then made so
    // explicitly. umask is the process's: restored at once.
    // SAFETY: umask cannot fail.
    let mask = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(&tmp);
    unsafe { libc::umask(mask) };
    let listener = bound.map_err(|e| format!("hand-over: bind {}: {e}", tmp.display()))?;
    let done = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("hand-over: listen on {}: {e}", path.display()));
    }
    log::info!("hand-over: listening on {}", path.display());
    Ok(listener)
}

// ------------------------------------------------------------------------------------
// The old process's side

/// Serves hand-overs on `listener` in a thread of its own: a successor gets this
/// process's sockets; when it says DRAIN, `drain` is sent and the thread ends (the
/// listener closed). A successor that fails or goes away leaves this process serving.
pub fn serve(listener: UnixListener, process: Arc<ProcessState>, drain: Sender<()>) {
    let _ = std::thread::Builder::new().name("handover".into()).spawn(move || {
        for conn in listener.incoming() {
            let mut s = match conn {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("hand-over: accept: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            match offer(&mut s, &process) {
                Ok(pid) => {
                    let _ = drain.send(());
                    let _ = write_frame(&mut s, b"OK");
                    log::info!("hand-over: PID {pid} serves the sockets; draining and exiting");
                    return;
                }
                Err(e) => log::warn!("hand-over: {e}; still serving"),
            }
        }
    });
}

/// One successor: greeting, offer, then its DRAIN. Returns its PID once it asks.
fn offer(s: &mut UnixStream, process: &ProcessState) -> Result<i32, String> {
    let pid = match check_peer(s) {
        Ok(p) => p,
        Err(e) => {
            let _ = write_frame(s, format!("ERR {e}").as_bytes());
            return Err(e);
        }
    };
    s.set_read_timeout(Some(STEP_TIMEOUT))
        .and_then(|_| s.set_write_timeout(Some(STEP_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let hello_msg = read_frame(s).map_err(|e| format!("PID {pid}: reading its greeting: {e}"))?;
    let (version, _) = read_hello(&hello_msg).map_err(|e| format!("PID {pid}: {e}"))?;
    if version != VERSION {
        let e = format!("version mismatch: this process speaks hand-over version {VERSION}, PID {pid} {version}");
        let _ = write_frame(s, format!("ERR {e}").as_bytes());
        return Err(e);
    }
    let (mut body, fds) = {
        let l = process.listening.lock();
        // Stopping (SIGTERM): its sockets are about to close, or are closed. An offer
        // of none would have the successor bind beside sockets still open; it is told
        // to wait instead (it exits, and is started again once this process is gone).
        if process.stopping.load(Ordering::Acquire) {
            let e = "stopping: start again once it has exited".to_string();
            let _ = write_frame(s, format!("ERR {e}").as_bytes());
            return Err(format!("PID {pid}: refused, {e}"));
        }
        let all: Vec<&Held> = l.dns.iter().chain(l.http.iter()).take(MAX_SOCKETS).collect();
        let mut body = hello(std::process::id());
        body.extend_from_slice(&(all.len() as u32).to_be_bytes());
        let mut fds = Vec::with_capacity(all.len());
        for h in all {
            body.push(role_byte(h.role));
            body.push(h.requested.1 as u8);
            put_addr(&mut body, h.requested.0);
            put_addr(&mut body, socket::local_addr(h.fd.as_raw_fd()).unwrap_or(h.requested.0));
            fds.push(socket::dup(h.fd.as_raw_fd()).map_err(|e| format!("dup: {e}"))?);
        }
        (body, fds)
    };
    write_frame(s, &body).map_err(|e| format!("PID {pid}: sending the offer: {e}"))?;
    body.clear();
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    for chunk in raw.chunks(FDS_PER_MESSAGE) {
        send_fds(s, chunk).map_err(|e| format!("PID {pid}: sending the sockets: {e}"))?;
    }
    drop(fds);
    log::info!(
        "hand-over: gave {} sockets to PID {pid}; waiting for it to be ready",
        raw.len()
    );
    s.set_read_timeout(Some(READY_TIMEOUT)).map_err(|e| e.to_string())?;
    match read_frame(s) {
        Ok(b) if b == b"DRAIN" => Ok(pid),
        Ok(b) => Err(format!(
            "PID {pid} sent {:?} instead of DRAIN",
            String::from_utf8_lossy(&b)
        )),
        Err(e) => Err(format!("PID {pid} did not become ready ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_fds_for_another_process_or_absent_are_ignored() {
        assert!(parse_listen_fds(None, None, None, 7).unwrap().is_empty());
        assert!(parse_listen_fds(Some("8"), Some("2"), None, 7).unwrap().is_empty());
        assert!(parse_listen_fds(Some("7"), Some("0"), None, 7).unwrap().is_empty());
    }

    #[test]
    fn listen_fds_errors_are_clear() {
        let e = |pid, n| parse_listen_fds(Some(pid), Some(n), None, 7).err().unwrap();
        assert!(e("x", "1").contains("LISTEN_PID=\"x\""));
        assert!(e("7", "-1").contains("not a count"));
        assert!(e("7", "100000").contains("more than 4096"));
    }

    /// A peer that announces a socket, then sends messages without descriptors, is a
    /// clear error at once, not a loop (nor a wait for the step timeout).
    #[test]
    fn messages_without_descriptors_fail_the_take_at_once() {
        let dir = std::env::temp_dir().join(format!("cdns-ho-unit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("h.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let peer = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let _ = read_frame(&mut s).unwrap();
            let mut offer = hello(1);
            offer.extend_from_slice(&1u32.to_be_bytes());
            offer.extend_from_slice(&[0, 1]);
            put_addr(&mut offer, "127.0.0.1:53".parse().unwrap());
            put_addr(&mut offer, "127.0.0.1:53".parse().unwrap());
            write_frame(&mut s, &offer).unwrap();
            for _ in 0..50 {
                if s.write_all(b"F").is_err() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_secs(3));
        });
        let start = std::time::Instant::now();
        let e = take(&path).err().expect("an error");
        assert!(start.elapsed() < Duration::from_secs(2), "{e}");
        assert!(e.contains("0 descriptors for 1 sockets"), "{e}");
        peer.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn addresses_round_trip() {
        for a in ["127.0.0.1:53", "[::1]:5353", "0.0.0.0:0", "[fe80::1]:1"] {
            let a: SocketAddr = a.parse().unwrap();
            let mut b = Vec::new();
            put_addr(&mut b, a);
            assert_eq!(b.len(), ADDR);
            assert_eq!(get_addr(&b), Some(a));
        }
        assert!(read_hello(b"HTTP/1.1 200 OK\r\n").is_err());
        assert_eq!(read_hello(&hello(9)).unwrap(), (VERSION, 9));
    }
}
