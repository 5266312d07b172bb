//! `k8s_external [ZONES...] { apex, ttl, headless, fallthrough }`: the options, checked
//! as CoreDNS's `plugin/k8s_external/setup.go` checks them, with its messages.

use crate::config::{ConfigError, Directive, reverse_zones_for_cidr};
use crate::dns::{NameKey, Zone};
use crate::setup::SetupCtx;

pub(super) const NAME: &str = "k8s_external";

/// Every option, validated.
#[derive(Clone, Debug)]
pub struct Options {
    /// Longest first: the first that contains a name is its zone (CoreDNS
    /// `plugin.Zones.Matches`).
    pub zones: Vec<Zone>,
    /// The first zone as written: PTR answers name services under it (CoreDNS
    /// `e.Zones[0]`).
    pub first_zone: Zone,
    /// The apex label(s) (`dns`), as wire labels without the root, lower-cased.
    pub apex: Box<[u8]>,
    /// TTL of every record, and the SOA's minimum (default 5, at most 3600).
    pub ttl: u32,
    /// Answer headless services (and endpoint names) from their endpoints.
    pub headless: bool,
    /// `None`: no fallthrough; `Some(zones)`: name errors under these zones go on.
    pub fallthrough: Option<Vec<Zone>>,
}

/// A zone argument as CoreDNS normalizes it (`plugin.Host(...).NormalizeExact`): a
/// name made fully qualified, or a CIDR standing for its reverse zones.
fn zones_of(arg: &str) -> Option<Vec<Zone>> {
    match reverse_zones_for_cidr(arg) {
        Some(zones) => zones.iter().map(|z| Zone::new(z)).collect(),
        None if arg.ends_with('.') => Some(vec![Zone::new(arg)?]),
        None => Some(vec![Zone::new(&format!("{arg}."))?]),
    }
}

/// Parses every `k8s_external` line of a block. CoreDNS reads them in turn into one
/// plugin: the zones of the last line count, options add up.
pub fn parse(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<Options, ConfigError> {
    let mut o = Options {
        zones: Vec::new(),
        first_zone: Zone::root(),
        apex: b"\x03dns".to_vec().into_boxed_slice(),
        ttl: 5,
        headless: false,
        fallthrough: None,
    };
    for d in dirs {
        let mut zones = Vec::new();
        if d.args.is_empty() {
            zones.extend(ctx.zones.iter().cloned());
        }
        for a in &d.args {
            zones.extend(
                zones_of(a.as_str())
                    .ok_or_else(|| ConfigError::at(&a.loc, format!("{NAME}: invalid zone '{}'", a.as_str())))?,
            );
        }
        zones.dedup();
        o.first_zone = zones.first().cloned().unwrap_or_else(Zone::root);
        zones.sort_by_key(|z| std::cmp::Reverse(z.wire().len()));
        o.zones = zones;
        for opt in d.options() {
            match opt.name.as_str() {
                "ttl" => {
                    let Some(arg) = opt.args.first() else {
                        return Err(opt.arg_err(NAME));
                    };
                    // CoreDNS: `strconv.Atoi`, then the range; extra arguments are ignored.
                    let t: i64 = arg.as_str().parse().map_err(|_| {
                        ConfigError::at(
                            &arg.loc,
                            format!("{NAME}: strconv.Atoi: parsing \"{}\": invalid syntax", arg.as_str()),
                        )
                    })?;
                    if !(0..=3600).contains(&t) {
                        return Err(ConfigError::at(
                            &arg.loc,
                            format!("{NAME}: ttl must be in range [0, 3600]: {t}"),
                        ));
                    }
                    o.ttl = t as u32;
                }
                "apex" => {
                    let Some(arg) = opt.args.first() else {
                        return Err(opt.arg_err(NAME));
                    };
                    // A name of one label or more, written in front of each zone.
                    let text = arg.as_str().trim_end_matches('.');
                    let key = (!text.is_empty())
                        .then(|| NameKey::from_text(text))
                        .flatten()
                        .filter(|k| k.wire().len() + 1 + 4 < crate::dns::wire::MAX_NAME_LEN / 2);
                    let Some(key) = key else {
                        return Err(ConfigError::at(
                            &arg.loc,
                            format!("{NAME}: invalid apex '{}'", arg.as_str()),
                        ));
                    };
                    let wire = key.wire();
                    o.apex = wire[..wire.len() - 1].into();
                }
                "headless" => o.headless = true,
                "fallthrough" => {
                    let mut zones = Vec::new();
                    for a in &opt.args {
                        zones.extend(zones_of(a.as_str()).ok_or_else(|| {
                            ConfigError::at(&a.loc, format!("{NAME}: invalid fallthrough zone '{}'", a.as_str()))
                        })?);
                    }
                    if zones.is_empty() {
                        zones.push(Zone::root());
                    }
                    o.fallthrough = Some(zones);
                }
                other => return Err(opt.err(NAME, format!("unknown property '{other}'"))),
            }
        }
    }
    Ok(o)
}
