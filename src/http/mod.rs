//! A small HTTP/1.1 server for `/health`, `/ready` and `/metrics`: one accepting
//! thread per address, one short-lived thread per connection (at most
//! [`MAX_CONNECTIONS`] at once), bounded request size and timeouts. It never touches a
//! worker: handlers read atomics and snapshots.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Connections served at once; more are closed without an answer.
pub const MAX_CONNECTIONS: usize = 32;
/// The largest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A request: what the handlers look at.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path without the query string.
    pub path: &'a str,
}

/// A response.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// What answers requests on one address.
pub type Handler = Arc<dyn Fn(&Request<'_>) -> Response + Send + Sync>;

/// A listening HTTP server; stopped (listener closed, thread joined) on drop.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` and serves it with `handler` on a thread of its own.
    pub fn start(addr: SocketAddr, name: &str, handler: Handler) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("http-{name}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if stopping.load(Ordering::Acquire) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    if active.load(Ordering::Acquire) >= MAX_CONNECTIONS {
                        continue; // dropped: closes the connection
                    }
                    active.fetch_add(1, Ordering::AcqRel);
                    let (handler, done) = (handler.clone(), active.clone());
                    let spawned = std::thread::Builder::new().name("http-conn".into()).spawn(move || {
                        let _ = serve(conn, &handler);
                        done.fetch_sub(1, Ordering::AcqRel);
                    });
                    if spawned.is_err() {
                        active.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            })?;
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the real port when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocked accept; it sees the flag and returns, closing the listener.
        let wake = match self.addr {
            SocketAddr::V4(a) if a.ip().is_unspecified() => SocketAddr::from(([127, 0, 0, 1], a.port())),
            SocketAddr::V6(a) if a.ip().is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port())),
            a => a,
        };
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request, answers it, closes.
fn serve(mut conn: TcpStream, handler: &Handler) -> io::Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let head_end = loop {
        if len == buf.len() {
            return respond(&mut conn, &Response::text(431, "request header too large\n"), false);
        }
        let n = conn.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        if let Some(i) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return respond(&mut conn, &Response::text(400, "bad request\n"), false);
    };
    let path = target.split('?').next().unwrap_or("");
    let resp = handler(&Request { method, path });
    respond(&mut conn, &resp, method == "HEAD")
}

fn respond(conn: &mut TcpStream, r: &Response, head_only: bool) -> io::Result<()> {
    let reason = match r.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    conn.write_all(head.as_bytes())?;
    if !head_only {
        conn.write_all(&r.body)?;
    }
    conn.flush()
}

/// `GET path` on `addr`: whether it answered 200 within `timeout`.
pub fn get_ok(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    let Ok(mut c) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(timeout));
    let _ = c.set_write_timeout(Some(timeout));
    if write!(c, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match c.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    head[..n].starts_with(b"HTTP/1.1 200") || head[..n].starts_with(b"HTTP/1.0 200")
}

/// Parses a CoreDNS-style listen address: `:8080`, `127.0.0.1:8181`, `[::1]:9153`,
/// `localhost:9153` (localhost means 127.0.0.1).
pub fn parse_listen(s: &str) -> Option<SocketAddr> {
    if let Some(port) = s.strip_prefix(':') {
        return Some(SocketAddr::from(([0, 0, 0, 0], port.parse().ok()?)));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        return Some(SocketAddr::from(([127, 0, 0, 1], port.parse().ok()?)));
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_and_stops() {
        let handler: Handler = Arc::new(|r: &Request<'_>| match r.path {
            "/health" => Response::text(200, "OK"),
            _ => Response::text(404, "404 page not found\n"),
        });
        let s = Server::start("127.0.0.1:0".parse().unwrap(), "test", handler).unwrap();
        let addr = s.addr();
        let r = get(addr, "/health?x=1");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nOK"), "{r}");
        assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
        drop(s);
        assert!(TcpStream::connect(addr).is_err(), "listener closed on drop");
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen(":8080"), Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(parse_listen("localhost:9153"), Some("127.0.0.1:9153".parse().unwrap()));
        assert_eq!(parse_listen("[::1]:8181"), Some("[::1]:8181".parse().unwrap()));
        assert_eq!(parse_listen("nonsense"), None);
    }
}
