//! Reading an RFC 1035 master file into records, with `domain`'s zone-file scanner
//! (`$ORIGIN`, `$TTL`, relative names, `@`, parentheses, escapes, every type `domain`
//! knows and RFC 3597's `TYPEnnn \# ...` for the others); `$INCLUDE` is followed here,
//! relative to the including file's directory (as miekg/dns, CoreDNS's parser, does),
//! to a bounded depth and within one byte budget for the zone as a whole.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use domain::base::Name;
use domain::base::iana::Class;
use domain::base::name::ToLabelIter;
use domain::base::rdata::ComposeRecordData;
use domain::zonefile::inplace::{Entry, Zonefile};

use crate::config::read::{ReadError, read_regular};
use crate::dns::{Zone, rtype};

/// Largest zone read, its `$INCLUDE`d files counted together: 64 MiB. A zone file line
/// is 30 to 100 bytes, so this holds the [`MAX_RECORDS`] with room; CoreDNS reads any
/// size.
pub const MAX_ZONE_BYTES: u64 = 64 << 20;
/// Most records one zone holds: 1,000,000. A zone costs about 115 bytes a record served
/// (its name, data and index: the test `a_zone_is_compact`), so a full one takes
/// some 110 MiB, more than twice that while a reload builds the next one beside it.
pub const MAX_RECORDS: usize = 1_000_000;
/// How deep `$INCLUDE`s may nest: 7, miekg/dns's limit (CoreDNS's parser).
pub const MAX_INCLUDE_DEPTH: usize = 7;

/// One record as read: owner lower-cased (wire form), data in uncompressed wire form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    pub owner: Vec<u8>,
    pub rtype: u16,
    pub ttl: u32,
    pub rdata: Vec<u8>,
}

/// Why a zone file was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// A syntax or data error at a line of a file (the main one or an included one).
    At { file: PathBuf, line: usize, msg: String },
    /// A file could not be read, or is over a limit.
    File { file: PathBuf, msg: String },
    /// The zone as a whole is wrong (no SOA, too many records).
    Zone(String),
    /// The first SOA has this serial, the one already served: nothing was read further
    /// (CoreDNS's "no change in SOA serial").
    Unchanged(u32),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::At { file, line, msg } => write!(f, "{}:{line} - {msg}", file.display()),
            ParseError::File { file, msg } => write!(f, "{}: {msg}", file.display()),
            ParseError::Zone(msg) => f.write_str(msg),
            ParseError::Unchanged(serial) => write!(f, "no change in SOA serial ({serial})"),
        }
    }
}

/// What reading a zone file gave.
pub struct Parsed {
    pub records: Vec<RawRecord>,
    /// The main file's modification time (for `reload_by_mtime`).
    pub mtime: Option<SystemTime>,
}

/// Reads the zone `origin` from `path` (and what it includes). With `unchanged_if`,
/// stops at the first SOA of the apex if its serial is that one.
pub fn read_zone(path: &Path, origin: &Zone, unchanged_if: Option<u32>) -> Result<Parsed, ParseError> {
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut reader = Reader {
        origin: origin.wire().to_vec(),
        records: Vec::new(),
        bytes: 0,
        unchanged_if,
        seen_soa: false,
    };
    let start: Name<Vec<u8>> = Name::from_chars(origin.as_str().chars())
        .map_err(|e| ParseError::Zone(format!("invalid origin {}: {e}", origin.as_str())))?;
    reader.file(path, start.as_slice(), 0)?;
    Ok(Parsed {
        records: reader.records,
        mtime,
    })
}

struct Reader {
    origin: Vec<u8>,
    records: Vec<RawRecord>,
    bytes: u64,
    unchanged_if: Option<u32>,
    seen_soa: bool,
}

impl Reader {
    /// Reads one file with `origin` (wire form) as its initial origin.
    fn file(&mut self, path: &Path, origin: &[u8], depth: usize) -> Result<(), ParseError> {
        let file_err = |msg: String| ParseError::File {
            file: path.to_path_buf(),
            msg,
        };
        let left = MAX_ZONE_BYTES.saturating_sub(self.bytes);
        let text = read_regular(path, left).map_err(|e| match e {
            ReadError::TooLarge(_) => file_err(format!(
                "the zone's files are larger than {} together",
                crate::config::read::human_bytes(MAX_ZONE_BYTES)
            )),
            e => file_err(e.to_string()),
        })?;
        self.bytes += text.len() as u64;
        let mut zf = Zonefile::with_capacity(text.len());
        zf.extend_from_slice(&text);
        // The scanner's own origin type; the name was checked by the caller.
        let origin_name = Name::from_octets(bytes_of(origin)).map_err(|e| file_err(e.to_string()))?;
        zf.set_origin(origin_name);
        zf.set_default_class(Class::IN);
        loop {
            let entry = match zf.next_entry() {
                Ok(Some(entry)) => entry,
                Ok(None) => return Ok(()),
                Err(e) => return Err(at(path, &e.to_string())),
            };
            match entry {
                Entry::Record(rec) => {
                    if rec.class() != Class::IN {
                        return Err(at_line(
                            path,
                            &text,
                            &zf,
                            format!("class {} is not served (only IN)", rec.class()),
                        ));
                    }
                    let mut owner = Vec::with_capacity(32);
                    for label in rec.owner().iter_labels() {
                        let l = label.as_ref();
                        owner.push(l.len() as u8);
                        owner.extend(l.iter().map(u8::to_ascii_lowercase));
                    }
                    let rtype = rec.rtype().to_int();
                    let mut rdata = Vec::with_capacity(16);
                    rec.data()
                        .compose_rdata(&mut rdata)
                        .map_err(|_| at_line(path, &text, &zf, "record data too long".into()))?;
                    lower_names(rtype, &mut rdata);
                    if rtype == rtype::SOA && !self.seen_soa && owner == self.origin {
                        self.seen_soa = true;
                        if let Some(serial) = self.unchanged_if {
                            if soa_serial(&rdata) == Some(serial) {
                                return Err(ParseError::Unchanged(serial));
                            }
                        }
                    }
                    if self.records.len() >= MAX_RECORDS {
                        return Err(ParseError::Zone(format!("more than {MAX_RECORDS} records")));
                    }
                    self.records.push(RawRecord {
                        owner,
                        rtype,
                        ttl: rec.ttl().as_secs(),
                        rdata,
                    });
                }
                Entry::Include {
                    path: inc,
                    origin: inc_origin,
                } => {
                    if depth + 1 > MAX_INCLUDE_DEPTH {
                        return Err(at_line(
                            path,
                            &text,
                            &zf,
                            format!("$INCLUDE nested deeper than {MAX_INCLUDE_DEPTH}"),
                        ));
                    }
                    let inc = PathBuf::from(inc.to_string());
                    let inc = if inc.is_absolute() {
                        inc
                    } else {
                        path.parent().unwrap_or(Path::new(".")).join(inc)
                    };
                    // The included file starts with the origin given, or the including
                    // file's current one (RFC 1035 5.1); the including file's origin is
                    // not changed by it.
                    let current = match inc_origin {
                        Some(o) => o.as_slice().to_vec(),
                        None => match zf.origin() {
                            Ok(o) => o.as_slice().to_vec(),
                            Err(e) => return Err(at_line(path, &text, &zf, e.to_string())),
                        },
                    };
                    self.file(&inc, &current, depth + 1)?;
                }
            }
        }
    }
}

/// The scanner's octets type, from wire bytes.
fn bytes_of<O: From<Vec<u8>>>(wire: &[u8]) -> O {
    O::from(wire.to_vec())
}

/// `domain`'s errors read `LINE:COL: message`: the file and line first, as CoreDNS's
/// errors and the Corefile's name a place.
fn at(path: &Path, text: &str) -> ParseError {
    let mut parts = text.splitn(3, ':');
    let (line, col, msg) = (parts.next(), parts.next(), parts.next());
    match (line.and_then(|l| l.parse::<usize>().ok()), col, msg) {
        // The scanner reports where it stands once the bad token is read: at column 1
        // of the next line when the token ended its line.
        (Some(line), Some(col), Some(msg)) if col.trim() == "1" && line > 1 => ParseError::At {
            file: path.to_path_buf(),
            line: line - 1,
            msg: msg.trim().to_string(),
        },
        (Some(line), Some(col), Some(msg)) => ParseError::At {
            file: path.to_path_buf(),
            line,
            msg: format!("{} (column {})", msg.trim(), col.trim()),
        },
        _ => ParseError::File {
            file: path.to_path_buf(),
            msg: text.to_string(),
        },
    }
}

/// An error about the entry just read: the scanner has moved past it, so the line is
/// counted up to where it stands.
fn at_line(path: &Path, text: &[u8], zf: &Zonefile, msg: String) -> ParseError {
    let end = zf.current_offset().min(text.len());
    // The scanner stands after the entry's line break, if it has one.
    let end = if end > 0 && text[end - 1] == b'\n' {
        end - 1
    } else {
        end
    };
    let line = 1 + text[..end].iter().filter(|&&b| b == b'\n').count();
    ParseError::At {
        file: path.to_path_buf(),
        line,
        msg,
    }
}

/// CoreDNS lower-cases the names inside NS, CNAME, MX and SOA data when it stores a
/// record (zone.go, `Insert`); SRV targets keep their case. Length bytes are below 64,
/// never ASCII letters, so a name's wire bytes can be lower-cased whole.
fn lower_names(rtype: u16, rdata: &mut [u8]) {
    let names = match rtype {
        rtype::NS | rtype::CNAME => rdata,
        rtype::MX => rdata.get_mut(2..).unwrap_or_default(),
        rtype::SOA => {
            let end = name_end(rdata, 0).and_then(|e| name_end(rdata, e)).unwrap_or(0);
            &mut rdata[..end]
        }
        _ => return,
    };
    names.make_ascii_lowercase();
}

/// Where the uncompressed name starting at `at` ends.
pub(crate) fn name_end(b: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let l = *b.get(at)? as usize;
        at += 1 + l;
        if l == 0 {
            return (at <= b.len()).then_some(at);
        }
    }
}

/// The serial of SOA record data.
pub(crate) fn soa_serial(rdata: &[u8]) -> Option<u32> {
    let end = name_end(rdata, name_end(rdata, 0)?)?;
    Some(u32::from_be_bytes(rdata.get(end..end + 4)?.try_into().ok()?))
}
