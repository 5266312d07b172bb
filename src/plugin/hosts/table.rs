//! A parsed hosts file: the lookup tables one query needs, built once per read of the
//! file (or once for the Corefile's inline lines), never touched on the query path
//! except to read.
//!
//! Parsing follows CoreDNS's `hostsfile.go`: a `#` starts a comment, fields are split
//! on ASCII white space, the first field is an address (an IPv6 zone such as `%lo0`
//! is dropped), every further field a name, lower-cased and made fully qualified.
//! Lines without an address and names outside the plugin's zones are skipped
//! silently. An IPv4-mapped IPv6 address counts as IPv4, as Go's `To4` makes it.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{self, BufRead};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::kubernetes::snapshot::FxHasher;

use crate::dns::wire::MAX_NAME_LEN;
use crate::dns::{NameKey, Zone};

/// `in-addr.arpa.` in wire form.
const IN_ADDR_ARPA: &[u8] = b"\x07in-addr\x04arpa\x00";
/// `ip6.arpa.` in wire form.
const IP6_ARPA: &[u8] = b"\x03ip6\x04arpa\x00";

/// Longest line read: 64 KiB, the most CoreDNS's reader (Go's `bufio.Scanner`) takes in
/// one line. CoreDNS stops reading the file at such a line, silently; a longer line is
/// skipped here, counted, and the lines after it are read.
pub const MAX_LINE: usize = 64 << 10;

/// A pass looks at its stop flag every this many lines, or [`STOP_CHECK_BYTES`] read,
/// whichever comes first: a stop waits for a few milliseconds of reading, not a pass.
const STOP_CHECK_LINES: usize = 4096;
/// See [`STOP_CHECK_LINES`]: 1 MiB, for files of long lines.
const STOP_CHECK_BYTES: u64 = 1 << 20;

/// What shapes a parse besides the text: the zones names must lie in and whether
/// addresses get reverse (PTR) entries.
#[derive(Clone, Debug)]
pub struct ParseOptions {
    /// A name outside all of these is dropped.
    pub zones: Vec<Zone>,
    /// Whether to build the address → names table (`no_reverse` clears it).
    pub auto_reverse: bool,
}

/// How much one read may take.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of the file.
    pub bytes: u64,
    /// Name/address pairs kept (each wildcard pair included).
    pub entries: usize,
}

/// Why a read produced no table.
#[derive(Debug)]
pub enum ReadError {
    /// More bytes than [`Limits::bytes`].
    TooLarge(u64),
    /// More name/address pairs than [`Limits::entries`].
    TooManyEntries(usize),
    Io(io::Error),
    /// The stop flag was raised during the read (the plugin is stopping).
    Stopped,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TooLarge(cap) => write!(f, "it is larger than {}", crate::config::read::human_bytes(*cap)),
            ReadError::TooManyEntries(cap) => write!(f, "it has more than {cap} name/address entries"),
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Stopped => write!(f, "the read was stopped"),
        }
    }
}

/// Names and the addresses each has, in file order, packed for size: every name once,
/// lower-cased wire bytes back to back in one arena; per name a range of the IPv4 and of
/// the IPv6 address arrays; an open-addressing index of `u32` slots. About 40 bytes a
/// name with one address, where a map of boxed names and vectors took over 300.
#[derive(Debug, Default)]
struct AddrMap {
    /// The names, back to back; name `i` is `arena[name_at[i]..name_at[i + 1]]`.
    arena: Vec<u8>,
    /// Arena offsets, one per name plus the end.
    name_at: Vec<u32>,
    /// Name `i`'s IPv4 addresses are `v4[v4_at[i]..v4_at[i + 1]]` (one more than names).
    v4_at: Vec<u32>,
    v4: Vec<Ipv4Addr>,
    v6_at: Vec<u32>,
    v6: Vec<Ipv6Addr>,
    /// Linear probing: a slot holds a name's index plus one, 0 is free. A power of two
    /// long, at most three quarters full.
    slots: Vec<u32>,
    hasher: RandomState,
}

impl AddrMap {
    fn name(&self, i: usize) -> &[u8] {
        &self.arena[self.name_at[i] as usize..self.name_at[i + 1] as usize]
    }

    fn len(&self) -> usize {
        self.name_at.len().saturating_sub(1)
    }

    fn slot_of(&self, name: &[u8]) -> usize {
        self.hasher.hash_one(name) as usize & (self.slots.len() - 1)
    }

    /// The index of `name`, if present.
    fn find(&self, name: &[u8]) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut at = self.slot_of(name);
        loop {
            match self.slots[at] {
                0 => return None,
                s if self.name(s as usize - 1) == name => return Some(s as usize - 1),
                _ => at = (at + 1) & mask,
            }
        }
    }

    /// The index of `name`, added if new.
    fn intern(&mut self, name: &[u8]) -> u32 {
        if let Some(i) = self.find(name) {
            return i as u32;
        }
        if self.name_at.is_empty() {
            self.name_at.push(0);
        }
        if (self.len() + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let i = self.len() as u32;
        self.arena.extend_from_slice(name);
        self.name_at.push(self.arena.len() as u32);
        let mask = self.slots.len() - 1;
        let mut at = self.slot_of(name);
        while self.slots[at] != 0 {
            at = (at + 1) & mask;
        }
        self.slots[at] = i + 1;
        i
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, vec![0; size]);
        let mask = size - 1;
        for s in old.into_iter().filter(|&s| s != 0) {
            let mut at = self.slot_of(self.name(s as usize - 1));
            while self.slots[at] != 0 {
                at = (at + 1) & mask;
            }
            self.slots[at] = s;
        }
    }

    /// Lays the addresses out by name, in file order (a counting sort: stable, linear),
    /// and trims every array to its size.
    fn finish(&mut self, v4: &[(u32, Ipv4Addr)], v6: &[(u32, Ipv6Addr)]) {
        let n = self.len();
        (self.v4_at, self.v4) = group(n, v4);
        (self.v6_at, self.v6) = group(n, v6);
        self.arena.shrink_to_fit();
        self.name_at.shrink_to_fit();
    }

    fn addrs<'a, T>(at: &[u32], all: &'a [T], i: usize) -> &'a [T] {
        match (at.get(i), at.get(i + 1)) {
            (Some(&a), Some(&b)) => &all[a as usize..b as usize],
            _ => &[],
        }
    }

    fn v4_of(&self, i: usize) -> &[Ipv4Addr] {
        Self::addrs(&self.v4_at, &self.v4, i)
    }

    fn v6_of(&self, i: usize) -> &[Ipv6Addr] {
        Self::addrs(&self.v6_at, &self.v6, i)
    }

    fn bytes(&self) -> usize {
        self.arena.capacity()
            + 4 * (self.name_at.capacity() + self.v4_at.capacity() + self.v6_at.capacity() + self.slots.capacity())
            + 4 * self.v4.capacity()
            + 16 * self.v6.capacity()
    }
}

/// `pairs` (name index, address) grouped by name, keeping their order within a name:
/// the start of each name's run (one more than `names`), and the addresses.
fn group<T: Copy>(names: usize, pairs: &[(u32, T)]) -> (Vec<u32>, Vec<T>) {
    if pairs.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let mut at = vec![0u32; names + 1];
    for &(i, _) in pairs {
        at[i as usize + 1] += 1;
    }
    for i in 0..names {
        at[i + 1] += at[i];
    }
    let mut next = at.clone();
    let mut out = vec![pairs[0].1; pairs.len()];
    for &(i, a) in pairs {
        let slot = &mut next[i as usize];
        out[*slot as usize] = a;
        *slot += 1;
    }
    (at, out)
}

/// One shard of a source's entries: the names that hash to it (exact and wildcard),
/// and the PTR side of those names.
#[derive(Debug, Default)]
struct Shard {
    /// Exact owner names (lower-cased wire) → addresses.
    names: AddrMap,
    /// `*.parent` entries, keyed by `parent` (lower-cased wire): they match exactly one
    /// label below it, as in current CoreDNS; the parent itself does not match.
    wildcards: AddrMap,
    /// Address → the names (indexes into `names`) that carry it, for PTR answers, with
    /// the pair's place in the file: sorted by address, then place.
    reverse_v4: Vec<(Ipv4Addr, u32, u32)>,
    reverse_v6: Vec<(Ipv6Addr, u32, u32)>,
    /// CoreDNS's entry count: every name/address pair, counted once per table it is in.
    entries: usize,
}

impl Shard {
    fn heap_bytes(&self) -> usize {
        self.names.bytes() + self.wildcards.bytes() + 12 * self.reverse_v4.capacity() + 24 * self.reverse_v6.capacity()
    }
}

/// The shard a name (lower-cased wire) belongs in, of `shards`: a fixed hash, the same
/// for every read, so that a lookup finds the shard a name was put in.
fn shard_of(name: &[u8], shards: usize) -> usize {
    if shards == 1 {
        return 0;
    }
    let mut h = FxHasher::default();
    h.write(name);
    (h.finish() >> 32) as usize % shards
}

/// Lookup tables for one source of entries (the file, or the inline lines), in shards
/// that can be rebuilt one at a time: a re-read of the file builds one shard while the
/// others serve, so it costs a fraction of a table, not a second one.
#[derive(Debug)]
pub struct Table {
    shards: Vec<Arc<Shard>>,
    /// Lines over [`MAX_LINE`], skipped by the read that built the table.
    long_lines: usize,
}

impl Default for Table {
    fn default() -> Self {
        Table::empty(1)
    }
}

/// What one pass over a file saw, whatever shards it built: to tell a file from another
/// version of it, and to check the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pass {
    /// A hash of every byte read.
    pub hash: u64,
    /// Lines over [`MAX_LINE`], skipped.
    pub long_lines: usize,
}

/// What a pass collects for one shard before its tables are laid out.
#[derive(Default)]
struct Builder {
    shard: Shard,
    /// (name index, address) in file order, for `names` and `wildcards`.
    v4: Vec<(u32, Ipv4Addr)>,
    v6: Vec<(u32, Ipv6Addr)>,
    wild_v4: Vec<(u32, Ipv4Addr)>,
    wild_v6: Vec<(u32, Ipv6Addr)>,
}

impl Table {
    /// A table of `shards` empty shards.
    pub fn empty(shards: usize) -> Table {
        Table {
            shards: (0..shards.max(1)).map(|_| Arc::new(Shard::default())).collect(),
            long_lines: 0,
        }
    }

    /// Parses hosts-file text (bytes, since a hosts file need not be UTF-8), in one shard.
    pub fn parse(text: &[u8], opts: &ParseOptions) -> Table {
        let unlimited = Limits {
            bytes: u64::MAX,
            entries: usize::MAX,
        };
        Table::read(text, opts, unlimited, 1, &AtomicBool::new(false)).unwrap_or_default()
    }

    /// Reads a hosts file line by line (one line in memory at a time) into a new table
    /// of `shards` shards, refusing it whole when it passes a limit: what is served is
    /// always one whole file, never the first part of one. Raising `stop` ends the read
    /// early ([`ReadError::Stopped`]).
    pub fn read(
        reader: impl BufRead,
        opts: &ParseOptions,
        limits: Limits,
        shards: usize,
        stop: &AtomicBool,
    ) -> Result<Table, ReadError> {
        let shards = shards.max(1);
        let (built, pass) = read_pass(reader, opts, limits, shards, 0..shards, stop)?;
        Ok(Table {
            shards: built.into_iter().map(Arc::new).collect(),
            long_lines: pass.long_lines,
        })
    }

    /// Reads the file again, building shard `k` only (every line is still read, hashed
    /// and counted against the limits); `stop` as for [`Table::read`].
    pub fn read_shard(
        &self,
        reader: impl BufRead,
        opts: &ParseOptions,
        limits: Limits,
        k: usize,
        stop: &AtomicBool,
    ) -> Result<(Table, Pass), ReadError> {
        let (mut built, pass) = read_pass(reader, opts, limits, self.shards.len(), k..k + 1, stop)?;
        let mut next = Table {
            shards: self.shards.clone(),
            long_lines: pass.long_lines,
        };
        next.shards[k] = Arc::new(built.pop().unwrap_or_default());
        Ok((next, pass))
    }

    /// How many shards the table has.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The IPv4 addresses of `name`: its own, or else those of a wildcard one label up.
    pub fn v4(&self, name: &NameKey) -> &[Ipv4Addr] {
        self.lookup(name, AddrMap::v4_of)
    }

    /// The IPv6 addresses of `name`, like [`Table::v4`].
    pub fn v6(&self, name: &NameKey) -> &[Ipv6Addr] {
        self.lookup(name, AddrMap::v6_of)
    }

    /// CoreDNS looks a name up per address family: the exact name first, then the
    /// wildcard made by replacing its first label with `*`.
    fn lookup<'t, T>(&'t self, name: &NameKey, family: impl Fn(&'t AddrMap, usize) -> &'t [T]) -> &'t [T] {
        let n = self.shards.len();
        let exact = &self.shards[shard_of(name.wire(), n)].names;
        if let Some(found) = exact
            .find(name.wire())
            .map(|i| family(exact, i))
            .filter(|a| !a.is_empty())
        {
            return found;
        }
        if name.label_count() == 0 {
            return &[];
        }
        let parent = name.suffix(1);
        let wild = &self.shards[shard_of(parent, n)].wildcards;
        wild.find(parent).map_or(&[], |i| family(wild, i))
    }

    /// The names (lower-cased wire) that carry `addr`, for PTR answers, in file order
    /// (the shards' runs merged by place; nothing is allocated).
    pub fn names_of(&self, addr: IpAddr) -> impl Iterator<Item = &[u8]> + '_ {
        let mut runs = [Run::V4(&[]); MAX_SHARDS];
        let mut owners: [&Shard; MAX_SHARDS] = [&EMPTY_SHARD; MAX_SHARDS];
        for (k, shard) in self.shards.iter().enumerate().take(MAX_SHARDS) {
            owners[k] = shard;
            runs[k] = match addr {
                IpAddr::V4(a) => Run::V4(same_address(&shard.reverse_v4, a)),
                IpAddr::V6(a) => Run::V6(same_address(&shard.reverse_v6, a)),
            };
        }
        std::iter::from_fn(move || {
            let (k, id, _) = runs
                .iter()
                .enumerate()
                .filter_map(|(k, run)| run.head().map(|(id, place)| (k, id, place)))
                .min_by_key(|&(_, _, place)| place)?;
            runs[k].advance();
            Some(owners[k].names.name(id as usize))
        })
    }

    /// Whether any name carries `addr`.
    pub fn has_reverse(&self, addr: IpAddr) -> bool {
        self.names_of(addr).next().is_some()
    }

    /// The number of entries, as CoreDNS's `coredns_hosts_entries` counts them: one per
    /// name/address pair in the forward tables plus one per pair in the reverse table.
    pub fn entries(&self) -> usize {
        self.shards.iter().map(|s| s.entries).sum()
    }

    /// Lines longer than [`MAX_LINE`] that were skipped.
    pub fn long_lines(&self) -> usize {
        self.long_lines
    }

    /// The heap the table holds, in bytes (the hash seeds and the structs aside).
    pub fn heap_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.heap_bytes()).sum()
    }
}

/// Most shards a table has (the file's table has [`FILE_SHARDS`](super::FILE_SHARDS)).
pub const MAX_SHARDS: usize = 8;

static EMPTY_SHARD: std::sync::LazyLock<Shard> = std::sync::LazyLock::new(Shard::default);

/// Reads every line of `reader`, building the shards in `build` (of `shards`), checking
/// the limits on every line whatever it builds, and `stop` every few thousand lines.
fn read_pass(
    mut reader: impl BufRead,
    opts: &ParseOptions,
    limits: Limits,
    shards: usize,
    build: std::ops::Range<usize>,
    stop: &AtomicBool,
) -> Result<(Vec<Shard>, Pass), ReadError> {
    let mut builders: Vec<Builder> = build.clone().map(|_| Builder::default()).collect();
    let mut line = Vec::new();
    let mut total = 0u64;
    let mut pairs = 0usize;
    let mut hash = FxHasher::default();
    let mut long_lines = 0;
    let (mut lines, mut checked_at) = (0usize, 0u64);
    loop {
        lines += 1;
        if lines % STOP_CHECK_LINES == 0 || total - checked_at >= STOP_CHECK_BYTES {
            if stop.load(Ordering::Relaxed) {
                return Err(ReadError::Stopped);
            }
            checked_at = total;
        }
        line.clear();
        let n = io::Read::take(&mut reader, MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(ReadError::Io)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hash.write(&line);
        if n > MAX_LINE && line.last() != Some(&b'\n') {
            // Skipped in the reader's pieces, and no further than the byte limit:
            // an endless line (`/dev/zero`) ends the read there.
            let left = limits.bytes.saturating_sub(total);
            match crate::lines::skip_line(&mut reader, left).map_err(ReadError::Io)? {
                Some(skipped) => total += skipped,
                None => return Err(ReadError::TooLarge(limits.bytes)),
            }
            long_lines += 1;
        } else {
            for_each_pair(&line, opts, |addr, name| {
                let k = shard_of(name.strip_prefix(b"\x01*").unwrap_or(name), shards);
                if build.contains(&k) {
                    builders[k - build.start].add(addr, name, pairs as u32, opts);
                }
                pairs += 1;
            });
        }
        if total > limits.bytes {
            return Err(ReadError::TooLarge(limits.bytes));
        }
        if pairs > limits.entries {
            return Err(ReadError::TooManyEntries(limits.entries));
        }
    }
    let pass = Pass {
        hash: hash.finish(),
        long_lines,
    };
    Ok((builders.into_iter().map(Builder::finish).collect(), pass))
}

/// The run of `pairs` (sorted by address) for address `a`.
fn same_address<A: Ord + Copy>(pairs: &[(A, u32, u32)], a: A) -> &[(A, u32, u32)] {
    let from = pairs.partition_point(|p| p.0 < a);
    let to = from + pairs[from..].partition_point(|p| p.0 <= a);
    &pairs[from..to]
}

/// One shard's reverse entries for one address: (address, name index, place).
#[derive(Clone, Copy)]
enum Run<'a> {
    V4(&'a [(Ipv4Addr, u32, u32)]),
    V6(&'a [(Ipv6Addr, u32, u32)]),
}

impl Run<'_> {
    /// The first entry's (name index, place).
    fn head(&self) -> Option<(u32, u32)> {
        match self {
            Run::V4(r) => r.first().map(|p| (p.1, p.2)),
            Run::V6(r) => r.first().map(|p| (p.1, p.2)),
        }
    }

    fn advance(&mut self) {
        match self {
            Run::V4(r) => *r = &r[1..],
            Run::V6(r) => *r = &r[1..],
        }
    }
}

/// Calls `f` with each (address, name) pair a line holds, names lower-cased wire and in
/// the zones.
fn for_each_pair(line: &[u8], opts: &ParseOptions, mut f: impl FnMut(IpAddr, &[u8])) {
    let line = line.split(|&b| b == b'#').next().unwrap_or_default();
    let mut fields = line.split(|&b| is_space(b)).filter(|f| !f.is_empty());
    let Some(addr) = fields
        .next()
        .and_then(|f| std::str::from_utf8(f).ok())
        .and_then(parse_addr)
    else {
        return;
    };
    for field in fields {
        // A field that is not UTF-8 or not a valid name can never match a
        // query; CoreDNS keeps it under a key nothing looks up, we drop it.
        let Some(name) = std::str::from_utf8(field).ok().and_then(NameKey::from_text) else {
            continue;
        };
        if Zone::any_contains(&opts.zones, &name) {
            f(addr, name.wire());
        }
    }
}

impl Builder {
    /// Adds the pair that is the `place`-th of the file.
    fn add(&mut self, addr: IpAddr, name: &[u8], place: u32, opts: &ParseOptions) {
        let t = &mut self.shard;
        // A leading `*` label makes a wildcard entry, which never gets a PTR record.
        if let Some(parent) = name.strip_prefix(b"\x01*") {
            let i = t.wildcards.intern(parent);
            match addr {
                IpAddr::V4(a) => self.wild_v4.push((i, a)),
                IpAddr::V6(a) => self.wild_v6.push((i, a)),
            }
            t.entries += 1;
            return;
        }
        let i = t.names.intern(name);
        match addr {
            IpAddr::V4(a) => self.v4.push((i, a)),
            IpAddr::V6(a) => self.v6.push((i, a)),
        }
        t.entries += 1;
        if opts.auto_reverse {
            match addr {
                IpAddr::V4(a) => t.reverse_v4.push((a, i, place)),
                IpAddr::V6(a) => t.reverse_v6.push((a, i, place)),
            }
            t.entries += 1;
        }
    }

    fn finish(mut self) -> Shard {
        let t = &mut self.shard;
        t.names.finish(&self.v4, &self.v6);
        t.wildcards.finish(&self.wild_v4, &self.wild_v6);
        // Places are unique and pushed in order: an address's names end in file order.
        t.reverse_v4.sort_unstable_by_key(|p| (p.0, p.2));
        t.reverse_v6.sort_unstable_by_key(|p| (p.0, p.2));
        t.reverse_v4.shrink_to_fit();
        t.reverse_v6.shrink_to_fit();
        self.shard
    }
}

/// The field separators of CoreDNS's hosts parser: ASCII white space, vertical tab
/// included (which `u8::is_ascii_whitespace` leaves out).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// Parses the address field of a hosts line: an IPv6 zone (`fe80::1%lo0`) is
/// dropped, as CoreDNS does, and an IPv4-mapped IPv6 address becomes IPv4.
pub fn parse_addr(field: &str) -> Option<IpAddr> {
    let bare = field.split('%').next().unwrap_or_default();
    bare.parse().ok().map(canonical)
}

/// Go's `net.IP` treats an IPv4-mapped IPv6 address as the IPv4 address itself (its
/// `To4` and `String`); the tables are keyed the same way.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The address a reverse name stands for, read as CoreDNS's
/// `dnsutil.ExtractAddressFromReverse` reads it: under `in-addr.arpa.` the labels,
/// last first, joined with dots; under `ip6.arpa.` the labels, last first, in groups of
/// four joined with colons (leftover leftmost labels are ignored, as Go's integer
/// division ignores them); then parsed as an address. Allocation-free: the text is
/// assembled in a stack buffer.
pub fn reverse_address(name: &NameKey) -> Option<IpAddr> {
    let mut buf = [0u8; MAX_NAME_LEN];
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        buf[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    };
    let v4_only = if let Some(n) = name.labels_before(IN_ADDR_ARPA) {
        for r in 0..n {
            if r > 0 {
                put(b".");
            }
            put(name.label(n - 1 - r));
        }
        true
    } else if let Some(n) = name.labels_before(IP6_ARPA) {
        for g in 0..n / 4 {
            if g > 0 {
                put(b":");
            }
            for k in 0..4 {
                put(name.label(n - 1 - (4 * g + k)));
            }
        }
        false
    } else {
        return None;
    };
    // The joined text never outgrows the name: each separator replaces a length byte.
    let text = &buf[..len];
    // Go sees a dot inside a label escaped (`\.`), which no address contains.
    if (0..name.label_count()).any(|i| name.label(i).contains(&b'.')) {
        return None;
    }
    let ip = canonical(std::str::from_utf8(text).ok()?.parse().ok()?);
    // Under in-addr.arpa CoreDNS keeps only what `To4` accepts.
    (!v4_only || ip.is_ipv4()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire;

    /// A stop flag never raised.
    static NO_STOP: AtomicBool = AtomicBool::new(false);

    fn opts(zones: &[&str], auto_reverse: bool) -> ParseOptions {
        ParseOptions {
            zones: zones.iter().map(|z| Zone::new(z).unwrap()).collect(),
            auto_reverse,
        }
    }

    fn key(name: &str) -> NameKey {
        NameKey::from_wire(&wire::name_from_str(name).unwrap()).unwrap()
    }

    fn names(t: &Table, addr: &str) -> Vec<String> {
        t.names_of(addr.parse().unwrap()).map(wire::name_to_string).collect()
    }

    const HOSTS: &str = "\
# a comment line
127.0.0.1 localhost localhost.domain   # trailing comment
::1\tlocalhost\x0blocalhost.domain
10.0.0.1 Example.ORG
::FFFF:10.0.0.2 example.com.
fe80::1%lo0 link.local
bogus line here
10.0.0.3
01.0.0.4 leading.zero
10.0.0.5 a..b ok.example.net
";

    #[test]
    fn parses_addresses_names_and_comments() {
        let t = Table::parse(HOSTS.as_bytes(), &opts(&["."], true));
        assert_eq!(t.v4(&key("localhost")), [Ipv4Addr::LOCALHOST]);
        assert_eq!(t.v6(&key("localhost.domain")), [Ipv6Addr::LOCALHOST]);
        // Names are lower-cased and fully qualified.
        assert_eq!(t.v4(&key("example.org")), [Ipv4Addr::new(10, 0, 0, 1)]);
        // An IPv4-mapped IPv6 address is IPv4 (an A record, an in-addr.arpa PTR).
        assert_eq!(t.v4(&key("example.com")), [Ipv4Addr::new(10, 0, 0, 2)]);
        assert!(t.v6(&key("example.com")).is_empty());
        assert_eq!(names(&t, "10.0.0.2"), ["example.com."]);
        // The IPv6 zone is dropped.
        assert_eq!(t.v6(&key("link.local")), ["fe80::1".parse::<Ipv6Addr>().unwrap()]);
        // Lines without a valid address are skipped; Go and Rust both refuse leading zeros.
        assert!(t.v4(&key("leading.zero")).is_empty());
        // An invalid name is skipped, the rest of its line is kept.
        assert_eq!(t.v4(&key("ok.example.net")), [Ipv4Addr::new(10, 0, 0, 5)]);
        assert_eq!(names(&t, "127.0.0.1"), ["localhost.", "localhost.domain."]);
        assert_eq!(names(&t, "::1"), ["localhost.", "localhost.domain."]);
        // 8 names with one address each, forward and reverse.
        assert_eq!(t.entries(), 16);
    }

    #[test]
    fn names_outside_the_zones_are_dropped() {
        let t = Table::parse(
            b"10.0.0.1 a.example.org b.example.net example.org\n",
            &opts(&["example.org."], true),
        );
        assert_eq!(t.v4(&key("a.example.org")).len(), 1);
        assert_eq!(t.v4(&key("example.org")).len(), 1);
        assert!(t.v4(&key("b.example.net")).is_empty());
        assert_eq!(names(&t, "10.0.0.1"), ["a.example.org.", "example.org."]);
    }

    #[test]
    fn no_reverse_builds_no_ptr_table() {
        let t = Table::parse(b"10.0.0.1 example.org\n", &opts(&["."], false));
        assert_eq!(t.v4(&key("example.org")).len(), 1);
        assert!(names(&t, "10.0.0.1").is_empty());
        assert_eq!(t.entries(), 1);
    }

    #[test]
    fn repeated_names_keep_every_address_in_order() {
        let t = Table::parse(b"10.0.0.1 a.org\n10.0.0.2 a.org\n10.0.0.1 a.org\n", &opts(&["."], true));
        let want: Vec<Ipv4Addr> = ["10.0.0.1", "10.0.0.2", "10.0.0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(t.v4(&key("a.org")), want);
        assert_eq!(names(&t, "10.0.0.1"), ["a.org.", "a.org."]);
    }

    #[test]
    fn wildcards_match_one_label_per_family_and_get_no_ptr() {
        let text = b"192.168.1.10 *.example.com\n192.168.1.11 a.example.com\n::1 b.example.com\n";
        let t = Table::parse(text, &opts(&["example.com."], true));
        assert_eq!(t.v4(&key("a.example.com")), [Ipv4Addr::new(192, 168, 1, 11)]);
        assert_eq!(t.v4(&key("apps.example.com")), [Ipv4Addr::new(192, 168, 1, 10)]);
        // The exact name has only AAAA, so its A lookup still reaches the wildcard.
        assert_eq!(t.v4(&key("b.example.com")), [Ipv4Addr::new(192, 168, 1, 10)]);
        assert!(t.v4(&key("example.com")).is_empty());
        assert!(t.v4(&key("deep.apps.example.com")).is_empty());
        assert!(names(&t, "192.168.1.10").is_empty());
        assert_eq!(t.entries(), 1 + 2 + 2);
    }

    fn limits(bytes: u64, entries: usize) -> Limits {
        Limits { bytes, entries }
    }

    #[test]
    fn a_file_over_a_limit_is_refused_whole() {
        let text = b"10.0.0.1 a.org b.org\n10.0.0.2 c.org\n";
        let o = opts(&["."], true);
        assert_eq!(
            Table::read(&text[..], &o, limits(100, 3), 4, &NO_STOP)
                .unwrap()
                .entries(),
            6
        );
        assert!(matches!(
            Table::read(&text[..], &o, limits(100, 2), 4, &NO_STOP),
            Err(ReadError::TooManyEntries(2))
        ));
        assert!(matches!(
            Table::read(&text[..], &o, limits(30, 10), 4, &NO_STOP),
            Err(ReadError::TooLarge(30))
        ));
        // Names outside the zones cost nothing.
        let o = opts(&["c.org."], true);
        assert_eq!(
            Table::read(&text[..], &o, limits(100, 1), 4, &NO_STOP)
                .unwrap()
                .entries(),
            2
        );
        assert_eq!(
            ReadError::TooManyEntries(1_000_000).to_string(),
            "it has more than 1000000 name/address entries"
        );
    }

    #[test]
    fn an_endless_stream_stops_at_the_byte_limit() {
        // /dev/zero is one endless line: it is skipped in pieces, never held.
        let zero = std::io::BufReader::new(std::fs::File::open("/dev/zero").unwrap());
        assert!(matches!(
            Table::read(zero, &opts(&["."], true), limits(1 << 20, 10), 4, &NO_STOP),
            Err(ReadError::TooLarge(_))
        ));
    }

    /// `line` over and over without end, counting the bytes handed out.
    struct Endless {
        line: Vec<u8>,
        at: usize,
        bytes: u64,
    }

    impl io::Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            for b in buf.iter_mut() {
                *b = self.line[self.at];
                self.at = (self.at + 1) % self.line.len();
            }
            self.bytes += buf.len() as u64;
            Ok(buf.len())
        }
    }

    #[test]
    fn a_raised_stop_flag_ends_a_pass_within_a_few_thousand_lines_or_a_mib() {
        let stop = AtomicBool::new(true);
        let o = opts(&["."], true);
        let unlimited = limits(u64::MAX, usize::MAX);
        let short = b"10.0.0.1 a.example.org\n".to_vec();
        let mut long = b"10.0.0.1 ".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_LINE + 1000));
        long.push(b'\n');
        for (line, most) in [
            (short.clone(), STOP_CHECK_LINES as u64 * short.len() as u64),
            (long.clone(), STOP_CHECK_BYTES + long.len() as u64),
        ] {
            let mut endless = Endless { line, at: 0, bytes: 0 };
            let read = Table::read(io::BufReader::new(&mut endless), &o, unlimited, 4, &stop);
            assert!(matches!(read, Err(ReadError::Stopped)), "{read:?}");
            // Give or take the reader's buffer (8 KiB).
            assert!(endless.bytes <= most + (8 << 10), "{} bytes read", endless.bytes);
            let (four, mut endless) = (
                Table::empty(4),
                Endless {
                    at: 0,
                    bytes: 0,
                    ..endless
                },
            );
            let read = four.read_shard(io::BufReader::new(&mut endless), &o, unlimited, 1, &stop);
            assert!(matches!(read, Err(ReadError::Stopped)));
            assert!(endless.bytes <= most + (8 << 10), "{} bytes read", endless.bytes);
        }
    }

    #[test]
    fn over_long_lines_are_skipped_and_counted() {
        let mut text = b"10.0.0.1 before.org\n10.0.0.2 ".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        text.extend_from_slice(b" long.org\n10.0.0.3 after.org\n");
        // Read in small pieces, as from a file.
        let reader = std::io::BufReader::with_capacity(1000, &text[..]);
        let t = Table::read(reader, &opts(&["."], false), limits(u64::MAX, 10), 4, &NO_STOP).unwrap();
        assert_eq!(t.long_lines(), 1);
        assert_eq!(t.v4(&key("before.org")).len(), 1);
        assert!(t.v4(&key("long.org")).is_empty());
        assert_eq!(t.v4(&key("after.org")).len(), 1);
    }

    #[test]
    fn the_table_is_compact() {
        // 100,000 lines of one name and one address each, as a blocklist has them.
        let mut text = String::new();
        for i in 0..100_000u32 {
            let ip = Ipv4Addr::from(i);
            text.push_str(&format!("{ip} ads-{i}.tracker-{}.example.com\n", i % 97));
        }
        let t = Table::parse(text.as_bytes(), &opts(&["."], true));
        assert_eq!(t.entries(), 200_000);
        assert_eq!(
            t.v4(&key("ads-77.tracker-77.example.com")),
            ["0.0.0.77".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(names(&t, "0.0.1.44"), ["ads-300.tracker-9.example.com."]);
        let per_line = t.heap_bytes() / 100_000;
        eprintln!("hosts table: {per_line} bytes a line (names of 30 bytes, with PTR)");
        // The names are 31 bytes of wire each: the rest must stay small.
        assert!(per_line < 80, "{per_line} bytes a line");
    }

    #[test]
    fn shards_answer_as_one_table_and_rebuild_one_at_a_time() {
        // Names spread over the shards; one address carried by names in several of them.
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&format!(
                "10.0.0.1 n{i}.org\n10.0.{}.{} n{i}.org *.w{i}.org\n",
                i / 250,
                i % 250 + 2
            ));
        }
        let o = opts(&["."], true);
        let one = Table::read(text.as_bytes(), &o, limits(u64::MAX, 10_000), 1, &NO_STOP).unwrap();
        let four = Table::read(text.as_bytes(), &o, limits(u64::MAX, 10_000), 4, &NO_STOP).unwrap();
        assert!(four.shards.iter().all(|s| s.entries > 0), "every shard holds some");
        assert_eq!(one.entries(), four.entries());
        for i in [0, 77, 199] {
            for t in [&one, &four] {
                assert_eq!(t.v4(&key(&format!("n{i}.org"))).len(), 2);
                assert_eq!(t.v4(&key(&format!("x.w{i}.org"))).len(), 1);
            }
        }
        // The names of 10.0.0.1 come in file order across the shards.
        let want: Vec<String> = (0..200).map(|i| format!("n{i}.org.")).collect();
        assert_eq!(names(&four, "10.0.0.1"), want);
        assert_eq!(names(&one, "10.0.0.1"), want);
        // A re-read of shard 2 from a changed file changes only that shard.
        let changed = text.replace("10.0.0.1 ", "10.9.9.9 ");
        let (next, pass) = four
            .read_shard(changed.as_bytes(), &o, limits(u64::MAX, 10_000), 2, &NO_STOP)
            .unwrap();
        assert_eq!(pass.long_lines, 0);
        for k in [0, 1, 3] {
            assert!(Arc::ptr_eq(&four.shards[k], &next.shards[k]));
        }
        assert!(!Arc::ptr_eq(&four.shards[2], &next.shards[2]));
        let moved = names(&next, "10.9.9.9");
        assert!(!moved.is_empty() && moved.len() < 200, "{}", moved.len());
        // Every pass checks the whole file against the limits.
        assert!(matches!(
            four.read_shard(changed.as_bytes(), &o, limits(u64::MAX, 100), 3, &NO_STOP),
            Err(ReadError::TooManyEntries(100))
        ));
        // The pass's hash tells two versions apart.
        let (_, again) = four
            .read_shard(changed.as_bytes(), &o, limits(u64::MAX, 10_000), 0, &NO_STOP)
            .unwrap();
        let (_, before) = four
            .read_shard(text.as_bytes(), &o, limits(u64::MAX, 10_000), 0, &NO_STOP)
            .unwrap();
        assert_eq!(again, pass);
        assert_ne!(before, pass);
    }

    #[test]
    fn reverse_names_read_like_coredns() {
        let addr = |s: &str| reverse_address(&key(s));
        assert_eq!(addr("1.0.0.10.in-addr.arpa."), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(addr("1.0.0.10.IN-ADDR.ARPA."), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(addr("0.0.10.in-addr.arpa."), None);
        assert_eq!(addr("01.0.0.10.in-addr.arpa."), None);
        assert_eq!(addr("in-addr.arpa."), None);
        assert_eq!(addr("example.org."), None);
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f.ip6.arpa.";
        assert_eq!(addr(v6), Some("fe80::1".parse().unwrap()));
        // Leftover leftmost labels beyond a multiple of four are ignored, as in Go.
        assert_eq!(addr(&format!("x.{v6}")), Some("fe80::1".parse().unwrap()));
        assert_eq!(addr(&v6[2..]), None);
        // The ip6.arpa name of an IPv4-mapped address stands for the IPv4 address.
        let mapped = "1.0.0.0.0.0.a.0.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.";
        assert_eq!(addr(mapped), Some("10.0.0.1".parse().unwrap()));
        // A dot inside a label is no address.
        let escaped = NameKey::from_wire(b"\x031.0\x010\x0210\x07in-addr\x04arpa\x00").unwrap();
        assert_eq!(reverse_address(&escaped), None);
    }
}
