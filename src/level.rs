//! Compression levels: each artifact's compression type owns a table of the
//! levels it takes and its default; validation and the `--help` text of
//! every level flag come from that table, so they cannot disagree.

use std::ops::RangeInclusive;

use anyhow::{Result, bail};
use clap::ValueEnum;

/// A compression whose level the user may choose.
pub trait Leveled: ValueEnum + Copy + 'static {
    /// What is compressed ("squashfs", "initrd"), for messages.
    const WHAT: &'static str;
    /// The levels it takes; `0..=0` for a compression without levels.
    fn levels(self) -> RangeInclusive<u32>;
    /// The level used when none is given.
    fn default_level(self) -> u32;

    /// The name the command line uses.
    fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned())
    }

    /// `given` if it is in range, else the default; refuses a level for a
    /// compression that takes none.
    fn level(self, given: Option<u32>) -> Result<u32> {
        let (name, what, range) = (self.name(), Self::WHAT, self.levels());
        if range == (0..=0) && given.is_some() {
            bail!("{name} {what} compression takes no level; leave --{what}-level out");
        }
        let level = given.unwrap_or(self.default_level());
        if !range.contains(&level) {
            bail!(
                "level {level} is out of range for {name} {what} compression (use {} to {})",
                range.start(),
                range.end()
            );
        }
        Ok(level)
    }
}

/// The help line of a level flag: "Compression level (zstd 1-22, default
/// 19; …)", from the table.
pub fn help<C: Leveled>() -> String {
    let parts: Vec<String> = C::value_variants()
        .iter()
        .filter(|c| c.levels() != (0..=0))
        .map(|c| {
            let r = c.levels();
            format!(
                "{} {}-{}, default {}",
                c.name(),
                r.start(),
                r.end(),
                c.default_level()
            )
        })
        .collect();
    format!("Compression level ({})", parts.join("; "))
}
