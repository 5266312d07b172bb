//! `metadata`: turns on metadata for a server block (README.md beside this file).
//!
//! CoreDNS's collector asks every provider in the block for a closure per label at the
//! start of every query. Here nothing happens per query: the chain keeps the block's
//! providers and this plugin's zones ([`Handler::metadata_zones`]), and a consumer
//! (`log`'s `{/label}`, `template`'s `.Meta`) asks for one label when it needs it
//! (`Query::metadata`), which asks the providers then. The plugin itself only passes
//! the query on.

use crate::chain::{Handler, Query, Step};
use crate::config::{ConfigError, Directive};
use crate::dns::Zone;
use crate::plugin::{once, origins};
use crate::setup::{Plugin, SetupCtx};

const NAME: &str = "metadata";

/// The plugin: the zones metadata is collected for.
pub struct Metadata {
    zones: Vec<Zone>,
}

/// Parses `metadata [ZONES...]`: no block; the zones default to the server block's.
pub fn setup(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let d = once(NAME, dirs)?;
    if d.block.is_some() {
        // CoreDNS: `c.NextBlock() || c.Next()` is an argument error.
        return Err(d.arg_err(NAME));
    }
    let zones = origins(NAME, d, ctx)?;
    Ok(Plugin::handler(Metadata { zones }))
}

impl Handler for Metadata {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serve(&self, _: &mut Query<'_, '_>) -> Step {
        Step::Next
    }

    fn metadata_zones(&self) -> Option<&[Zone]> {
        Some(&self.zones)
    }
}

#[cfg(test)]
mod tests;
