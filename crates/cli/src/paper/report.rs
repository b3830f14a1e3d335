//! The paper report: one Markdown section per experiment (text, tables, plots), written to
//! `DIR/report.md` with the plots beside it.
//!
//! This module only formats what the experiments measured; it never measures, and it never
//! writes a number of its own. The paper's reference values come from the experiments,
//! marked as such.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One experiment's part of the report.
pub struct Section {
    /// Heading.
    pub title: String,
    /// Markdown body: what was run and the results.
    pub body: String,
    /// Headline rows for the summary at the top: (figure, ours, paper).
    pub headlines: Vec<(String, String, String)>,
}

impl Section {
    /// An empty section called `title`.
    pub fn new(title: &str) -> Section {
        Section { title: title.to_string(), body: String::new(), headlines: Vec::new() }
    }

    /// Appends a paragraph.
    pub fn text(&mut self, text: &str) {
        self.body.push_str(text.trim_end());
        self.body.push_str("\n\n");
    }

    /// Appends a table.
    pub fn table(&mut self, headers: &[&str], rows: &[Vec<String>]) {
        self.body.push_str(&md_table(headers, rows));
        self.body.push('\n');
    }

    /// Appends an image link to `file` (relative to the report).
    pub fn plot(&mut self, caption: &str, file: &str) {
        let _ = writeln!(self.body, "![{caption}]({file})\n");
    }

    /// Adds a headline row: what, our figure, the paper's.
    pub fn headline(&mut self, what: &str, ours: String, paper: &str) {
        self.headlines.push((what.to_string(), ours, paper.to_string()));
    }
}

/// A Markdown table (cells are escaped for `|`).
pub fn md_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| {} |", headers.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(headers.len()));
    for r in rows {
        let cells: Vec<String> = r.iter().map(|c| c.replace('|', "\\|")).collect();
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    s
}

/// What the report says about the run as a whole.
pub struct RunInfo {
    /// The command line that produced it.
    pub command: String,
    /// Quick or full.
    pub quick: bool,
    /// Input: "generated traces" or the capture used.
    pub input: String,
    /// Wall time of the whole run, s.
    pub seconds: f64,
    /// The machine (cores, memory) and the Redis server used.
    pub machine: String,
}

/// Writes `dir/report.md` from `sections` and returns its path.
pub fn write_report(dir: &Path, info: &RunInfo, sections: &[Section]) -> Result<PathBuf, String> {
    let mut s = String::new();
    let _ = writeln!(s, "# streamnf: the paper's evaluation (§7), reproduced\n");
    let _ = writeln!(
        s,
        "Produced by `{}` ({} run, {:.0} s) on {}. Input: {}. Every figure below was measured by this \
         run; numbers marked *paper* are the StreamNF paper's own (arXiv:1612.01497, Apache Storm + \
         Redis on CloudLab), quoted for comparison.\n",
        info.command,
        if info.quick { "quick" } else { "full" },
        info.seconds,
        info.machine,
        info.input
    );
    let rows: Vec<Vec<String>> = sections
        .iter()
        .flat_map(|sec| sec.headlines.iter().map(|(w, o, p)| vec![w.clone(), o.clone(), p.clone()]))
        .collect();
    if !rows.is_empty() {
        let _ = writeln!(s, "## Headlines\n");
        s.push_str(&md_table(&["figure", "streamnf (this run)", "paper"], &rows));
        s.push('\n');
    }
    for sec in sections {
        let _ = writeln!(s, "## {}\n", sec.title);
        s.push_str(&sec.body);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("report.md");
    std::fs::write(&path, s).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_has_headlines_sections_tables_and_plots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut a = Section::new("Figure 10");
        a.text("NAT in four models.");
        a.table(&["model", "p50"], &[vec!["local|state".into(), "300 ns".into()]]);
        a.plot("NAT", "fig10-nat.svg");
        a.headline("NAT overhead", "0.4 µs".into(), "3.5 µs");
        let info = RunInfo {
            command: "streamnf bench paper --quick".into(),
            quick: true,
            input: "generated traces".into(),
            seconds: 12.0,
            machine: "2 cores".into(),
        };
        let path = write_report(dir.path(), &info, &[a, Section::new("Table 2")]).expect("write");
        let md = std::fs::read_to_string(path).expect("read");
        for want in [
            "## Headlines",
            "| NAT overhead | 0.4 µs | 3.5 µs |",
            "## Figure 10",
            "| local\\|state | 300 ns |",
            "![NAT](fig10-nat.svg)",
            "## Table 2",
            "quick run",
        ] {
            assert!(md.contains(want), "report lacks {want:?}:\n{md}");
        }
    }
}
