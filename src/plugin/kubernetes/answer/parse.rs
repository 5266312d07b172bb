//! The query name's grammar in front of the zone (CoreDNS `parse.go`
//! `parseRequest`): `svc` or `pod`, namespace, service, endpoint or port and protocol;
//! and pod labels as the IP text they stand for.

use crate::dns::NameKey;
use crate::kubernetes::model::Port;

/// What `parseRequest` makes of the labels in front of the zone: indices of labels
/// in the query name.
#[derive(Default, Clone, Copy, Debug)]
pub(super) struct Parsed {
    /// `svc` or `pod` given.
    pub(super) kind: Option<Kind>,
    pub(super) namespace: Option<usize>,
    pub(super) service: Option<usize>,
    pub(super) endpoint: Option<usize>,
    pub(super) port: Option<usize>,
    pub(super) protocol: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Svc,
    Pod,
}

/// A name error from parsing or lookup (CoreDNS's errNoItems / errInvalidRequest).
#[derive(Debug)]
pub(super) struct NameError;

pub(super) fn strip_underscore(l: &[u8]) -> &[u8] {
    l.strip_prefix(b"_").unwrap_or(l)
}

pub(super) fn parse(name: &NameKey, before: usize) -> Result<Parsed, NameError> {
    let mut p = Parsed::default();
    if before == 0 {
        return Ok(p);
    }
    let mut last = before - 1;
    let kind = match name.label(last) {
        b"svc" => Kind::Svc,
        b"pod" => Kind::Pod,
        _ => return Err(NameError),
    };
    if before == 1 {
        // `svc.<zone>` and `pod.<zone>` exist without data.
        return Ok(p);
    }
    p.kind = Some(kind);
    last -= 1;
    p.namespace = Some(last);
    if last == 0 {
        return Ok(p);
    }
    last -= 1;
    p.service = Some(last);
    match last {
        0 => {}
        1 => p.endpoint = Some(0),
        2 => {
            p.port = Some(0);
            p.protocol = Some(1);
        }
        _ => return Err(NameError),
    }
    Ok(p)
}

/// What a query selects from a service: an endpoint by name, or ports by name and
/// protocol (`_http._tcp.`; an empty or `_` label is any). Labels of the query name.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Sel<'n> {
    pub(super) endpoint: Option<&'n [u8]>,
    pub(super) port: Option<&'n [u8]>,
    pub(super) protocol: Option<&'n [u8]>,
}

impl<'n> Sel<'n> {
    pub(super) fn of(name: &'n NameKey, p: &Parsed) -> Sel<'n> {
        Sel {
            endpoint: p.endpoint.map(|i| name.label(i)),
            port: p.port.map(|i| strip_underscore(name.label(i))),
            protocol: p.protocol.map(|i| strip_underscore(name.label(i))),
        }
    }

    pub(super) fn port_ok(&self, port: &Port) -> bool {
        self.port
            .is_none_or(|want| want.is_empty() || want.eq_ignore_ascii_case(port.name.as_bytes()))
            && self
                .protocol
                .is_none_or(|want| want.is_empty() || want.eq_ignore_ascii_case(port.protocol.as_bytes()))
    }
}

/// Converts a pod label (`10-0-0-1`, `fd00--1`) to the IP text CoreDNS compares.
pub(super) fn pod_ip_text(label: &[u8], out: &mut [u8; 64]) -> Option<usize> {
    if label.len() > out.len() {
        return None;
    }
    let dashes = label.iter().filter(|&&c| c == b'-').count();
    let v4 = dashes == 3 && !label.windows(2).any(|w| w == b"--");
    for (o, &c) in out.iter_mut().zip(label) {
        *o = if c == b'-' { if v4 { b'.' } else { b':' } } else { c };
    }
    Some(label.len())
}
