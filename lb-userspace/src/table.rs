//! Plain-text tables for the CLI (`lb status`): every column titled, widths
//! taken from the longest cell (names and IPv6 addresses of any length),
//! text left-aligned and numbers right-aligned, two spaces between columns.
//!
//! A row can only be added with exactly one cell per title, so a header and
//! its rows can never disagree on the number of columns.

/// Alignment of one column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Text: names, addresses, states.
    Left,
    /// Numbers.
    Right,
}

/// A table under construction.
#[derive(Clone, Debug)]
pub struct Table {
    titles: Vec<&'static str>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns.
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Self {
            titles: columns.iter().map(|c| c.0).collect(),
            align: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; it must have one cell per column (a programming error
    /// otherwise, caught by the status tests).
    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(
            cells.len(),
            self.titles.len(),
            "table row has {} cells for {} columns",
            cells.len(),
            self.titles.len()
        );
        self.rows.push(cells);
    }

    /// Column widths: the longest of the title and every cell.
    fn widths(&self) -> Vec<usize> {
        self.titles
            .iter()
            .enumerate()
            .map(|(i, t)| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([t.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    /// The table as lines, each prefixed with `indent`, trailing spaces trimmed.
    pub fn render(&self, indent: &str) -> String {
        let widths = self.widths();
        let line = |cells: &[String]| -> String {
            let mut s = String::from(indent);
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    s.push_str("  ");
                }
                let pad = widths[i].saturating_sub(cell.chars().count());
                match self.align[i] {
                    Align::Left => {
                        s.push_str(cell);
                        s.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        s.extend(std::iter::repeat_n(' ', pad));
                        s.push_str(cell);
                    }
                }
            }
            s.trim_end().to_string() + "\n"
        };
        let titles: Vec<String> = self.titles.iter().map(|t| t.to_string()).collect();
        let mut out = line(&titles);
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }

    /// Where each column starts in a rendered line (after the indent).
    pub fn column_starts(&self) -> Vec<usize> {
        let mut at = 0;
        self.widths()
            .iter()
            .map(|w| {
                let start = at;
                at += w + 2;
                start
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_whatever_the_cell_lengths() {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("ADDRESS", Align::Left),
            ("FLOWS", Align::Right),
        ]);
        t.row(vec!["cp-01".into(), "198.18.2.11".into(), "7".into()]);
        t.row(vec![
            "a-rather-long-node-name".into(),
            "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:6443".into(),
            "1234567".into(),
        ]);
        let text = t.render("");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let starts = t.column_starts();
        // Every title starts where its column starts, and every right-aligned
        // cell ends where the header's column ends.
        assert_eq!(&lines[0][starts[1]..starts[1] + 7], "ADDRESS");
        assert_eq!(&lines[1][starts[1]..starts[1] + 11], "198.18.2.11");
        assert!(lines[2][starts[1]..].starts_with("[2001:db8:"));
        let end = lines[0].len();
        assert!(lines[0].ends_with("FLOWS"));
        assert_eq!(lines[1].len(), end.max(lines[2].len()));
        assert!(lines[1].ends_with("      7"));
        assert!(lines[2].ends_with("1234567"));
    }

    #[test]
    #[should_panic(expected = "3 cells for 2 columns")]
    fn a_row_with_an_extra_value_is_refused() {
        let mut t = Table::new(&[("A", Align::Left), ("B", Align::Right)]);
        t.row(vec!["x".into(), "1".into(), "2".into()]);
    }
}
