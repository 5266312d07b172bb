//! systemd's notification protocol (sd_notify(3)), spoken directly: one datagram per
//! state change on the Unix socket named by `NOTIFY_SOCKET`, no libsystemd.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` (`READY=1`, `STOPPING=1`, ...) when systemd asked for notifications;
/// does nothing otherwise. Failures are logged, never fatal.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("sd_notify: {e}");
            return;
        }
    };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        // An abstract socket: the name is what follows the '@'.
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr)),
        None => sock.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        log::warn!("sd_notify {state:?} to {}: {e}", path.to_string_lossy());
    }
}

/// Whether `STOPPING=1` went out; guarded so that a watchdog ping cannot follow it. A
/// static because it describes the one process systemd watches (set once, at the end
/// of its life), like the `NOTIFY_SOCKET` it is about, not a configuration.
static STOPPED: parking_lot::Mutex<bool> = parking_lot::Mutex::new(false);

/// `STOPPING=1`: after it, no more watchdog pings.
pub fn stopping() {
    let mut stopped = STOPPED.lock();
    *stopped = true;
    notify("STOPPING=1");
}

/// `WATCHDOG=1`, unless the process already said it is stopping.
pub fn watchdog() {
    let stopped = STOPPED.lock();
    if !*stopped {
        notify("WATCHDOG=1");
    }
}

/// `RELOADING=1` with the monotonic timestamp systemd (253 and later) wants with it.
pub fn reloading() {
    // SAFETY: clock_gettime writes into the timespec it is given.
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let usec = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

/// The watchdog ping interval systemd asked for (half of `WATCHDOG_USEC`), if it
/// watches this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("clusterdns-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // SAFETY: only this test sets NOTIFY_SOCKET in this process.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        notify("READY=1");
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
