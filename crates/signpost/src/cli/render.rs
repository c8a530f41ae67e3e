//! Output: stdout (a closed pipe ends the command quietly), JSON, and tables.

use std::fmt;
use std::io::{self, Write as _};

use anyhow::Context as _;
use serde::Serialize;

/// Marker error: stdout was closed (e.g. piped into `head`); the command ends quietly.
#[derive(Debug)]
pub(super) struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `text` to stdout and flushes; a closed pipe is [`StdoutClosed`].
pub(super) fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(anyhow::Error::new(StdoutClosed)),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// Prints `value` as indented JSON and a newline.
pub(super) fn print_json_pretty<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("cannot format JSON")?;
    text.push('\n');
    write_stdout(&text)
}

/// A line on stderr (reconnections, skipped events).
pub(super) fn warn(message: &str) {
    // Nothing sensible to do if stderr itself is gone.
    let _ = writeln!(io::stderr(), "{message}");
}

/// Lays out rows under headers, padding every column but the last to its widest cell
/// (two spaces between columns, no trailing whitespace). Missing cells are blank.
pub(super) fn format_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (i, (cell, width)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let len = cell.chars().count();
            line.extend(std::iter::repeat_n(' ', width.saturating_sub(len)));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(&mut headers.iter().copied());
    for row in rows {
        push_row(&mut (0..headers.len()).map(|i| row.get(i).map_or("", String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns_to_the_widest_cell() {
        let rows = vec![
            vec!["users".to_owned(), "2".to_owned(), "x".to_owned()],
            vec!["a".to_owned(), "12345".to_owned(), "".to_owned()],
            vec!["ünï".to_owned()],
        ];
        let out = format_table(&["NAME", "N", "LAST"], &rows);
        assert_eq!(
            out,
            "NAME   N      LAST\n\
             users  2      x\n\
             a      12345\n\
             ünï\n"
        );
    }
}
