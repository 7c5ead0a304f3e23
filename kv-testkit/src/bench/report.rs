//! The table a benchmark prints: [`Report`] and its [`Layout`].

use super::Rounds;

/// How a [`Report`] lays its table out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// A Markdown table (`| a | b |` rows under a `|---|` line).
    Markdown,
    /// Plain columns: the workload left-aligned in `name_width` characters, numbers
    /// right-aligned (12 characters for rates, 8 or the title's length for the others).
    Aligned {
        /// Width of the workload column.
        name_width: usize,
    },
}

struct Column {
    title: String,
    decimals: usize,
    width: usize,
}

/// A kv-versus-raw table: a row per workload with kv ops/s, raw ops/s, kv ÷ raw and any extra
/// columns added with [`Report::column`].
pub struct Report {
    layout: Layout,
    workload: String,
    columns: Vec<Column>,
}

impl Report {
    /// A table in `layout` whose first four column titles are `titles`: the workload, kv ops/s,
    /// raw ops/s and kv ÷ raw.
    pub fn new(layout: Layout, titles: [&str; 4]) -> Report {
        let [workload, kv, raw, ratio] = titles;
        let report = Report {
            layout,
            workload: workload.to_string(),
            columns: Vec::new(),
        };
        report.with(kv, 0, 12).with(raw, 0, 12).with(ratio, 2, 8)
    }

    /// The Markdown table of a best-of-rounds benchmark, filled with
    /// [`Report::best_of_rounds_row`]: each side's best round (kv ops/s, raw ops/s, kv ÷ raw),
    /// the median of the per-round ratios, each side's process CPU µs per operation and
    /// each side's requests per operation as the server counted them (`–` when not counted).
    pub fn best_of_rounds() -> Report {
        Report::markdown([
            "workload",
            "kv ops/s (best)",
            "raw ops/s (best)",
            "kv / raw (best)",
        ])
        .column("kv / raw (median of rounds)", 2)
        .column("kv client CPU µs/op", 1)
        .column("raw client CPU µs/op", 1)
        .column("kv server requests/op", 2)
        .column("raw server requests/op", 2)
    }

    /// Prints the row of workload `name` of a [`Report::best_of_rounds`] table.
    pub fn best_of_rounds_row(&self, name: &str, rounds: &Rounds) {
        self.best_of_rounds_row_with_requests(name, rounds, rounds.requests_per_op());
    }

    /// [`Report::best_of_rounds_row`] with the requests per operation `(kv, raw)` measured
    /// apart from the timed rounds (for a server counter that cannot be read around each run,
    /// e.g. Consul's per-interval metrics; `NaN` prints as `–`).
    pub fn best_of_rounds_row_with_requests(
        &self,
        name: &str,
        rounds: &Rounds,
        (kv_req, raw_req): (f64, f64),
    ) {
        let (kv, raw) = rounds.best_rates();
        let (kv_cpu, raw_cpu) = rounds.cpu_us_per_op();
        self.row(
            name,
            kv,
            raw,
            &[rounds.median_ratio(), kv_cpu, raw_cpu, kv_req, raw_req],
        );
    }

    /// [`Report::new`] with [`Layout::Markdown`].
    pub fn markdown(titles: [&str; 4]) -> Report {
        Report::new(Layout::Markdown, titles)
    }

    /// Adds a column after the others, printed with `decimals` decimals.
    pub fn column(self, title: &str, decimals: usize) -> Report {
        self.with(title, decimals, 8)
    }

    fn with(mut self, title: &str, decimals: usize, width: usize) -> Report {
        let width = width.max(title.chars().count());
        self.columns.push(Column {
            title: title.to_string(),
            decimals,
            width,
        });
        self
    }

    fn line(&self, name: &str, cells: Vec<String>) -> String {
        match self.layout {
            Layout::Markdown => format!("| {name} | {} |", cells.join(" | ")),
            Layout::Aligned { name_width } => {
                let mut line = format!("{name:<name_width$}");
                for (cell, col) in cells.iter().zip(&self.columns) {
                    line.push_str(&format!(" {cell:>w$}", w = col.width));
                }
                line
            }
        }
    }

    /// The header line(s), without printing them.
    pub fn header(&self) -> String {
        let titles = self.columns.iter().map(|c| c.title.clone()).collect();
        let head = self.line(&self.workload, titles);
        match self.layout {
            Layout::Markdown => format!("{head}\n|---|{}", "---|".repeat(self.columns.len())),
            Layout::Aligned { .. } => head,
        }
    }

    /// Prints [`Report::header`], after a line saying so when both sides are the raw client
    /// ([`raw_against_raw`](super::raw_against_raw)).
    pub fn print_header(&self) {
        if super::raw_against_raw() {
            println!(
                "KV_BENCH_SIDE=raw-raw: the raw client on both sides (A/A calibration); \
                 the kv columns are its first slot, every ratio's true value is 1"
            );
        }
        println!("{}", self.header());
    }

    /// The row of workload `name`, without printing it: `kv` and `raw` ops/s, their ratio
    /// `kv / raw`, then `extra` (one value per added column; `NaN` prints as `–`).
    pub fn format_row(&self, name: &str, kv: f64, raw: f64, extra: &[f64]) -> String {
        let values = [kv, raw, kv / raw].into_iter().chain(extra.iter().copied());
        let cells = values
            .zip(&self.columns)
            .map(|(v, c)| {
                if v.is_nan() {
                    "–".to_string()
                } else {
                    format!("{v:.d$}", d = c.decimals)
                }
            })
            .collect();
        self.line(name, cells)
    }

    /// Prints [`Report::format_row`].
    pub fn row(&self, name: &str, kv: f64, raw: f64, extra: &[f64]) {
        println!("{}", self.format_row(name, kv, raw, extra));
    }
}
