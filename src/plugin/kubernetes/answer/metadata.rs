//! The labels the query name gives the kubernetes plugin's metadata (CoreDNS
//! `plugin/kubernetes/metadata.go`, from `parseRequest`): `kubernetes/kind`,
//! `namespace`, `service`, `endpoint`, `port-name`, `protocol`, and `parse-error` when
//! the name is not of the grammar. The client's labels (`client-namespace`,
//! `client-pod-name`) come from the snapshot, in the plugin's `mod.rs`.

use super::Options;
use super::parse::{Kind, parse};
use crate::dns::NameKey;

/// CoreDNS's `errInvalidRequest` text, the value of `kubernetes/parse-error`.
const INVALID: &str = "invalid query name";

/// Writes the value of the query-name label `label` (the part after `kubernetes/`)
/// for `name` into `out`; `false` when it is not set: the name is outside the
/// plugin's zones, the label is not one of these, or the name does not parse (then
/// only `parse-error` is set). As in CoreDNS, a name of the zone itself or of
/// `svc.`/`pod.` sets every label, to the empty string.
pub fn query_label(opts: &Options, name: &NameKey, label: &str, out: &mut String) -> bool {
    let Some(before) = opts.zones.iter().find_map(|z| z.labels_before(name)) else {
        return false;
    };
    let parsed = parse(name, before);
    let Ok(p) = parsed else {
        if label == "parse-error" {
            out.push_str(INVALID);
            return true;
        }
        return false;
    };
    let at = match label {
        "kind" => {
            out.push_str(match p.kind {
                Some(Kind::Svc) => "svc",
                Some(Kind::Pod) => "pod",
                None => "",
            });
            return true;
        }
        "namespace" => p.namespace,
        "service" => p.service,
        "endpoint" => p.endpoint,
        "port-name" => p.port,
        "protocol" => p.protocol,
        _ => return false,
    };
    if let Some(i) = at {
        let l = name.label(i);
        // Port and protocol labels lose their underscore (`_http` is `http`).
        let l = match label {
            "port-name" | "protocol" => l.strip_prefix(b"_").unwrap_or(l),
            _ => l,
        };
        push_label(l, out);
    }
    true
}

/// A label in presentation form: `.` and `\` escaped, bytes outside printable ASCII
/// as `\DDD` (RFC 4343 2.1), as the name reads in a zone file.
fn push_label(l: &[u8], out: &mut String) {
    for &b in l {
        match b {
            b'.' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x21..=0x7e => out.push(b as char),
            _ => {
                out.push('\\');
                out.push((b'0' + b / 100) as char);
                out.push((b'0' + b / 10 % 10) as char);
                out.push((b'0' + b % 10) as char);
            }
        }
    }
}

impl super::Ctx<'_, '_, '_, '_> {
    /// Whether the query's name exists as an A or AAAA query finds it: `false` exactly
    /// when [`Ctx::addresses`](super::Ctx) answers NXDOMAIN, whatever the type, so that
    /// autopath completes A and AAAA alike (coredns#3765). `Err` past the work budget.
    pub fn address_name_exists(&self) -> Result<bool, crate::chain::OverBudget> {
        if self.z.before == 0 || self.is_default_ns() {
            return Ok(true);
        }
        let Ok(p) = parse(self.name(), self.z.before) else {
            return Ok(false);
        };
        match self.records(&p) {
            Ok(_) => Ok(true),
            Err(super::Miss::Name) => Ok(false),
            Err(super::Miss::OverBudget) => Err(crate::chain::OverBudget),
        }
    }
}
