//! Changes to a finished reply that only take things away or add to its OPT record:
//! an EDNS option added by a response hook (`nsid`), the authority and additional
//! sections dropped (`minimal`). Records are only ever taken off the end, and a
//! compression pointer only points backwards (RFC 1035 4.1.4), so what stays needs no
//! rewriting; the OPT record, which `finish` puts last, moves down whole.

use super::{Response, Section};
use crate::dns::wire::{OPT_RR_LEN, QNAME_OFFSET, flag};

impl Response {
    /// Where the records end and the OPT record (if any) starts.
    fn records_end(&self) -> usize {
        self.records
            .last()
            .map_or(QNAME_OFFSET + self.qname_len + 4, |r| r.end as usize)
    }

    /// Takes the records from `keep` on off the reply (their bytes, positions and
    /// counts), moving the OPT record down after the ones kept.
    fn drop_records_from(&mut self, keep: usize) {
        if keep >= self.records.len() {
            return;
        }
        let opt_at = self.records_end();
        let to = self.records[keep].start as usize;
        for r in &self.records[keep..] {
            self.counts[r.section as usize] -= 1;
        }
        self.records.truncate(keep);
        let len = self.buf.len();
        self.buf.copy_within(opt_at..len, to);
        self.buf.truncate(len - (opt_at - to));
        let counts = self.counts;
        let extra = u16::from(self.edns.is_some());
        let mut header = self.header_mut();
        header.set_count(1, counts[0]);
        header.set_count(2, counts[1]);
        header.set_count(3, counts[2] + extra);
    }

    /// Adds an EDNS option (`code`, `data`) to the OPT record of this finished reply
    /// (NSID, RFC 5001). Only a reply to a query with EDNS has an OPT record (RFC 6891
    /// 7): without one, nothing is added and `false` is returned. When the option
    /// would take the reply past the client's size, records are taken off the end and
    /// TC is set, as a reply written with the option in it from the start would have
    /// been cut (CoreDNS adds NSID before its server truncates the reply); an option
    /// that does not fit even then is not added. Allocates nothing: the buffer has room
    /// for the largest message.
    pub fn add_option(&mut self, code: u16, data: &[u8]) -> bool {
        if !self.finished || self.edns.is_none() {
            return false;
        }
        let max = self.limit + self.opt_len();
        let grow = 4 + data.len();
        let opt_len = self.buf.len() - self.records_end();
        debug_assert!(opt_len >= OPT_RR_LEN);
        if QNAME_OFFSET + self.qname_len + 4 + opt_len + grow > max
            || opt_len - OPT_RR_LEN + grow > usize::from(u16::MAX)
        {
            return false;
        }
        if self.buf.len() + grow > max {
            let mut keep = self.records.len();
            let mut len = self.buf.len();
            while len + grow > max && keep > 0 {
                keep -= 1;
                let r = self.records[keep];
                len -= (r.end - r.start) as usize;
            }
            if self.records[keep..].iter().any(|r| r.section == Section::Answer) {
                self.answers_cut = true;
            }
            self.drop_records_from(keep);
            self.truncated = true;
            self.header_mut().set_flag(flag::TC, true);
        }
        let opt_at = self.records_end();
        self.buf.extend_from_slice(&code.to_be_bytes());
        self.buf.extend_from_slice(&(data.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(data);
        let rdlen = (self.buf.len() - opt_at - OPT_RR_LEN) as u16;
        self.buf[opt_at + 9..opt_at + 11].copy_from_slice(&rdlen.to_be_bytes());
        self.opt_extra += grow;
        true
    }

    /// Drops the authority and additional sections of this finished reply, keeping the
    /// header, question, answers and OPT record (`minimal`). TC is cleared when the
    /// writer set it only for records of the dropped sections: the reply as it now
    /// stands fits whole (CoreDNS's minimal hands its reply to the server's truncation,
    /// which then finds nothing to cut). A TC set otherwise (an upstream's) stays.
    pub fn keep_answers_only(&mut self) {
        if !self.finished {
            return;
        }
        let keep = self.records.iter().take_while(|r| r.section == Section::Answer).count();
        let cut_elsewhere = self.truncated && !self.answers_cut;
        self.drop_records_from(keep);
        if cut_elsewhere {
            self.truncated = false;
            if !self.tc_set_by_hand {
                self.header_mut().set_flag(flag::TC, false);
            }
        }
    }
}
