//! The fake API misbehaving on purpose ([`Abuse`]): what a broken or hostile API
//! server, or a proxy in front of one, can send: huge lines, endless streams, malformed
//! JSON and chunking, silence. And watch streams written by the test itself
//! ([`Inject`]).

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Shared;
use super::serve::{self, HttpRequest};

/// A watch stream written by a test: it writes chunks (see [`chunk`]) on the stream after
/// the `200` head; the terminating chunk follows.
pub type Inject = Box<dyn FnOnce(&mut TcpStream) -> io::Result<()> + Send>;

/// One HTTP chunk of `data`.
pub fn chunk(out: &mut TcpStream, data: &[u8]) -> io::Result<()> {
    out.write_all(&chunk_of(data))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abuse {
    /// Pass everything to the fake API.
    None,
    /// Watches get one 50 MB event line.
    HugeWatchLine,
    /// Watches get a 410 (relist); lists get a 50 MB item (an ignored field) and an item
    /// with a 50 MB name, then the body breaks off.
    HugeListItem,
    /// Watches get bookmarks and garbage lines, as fast as they are read, without end.
    EndlessWatch,
    /// Watches get a 410; lists get new, valid objects without end.
    EndlessList,
    /// Malformed watch lines, broken chunking, HTML, lists with broken or mistyped JSON.
    Malformed,
    /// Requests never answered, or watch streams that trickle one byte every 200 ms.
    Slow,
}

/// The size of the huge lines and fields.
const HUGE: usize = 50 << 20;

/// A valid object of `kind` named `junk-N` (namespace `junk`).
fn junk(kind: &str, n: u64) -> String {
    let (a, b) = ((n >> 8) & 0xff, n & 0xff);
    match kind {
        "Service" => format!(
            r#"{{"kind":"Service","apiVersion":"v1","metadata":{{"name":"junk-{n}","namespace":"junk","resourceVersion":"1","uid":"u{n}"}},"spec":{{"type":"ClusterIP","clusterIP":"10.200.{a}.{b}","clusterIPs":["10.200.{a}.{b}"],"ports":[{{"name":"http","port":80,"protocol":"TCP"}}]}}}}"#
        ),
        "EndpointSlice" => format!(
            r#"{{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","metadata":{{"name":"junk-{n}","namespace":"junk","resourceVersion":"1","labels":{{"kubernetes.io/service-name":"junk-{n}"}}}},"addressType":"IPv4","endpoints":[{{"addresses":["10.201.{a}.{b}"],"conditions":{{"ready":true}}}}],"ports":[{{"name":"http","port":80,"protocol":"TCP"}}]}}"#
        ),
        _ => format!(r#"{{"kind":"{kind}","apiVersion":"v1","metadata":{{"name":"junk-{n}","resourceVersion":"1"}}}}"#),
    }
}

const CHUNKED_200: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
const PLAIN_200: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";

fn chunk_of(data: &[u8]) -> Vec<u8> {
    let mut c = format!("{:x}\r\n", data.len()).into_bytes();
    c.extend_from_slice(data);
    c.extend_from_slice(b"\r\n");
    c
}

fn gone_410() -> Vec<u8> {
    let body = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version","reason":"Expired","code":410}"#;
    format!(
        "HTTP/1.1 410 Gone\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const GARBAGE: [&str; 9] = [
    "not json at all",
    r#"{"type":"ADDED"}"#,
    r#"{"type":"MODIFIED","object":[]}"#,
    r#"{"type":"NOPE","object":{}}"#,
    "{}",
    "[1,2,3]",
    r#"{"type":"ADDED","object":{"kind":"Service","metadata":{"name":42}}}"#,
    r#"{"type":"DELETED","object":{"kind":"Service","metadata":{"namespace":"team-a"}}}"#,
    r#"{"type":"ADDED","object":{"kind":"Service","metadata":{"name":"x","namespace":"team-a"},"spec":{"clusterIP":"not-an-ip","ports":"80"}}}"#,
];

/// Writes `len` bytes of `x` in 1 MiB pieces (chunked or not) while the generation lasts.
fn pad(sh: &Bad<'_>, s: &mut TcpStream, len: usize, chunked: bool, generation: u64) -> io::Result<()> {
    let piece = vec![b'x'; 1 << 20];
    let mut left = len;
    while left > 0 {
        if !sh.still(generation) {
            return Err(io::Error::other("mode changed"));
        }
        let n = left.min(piece.len());
        if chunked {
            sh.wrote(s, &chunk_of(&piece[..n]))?;
        } else {
            sh.wrote(s, &piece[..n])?;
        }
        left -= n;
    }
    Ok(())
}

/// Waits until the mode changes (a held request or stream).
fn hold(sh: &Bad<'_>, generation: u64, limit: Duration) {
    let end = Instant::now() + limit;
    while sh.still(generation) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An abusive response in progress: the generation it belongs to and what it carries.
struct Bad<'a> {
    shared: &'a Shared,
    rv: u64,
}

impl Bad<'_> {
    /// Whether the behaviour this response belongs to is still in force.
    fn still(&self, generation: u64) -> bool {
        let st = self.shared.lock();
        !st.stopped && st.abuse.1 == generation
    }

    fn wrote(&self, s: &mut TcpStream, data: &[u8]) -> io::Result<()> {
        s.write_all(data)?;
        self.shared.abuse_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Answers one request as `mode` says, then the connection closes. The responses are
/// numbered (from 0) to vary the malformed ones.
pub(super) fn respond(shared: &Shared, out: &mut TcpStream, mode: Abuse, generation: u64, rv: u64, req: &HttpRequest) {
    let n = serve::count_abuse(shared);
    let watch = req.query.split('&').any(|p| p == "watch=1" || p == "watch=true");
    let bad = Bad { shared, rv };
    let _ = abuse(&bad, out, mode, generation, watch, &req.path, n);
    let _ = out.shutdown(Shutdown::Both);
}

/// Hands an injected stream out: the `200` head, what `inject` writes, the end. The
/// flag is set before the first byte, so that a client that has read the stream sees it.
pub(super) fn inject(shared: &Shared, out: &mut TcpStream, inject: Inject) {
    shared.injected.store(true, Ordering::Release);
    let _ = out.write_all(CHUNKED_200.as_bytes());
    let _ = inject(out);
    let _ = out.write_all(b"0\r\n\r\n");
    let _ = out.shutdown(Shutdown::Both);
}

fn abuse(
    sh: &Bad<'_>,
    s: &mut TcpStream,
    mode: Abuse,
    generation: u64,
    watch: bool,
    path: &str,
    n: u64,
) -> io::Result<()> {
    let (kind, api_version) = serve::abused_resource(path);
    let rv = sh.rv;
    let list_head = format!(
        r#"{{"kind":"{kind}List","apiVersion":"{api_version}","metadata":{{"resourceVersion":"{rv}"}},"items":["#
    );
    let limit = Duration::from_secs(60);
    match (mode, watch) {
        (Abuse::None, _) => Ok(()),
        (Abuse::HugeWatchLine, true) => {
            sh.wrote(s, CHUNKED_200.as_bytes())?;
            let start = format!(
                r#"{{"type":"MODIFIED","object":{{"kind":"{kind}","apiVersion":"{api_version}","metadata":{{"name":"huge","namespace":"default","resourceVersion":"{rv}","annotations":{{"pad":""#
            );
            sh.wrote(s, &chunk_of(start.as_bytes()))?;
            pad(sh, s, HUGE, true, generation)?;
            sh.wrote(s, &chunk_of(b"\"}}}}\n"))?;
            sh.wrote(s, b"0\r\n\r\n")
        }
        (Abuse::HugeListItem | Abuse::EndlessList, true) => sh.wrote(s, &gone_410()),
        (Abuse::HugeListItem, false) => {
            sh.wrote(s, PLAIN_200.as_bytes())?;
            sh.wrote(s, list_head.as_bytes())?;
            // An item with a huge field the decoder reads (the name)...
            sh.wrote(
                s,
                format!(r#"{{"kind":"{kind}","apiVersion":"{api_version}","metadata":{{"name":""#).as_bytes(),
            )?;
            pad(sh, s, HUGE, false, generation)?;
            sh.wrote(s, br#"","namespace":"default"}},"#)?;
            // ...and one with a huge field it skips.
            let ignored = format!(
                r#"{{"kind":"{kind}","apiVersion":"{api_version}","metadata":{{"name":"huge-a","namespace":"default","annotations":{{"pad":""#
            );
            sh.wrote(s, ignored.as_bytes())?;
            pad(sh, s, HUGE, false, generation)?;
            sh.wrote(s, b"\"}}}")
            // The body breaks off here: the list never completes.
        }
        (Abuse::EndlessWatch, true) => {
            sh.wrote(s, CHUNKED_200.as_bytes())?;
            let bookmark = format!(
                r#"{{"type":"BOOKMARK","object":{{"kind":"{kind}","apiVersion":"{api_version}","metadata":{{"resourceVersion":"{rv}"}}}}}}"#
            );
            let mut block = String::new();
            while block.len() < 64 << 10 {
                block.push_str(&bookmark);
                block.push('\n');
                for g in GARBAGE {
                    block.push_str(g);
                    block.push('\n');
                }
                block.push('\n');
            }
            let c = chunk_of(block.as_bytes());
            let end = Instant::now() + limit;
            while sh.still(generation) && Instant::now() < end {
                sh.wrote(s, &c)?;
            }
            Ok(())
        }
        (Abuse::EndlessList, false) => {
            sh.wrote(s, CHUNKED_200.as_bytes())?;
            sh.wrote(s, &chunk_of(list_head.as_bytes()))?;
            let end = Instant::now() + limit;
            let mut i = 0u64;
            while sh.still(generation) && Instant::now() < end {
                let mut block = String::new();
                for _ in 0..64 {
                    if i > 0 {
                        block.push(',');
                    }
                    block.push_str(&junk(kind, i));
                    i += 1;
                }
                sh.wrote(s, &chunk_of(block.as_bytes()))?;
                sh.shared.abuse_items.fetch_add(64, Ordering::Relaxed);
            }
            Ok(())
        }
        (Abuse::Malformed, true) => match n % 4 {
            // Garbage lines, then a clean end after more than a second.
            0 | 3 => {
                sh.wrote(s, CHUNKED_200.as_bytes())?;
                for _ in 0..20 {
                    for g in GARBAGE {
                        sh.wrote(s, &chunk_of(format!("{g}\n").as_bytes()))?;
                    }
                }
                hold(sh, generation, Duration::from_millis(1200));
                sh.wrote(s, b"0\r\n\r\n")
            }
            // A 410 ERROR event: the client lists (and gets a broken list).
            1 => {
                sh.wrote(s, CHUNKED_200.as_bytes())?;
                let e = r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old","reason":"Expired","code":410}}"#;
                sh.wrote(s, &chunk_of(format!("{e}\n").as_bytes()))?;
                sh.wrote(s, b"0\r\n\r\n")
            }
            // Broken chunked framing.
            _ => {
                sh.wrote(s, CHUNKED_200.as_bytes())?;
                sh.wrote(s, b"zz\r\n{\"type\":\"ADDED\"}\n\r\n")
            }
        },
        (Abuse::Malformed, false) => match n % 3 {
            0 => {
                sh.wrote(s, PLAIN_200.as_bytes())?;
                sh.wrote(s, list_head.as_bytes())?;
                sh.wrote(s, br#"{"metadata":{"name":"x""#)
            }
            1 => {
                sh.wrote(s, PLAIN_200.as_bytes())?;
                sh.wrote(
                    s,
                    format!(r#"{{"kind":"{kind}List","metadata":"nope","items":{{"a":1}}}}"#).as_bytes(),
                )
            }
            _ => {
                sh.wrote(s, PLAIN_200.as_bytes())?;
                sh.wrote(s, b"<html><body>502 Bad Gateway</body></html>")
            }
        },
        (Abuse::Slow, true) if n.is_multiple_of(2) => {
            sh.wrote(s, CHUNKED_200.as_bytes())?;
            let line = format!(r#"{{"type":"BOOKMARK","object":{{"metadata":{{"resourceVersion":"{rv}"}}}}}}"#);
            let end = Instant::now() + limit;
            let mut i = 0;
            while sh.still(generation) && Instant::now() < end {
                let b = line.as_bytes()[i % line.len()];
                sh.wrote(s, &chunk_of(&[b]))?;
                i += 1;
                hold(sh, generation, Duration::from_millis(200));
            }
            Ok(())
        }
        (Abuse::Slow, _) => {
            hold(sh, generation, limit);
            Ok(())
        }
        // Lists while watches are abused: pass through would need the connection; refuse.
        (Abuse::HugeWatchLine | Abuse::EndlessWatch, false) => sh.wrote(s, &gone_410()),
    }
}
