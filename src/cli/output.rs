//! Printing lists as aligned text columns or as JSON (`--json`).
//!
//! Table cells can hold values a RADIUS request chose (user names, NAS-Identifier), so each
//! is printed through `logging::printable`: a line break or terminal escape in one cannot
//! add a row or erase another. JSON needs nothing more: serde escapes control characters.

use anyhow::Result;
use serde::Serialize;

use crate::logging::printable;

/// Prints rows as JSON (an array) or as a table with a header.
pub fn print_rows<T: Serialize>(
    rows: &[T],
    json: bool,
    header: &[&str],
    cells: impl Fn(&T) -> Vec<String>,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    let table: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| h.to_string()).collect())
        .chain(rows.iter().map(|row| {
            cells(row)
                .into_iter()
                .map(|cell| printable(&cell).into_owned())
                .collect()
        }))
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            table
                .iter()
                .map(|row| row.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(())
}

/// A time in Unix milliseconds as RFC 3339 (UTC, seconds).
pub fn time(ms: i64) -> String {
    let time =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}
