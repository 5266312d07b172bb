//! A fake upstream resolver for the resolver bench: one UDP socket on 127.0.0.1 served by
//! one thread with recvmmsg/sendmmsg in batches of 64, so that a single core answers far
//! faster than any forwarder can send. Every A question gets one A record (TTL 3600, an
//! address in 198.18.0.0/15 drawn from the name, so the same name always gets the same
//! address whoever forwards it); any other question an empty NOERROR. It counts what it
//! receives: the bench's proof that a query was (or was not) forwarded.
#![allow(dead_code)]

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

const BATCH: usize = 64;
/// The TTL of every answer: long enough that nothing cached expires during a bench.
pub const TTL: u32 = 3600;

pub struct FakeUpstream {
    pub port: u16,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeUpstream {
    /// Binds a free port on 127.0.0.1 and serves it from a thread pinned to `cpu`.
    pub fn start(cpu: usize) -> FakeUpstream {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind the fake upstream");
        let port = sock.local_addr().unwrap().port();
        // Wakes up now and then to see whether it should stop.
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        // A deep queue: a burst of forwarded queries must not be dropped here, or the
        // forwarder's timeouts would be measured instead of its work. The kernel caps
        // it at net.core.rmem_max.
        let size: libc::c_int = 8 << 20;
        // SAFETY: setsockopt on our own socket with a c_int option value.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            );
        }
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::spawn(move || {
                crate::procs::pin_to(cpu);
                serve(&sock, &received, &stop);
            })
        };
        FakeUpstream {
            port,
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// Queries received so far.
    pub fn queries(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Buffers and message headers for one batch each way, allocated once; the headers
/// point into the vectors' heap storage, which never moves.
struct Buffers {
    rx: Vec<[u8; 1500]>,
    tx: Vec<[u8; 1500]>,
    addrs: Vec<libc::sockaddr_storage>,
    rx_iov: Vec<libc::iovec>,
    tx_iov: Vec<libc::iovec>,
    rx_hdrs: Vec<libc::mmsghdr>,
    tx_hdrs: Vec<libc::mmsghdr>,
}

fn serve(sock: &UdpSocket, received: &AtomicU64, stop: &AtomicBool) {
    let fd = sock.as_raw_fd();
    // SAFETY (all zeroed values below): sockaddr_storage and mmsghdr are plain C structs
    // for which all-zero bytes are valid.
    let mut b = Buffers {
        rx: vec![[0u8; 1500]; BATCH],
        tx: vec![[0u8; 1500]; BATCH],
        addrs: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
        rx_iov: Vec::with_capacity(BATCH),
        tx_iov: Vec::with_capacity(BATCH),
        rx_hdrs: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
        tx_hdrs: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
    };
    for (rx, tx) in b.rx.iter_mut().zip(b.tx.iter_mut()) {
        b.rx_iov.push(libc::iovec {
            iov_base: rx.as_mut_ptr().cast(),
            iov_len: rx.len(),
        });
        b.tx_iov.push(libc::iovec {
            iov_base: tx.as_mut_ptr().cast(),
            iov_len: 0,
        });
    }
    for (h, v) in b.rx_hdrs.iter_mut().zip(b.rx_iov.iter_mut()) {
        h.msg_hdr.msg_iov = v;
        h.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        for (h, a) in b.rx_hdrs.iter_mut().zip(b.addrs.iter_mut()) {
            h.msg_hdr.msg_name = (a as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_len = 0;
        }
        // SAFETY: the headers point at live buffers and address slots of `b`. Blocks
        // for the first datagram (up to the read timeout), then takes what is queued.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                b.rx_hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        let n = n as usize;
        received.fetch_add(n as u64, Ordering::Relaxed);
        let mut k = 0;
        for i in 0..n {
            let len = b.rx_hdrs[i].msg_len as usize;
            let reply_len = reply(&b.rx[i][..len], &mut b.tx[k]);
            if reply_len == 0 {
                continue;
            }
            b.tx_iov[k].iov_base = b.tx[k].as_mut_ptr().cast();
            b.tx_iov[k].iov_len = reply_len;
            let h = &mut b.tx_hdrs[k];
            h.msg_hdr.msg_iov = &mut b.tx_iov[k];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = b.rx_hdrs[i].msg_hdr.msg_namelen;
            k += 1;
        }
        let mut sent = 0;
        while sent < k {
            // SAFETY: the first k headers point at live replies and source addresses.
            let r = unsafe { libc::sendmmsg(fd, b.tx_hdrs[sent..].as_mut_ptr(), (k - sent) as u32, 0) };
            if r <= 0 {
                // The one at the head failed (its sender gone): skip it, send the rest.
                sent += 1;
            } else {
                sent += r as usize;
            }
        }
    }
}

fn u16_at(m: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([m[at], m[at + 1]])
}

/// Writes the reply to query `q` into `out`; its length, or 0 for anything that is not a
/// one-question query (dropped).
fn reply(q: &[u8], out: &mut [u8; 1500]) -> usize {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16_at(q, 4) != 1 {
        return 0;
    }
    // The question name: plain labels (a query's first name is never compressed).
    let mut at = 12;
    let mut hash: u32 = 0x811c_9dc5;
    loop {
        let Some(&len) = q.get(at) else { return 0 };
        let len = len as usize;
        if len == 0 {
            at += 1;
            break;
        }
        if len & 0xc0 != 0 || at + 1 + len > q.len() {
            return 0;
        }
        for &c in &q[at + 1..at + 1 + len] {
            hash = (hash ^ c.to_ascii_lowercase() as u32).wrapping_mul(0x0100_0193);
        }
        at += 1 + len;
    }
    if at + 4 > q.len() || at + 4 + 16 + 11 > out.len() {
        return 0;
    }
    let qtype = u16_at(q, at);
    at += 4;
    out[..at].copy_from_slice(&q[..at]);
    // QR, AA, the query's RD; RA, NOERROR.
    out[2] = 0x80 | 0x04 | (q[2] & 0x01);
    out[3] = 0x80;
    let answers: u16 = if qtype == 1 { 1 } else { 0 };
    let opt = u16_at(q, 10) > 0;
    out[6..8].copy_from_slice(&answers.to_be_bytes());
    out[8..10].copy_from_slice(&0u16.to_be_bytes());
    out[10..12].copy_from_slice(&u16::from(opt).to_be_bytes());
    if answers == 1 {
        let ip = u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + (hash & 0x1_ffff);
        // Owner: a pointer to the question name; A IN TTL, 4 bytes of address.
        out[at..at + 12].copy_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        out[at + 6..at + 10].copy_from_slice(&TTL.to_be_bytes());
        out[at + 12..at + 16].copy_from_slice(&ip.to_be_bytes());
        at += 16;
    }
    if opt {
        // The query's OPT stands in for EDNS support: answer with one, 1232 bytes.
        out[at..at + 11].copy_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        at += 11;
    }
    at
}
