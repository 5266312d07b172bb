//! What kind of reply a message is (CoreDNS's `response.Typify`).

use super::{Response, Section};
use crate::dns::wire::{Rcode, rtype};

/// What kind of reply a message is, as CoreDNS classifies it (`plugin/pkg/response`
/// `Typify`): the `log` plugin's classes and the cache's choice of store follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseType {
    NoError,
    NameError,
    NoData,
    Delegation,
    /// Transfers, NOTIFY and UPDATE.
    Meta,
    OtherError,
}

impl ResponseType {
    /// The log class: `success`, `denial` or `error`.
    pub fn class(self) -> &'static str {
        match self {
            ResponseType::NoError | ResponseType::Delegation => "success",
            ResponseType::NameError | ResponseType::NoData => "denial",
            ResponseType::Meta | ResponseType::OtherError => "error",
        }
    }
}

impl Response {
    /// Classifies the reply to a query of type `qtype`.
    pub fn response_type(&self, qtype: u16) -> ResponseType {
        if qtype == rtype::AXFR || qtype == rtype::IXFR {
            return ResponseType::Meta;
        }
        let rcode = self.rcode;
        if self.counts[0] > 0 && rcode == Rcode::NOERROR {
            return ResponseType::NoError;
        }
        let auth = self.records.iter().filter(|r| r.section == Section::Authority);
        let (mut soa, mut ns) = (false, 0);
        for r in auth {
            match r.rtype {
                rtype::SOA => soa = true,
                rtype::NS => ns += 1,
                _ => {}
            }
        }
        match rcode {
            Rcode::NOERROR if soa => ResponseType::NoData,
            Rcode::NXDOMAIN => ResponseType::NameError,
            Rcode::NOERROR if ns > 0 => ResponseType::Delegation,
            Rcode::NOERROR => ResponseType::NoError,
            _ => ResponseType::OtherError,
        }
    }
}
