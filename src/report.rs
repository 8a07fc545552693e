//! `intentflow report`: the experiments, readable. Reads the engine's output (a file,
//! stdin, or a live subscription to `run --serve`), folds the `experiments` view's changes,
//! and prints a table of every experiment; `--svg` also charts each variant's CTR and
//! conversion rate over event time.

use plotters::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

/// (experiment, variant).
type RowKey = (String, String);

/// A row at one time: (time, CTR, conversion rate).
type Point = (u64, Option<f64>, Option<f64>);

/// The `experiments` rows as the output stream leaves them, and each row's history.
#[derive(Default)]
pub struct Report {
    rows: BTreeMap<RowKey, Value>,
    /// Per row: (time, CTR, conversion rate) after each change, in time order.
    history: BTreeMap<RowKey, Vec<Point>>,
    /// Rows changed since the last progress line, with the time of their change.
    changed: BTreeMap<RowKey, u64>,
    /// Whether anything changed since the table was last printed (live mode).
    unprinted: bool,
}

impl Report {
    /// Applies one output line (either format); other views and bad lines are skipped.
    pub fn apply_line(&mut self, line: &str) {
        let Ok(parsed) = serde_json::from_str::<Value>(line) else {
            return;
        };
        if parsed.get("progress").is_some() {
            self.settle();
            return;
        }
        if parsed["view"] != "experiments" {
            return;
        }
        let key = &parsed["key"];
        let (Some(experiment), Some(variant)) =
            (key["experiment"].as_str(), key["variant"].as_str())
        else {
            return;
        };
        let id = (experiment.to_string(), variant.to_string());
        let time = parsed["time"].as_u64().unwrap_or(0);
        match (
            parsed.get("diff").and_then(Value::as_i64),
            parsed.get("deleted"),
        ) {
            (Some(diff), _) if diff > 0 => {
                self.rows.insert(id.clone(), parsed["value"].clone());
            }
            // A retraction of the row's current value (its replacement may come first).
            (Some(_), _) => {
                if self.rows.get(&id) == Some(&parsed["value"]) {
                    self.rows.remove(&id);
                }
            }
            (None, Some(Value::Bool(true))) => {
                self.rows.remove(&id);
            }
            (None, _) => {
                self.rows.insert(id.clone(), parsed["value"].clone());
            }
        }
        self.changed.insert(id, time);
    }

    /// Records the changed rows' new values in their history (at a progress line, when the
    /// diffs of a time are all in).
    fn settle(&mut self) {
        for (id, time) in std::mem::take(&mut self.changed) {
            if let Some(row) = self.rows.get(&id) {
                let point = (time, row["ctr"].as_f64(), row["conversion_rate"].as_f64());
                self.history.entry(id).or_default().push(point);
            }
            self.unprinted = true;
        }
    }

    /// Every experiment as a table: each variant's numbers, lifts against the control with
    /// 95 % intervals and p-values (`*` below 0.05), and the sample-ratio check.
    pub fn table(&self) -> String {
        let mut out = String::new();
        if self.rows.is_empty() {
            out.push_str("no experiments rows (is the experiments view on, with impressions?)\n");
            return out;
        }
        let mut experiments: BTreeMap<&str, Vec<(&str, &Value)>> = BTreeMap::new();
        for ((experiment, variant), row) in &self.rows {
            experiments
                .entry(experiment)
                .or_default()
                .push((variant, row));
        }
        for (experiment, mut variants) in experiments {
            // The control first, then the others by name.
            variants.sort_by_key(|(name, row)| (row["control"] != true, *name));
            let srm = &variants[0].1;
            let verdict = match srm["srm"].as_bool() {
                Some(true) => "MISMATCH: the split is off, do not trust these numbers",
                _ => "ok",
            };
            let _ = writeln!(
                out,
                "experiment {experiment}: sample ratio {verdict} (p = {})",
                p_value(&srm["srm_p_value"])
            );
            let _ = writeln!(
                out,
                "  {:<12} {:>7} {:>6} {:>10} {:>7} {:>7}  {:<26} {:>9} {:>6} {:>7}  {:<26} {:>9} {:>9} {:>11}",
                "variant",
                "users",
                "share",
                "impressions",
                "clicks",
                "CTR",
                "CTR lift [95% CI]",
                "p",
                "conv",
                "rate",
                "conversion lift [95% CI]",
                "p",
                "dwell",
                "revenue"
            );
            for (variant, row) in variants {
                let _ = writeln!(
                    out,
                    "  {:<12} {:>7} {:>6} {:>10} {:>7} {:>7}  {:<26} {:>9} {:>6} {:>7}  {:<26} {:>9} {:>9} {:>11}",
                    variant,
                    integer(&row["users"]),
                    percent(&row["expected_share"], 0),
                    integer(&row["impressions"]),
                    integer(&row["clicks"]),
                    percent(&row["ctr"], 2),
                    lift(row, "lift", "ci_low", "ci_high"),
                    p_value(&row["p_value"]),
                    integer(&row["conversions"]),
                    percent(&row["conversion_rate"], 2),
                    lift(
                        row,
                        "conversion_lift",
                        "conversion_ci_low",
                        "conversion_ci_high"
                    ),
                    p_value(&row["conversion_p_value"]),
                    seconds(&row["mean_dwell_ms"]),
                    money(&row["revenue"]),
                );
            }
        }
        out
    }

    /// Charts CTR and conversion rate per variant over event time, one row of two panels
    /// per experiment.
    pub fn write_svg(&self, path: &Path) -> Result<(), String> {
        let mut experiments: BTreeMap<&str, Vec<(&str, &[Point])>> = BTreeMap::new();
        for ((experiment, variant), points) in &self.history {
            experiments
                .entry(experiment)
                .or_default()
                .push((variant, points));
        }
        if experiments.is_empty() {
            return Err("no experiments rows to chart".into());
        }
        let start = self
            .history
            .values()
            .flat_map(|points| points.first().map(|p| p.0))
            .min()
            .unwrap_or(0);
        let hours = |time: u64| (time.saturating_sub(start)) as f64 / 3_600_000.0;
        let end = self
            .history
            .values()
            .flat_map(|points| points.last().map(|p| hours(p.0)))
            .fold(1.0f64, f64::max);
        let height = 360 * experiments.len() as u32;
        let root = SVGBackend::new(path, (1200, height)).into_drawing_area();
        let error = |e: &dyn std::fmt::Display| format!("writing {}: {e}", path.display());
        root.fill(&WHITE).map_err(|e| error(&e))?;
        let panels = root.split_evenly((experiments.len(), 2));
        for (row, (experiment, variants)) in experiments.iter().enumerate() {
            for (column, (metric, pick)) in [("CTR", 0usize), ("conversion rate", 1usize)]
                .into_iter()
                .enumerate()
            {
                let series: Vec<(&str, Vec<(f64, f64)>)> = variants
                    .iter()
                    .map(|(variant, points)| {
                        let line = points
                            .iter()
                            .filter_map(|(t, ctr, conv)| {
                                let value = if pick == 0 { *ctr } else { *conv };
                                value.map(|v| (hours(*t), v * 100.0))
                            })
                            .collect();
                        (*variant, line)
                    })
                    .collect();
                let top = series
                    .iter()
                    .flat_map(|(_, line)| line.iter().map(|p| p.1))
                    .fold(0.1f64, f64::max)
                    * 1.1;
                let area = &panels[row * 2 + column];
                let mut chart = ChartBuilder::on(area)
                    .caption(format!("{experiment}: {metric} (%)"), ("sans-serif", 18))
                    .margin(12)
                    .x_label_area_size(32)
                    .y_label_area_size(48)
                    .build_cartesian_2d(0.0..end, 0.0..top)
                    .map_err(|e| error(&e))?;
                chart
                    .configure_mesh()
                    .x_desc("hours of event time")
                    .draw()
                    .map_err(|e| error(&e))?;
                for (index, (variant, line)) in series.into_iter().enumerate() {
                    let color = Palette99::pick(index).to_rgba();
                    chart
                        .draw_series(LineSeries::new(line, color.stroke_width(2)))
                        .map_err(|e| error(&e))?
                        .label(variant)
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                        });
                }
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw()
                    .map_err(|e| error(&e))?;
            }
        }
        root.present().map_err(|e| error(&e))
    }
}

fn integer(value: &Value) -> String {
    value.as_i64().map_or("-".into(), |n| n.to_string())
}

fn percent(value: &Value, decimals: usize) -> String {
    value
        .as_f64()
        .map_or("-".into(), |x| format!("{:.*}%", decimals, x * 100.0))
}

fn signed_percent(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

/// `+10.6% [-0.1%, +21.4%]`, or `-` (the control, or no base to compare to).
fn lift(row: &Value, lift: &str, low: &str, high: &str) -> String {
    match (row[lift].as_f64(), row[low].as_f64(), row[high].as_f64()) {
        (Some(l), Some(lo), Some(hi)) => format!(
            "{} [{}, {}]",
            signed_percent(l),
            signed_percent(lo),
            signed_percent(hi)
        ),
        _ => "-".into(),
    }
}

fn p_value(value: &Value) -> String {
    match value.as_f64() {
        None => "-".into(),
        Some(p) if p < 0.0001 => "<0.0001 *".into(),
        Some(p) if p < 0.05 => format!("{p:.4} *"),
        Some(p) => format!("{p:.4}"),
    }
}

fn seconds(value: &Value) -> String {
    value
        .as_f64()
        .map_or("-".into(), |ms| format!("{:.1} s", ms / 1000.0))
}

fn money(value: &Value) -> String {
    value.as_f64().map_or("-".into(), |x| format!("{x:.2}"))
}

/// Reads `input` (a file, `-` for stdin, or `tcp://ADDR` to subscribe to a running engine's
/// `--serve`), prints the table at the end (and, live, after each progress line that
/// changed something), and writes the chart to `svg` if given.
pub fn report(input: &str, svg: Option<&Path>) -> Result<(), String> {
    let mut report = Report::default();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let live = input.starts_with("tcp://");
    let reader: Box<dyn BufRead> = if let Some(addr) = input.strip_prefix("tcp://") {
        let mut stream = std::net::TcpStream::connect(addr)
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream
            .write_all(b"{\"subscribe\":[\"experiments\"],\"snapshot\":true}\n")
            .map_err(|e| format!("subscribing at {addr}: {e}"))?;
        Box::new(BufReader::new(stream))
    } else if input == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(input).map_err(|e| format!("cannot read {input}: {e}"))?;
        Box::new(BufReader::new(file))
    };
    for line in reader.lines() {
        let line = line.map_err(|e| format!("reading {input}: {e}"))?;
        if let Some(error) = line.strip_prefix("{\"error\"") {
            return Err(format!("the engine said: {{\"error\"{error}"));
        }
        report.apply_line(&line);
        if live && report.unprinted && line.starts_with("{\"progress\"") {
            report.unprinted = false;
            // A closed stdout (`| head`) ends a live report.
            writeln!(out, "{}", report.table())
                .and_then(|()| out.flush())
                .map_err(|e| format!("writing the report: {e}"))?;
        }
    }
    report.settle();
    if report.rows.is_empty() {
        return Err(format!(
            "no experiments rows in {input}: run the engine with a config that has \
             [[experiments]], on events with impressions"
        ));
    }
    if !live || report.unprinted {
        write!(out, "{}", report.table()).map_err(|e| format!("writing the report: {e}"))?;
    }
    if let Some(path) = svg {
        report.write_svg(path)?;
        eprintln!("intentflow: wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(users: i64, ctr: f64, control: bool) -> String {
        format!(
            r#"{{"users":{users},"impressions":100,"clicks":10,"ctr":{ctr},"conversions":2,"conversion_rate":0.02,"control":{control},"expected_share":0.5,"srm":false,"srm_p_value":0.5,"lift":{lift},"ci_low":null,"ci_high":null,"p_value":0.01,"mean_dwell_ms":1500.0,"revenue":12.5}}"#,
            lift = if control { "null" } else { "0.1" }
        )
    }

    #[test]
    fn folds_diffs_and_upserts_and_charts_history() {
        let mut report = Report::default();
        // A change line of experiment e's `variant` row; `diff` None is an upsert line.
        let change = |time: u64, variant: &str, diff: Option<i64>, value: String| {
            let diff = diff.map_or(String::new(), |d| format!(r#""diff":{d},"#));
            format!(
                r#"{{"view":"experiments","key":{{"experiment":"e","variant":"{variant}"}},"time":{time},{diff}"value":{value}}}"#
            )
        };
        for line in [
            change(1000, "b", Some(1), row(5, 0.1, true)),
            change(1000, "a", Some(1), row(6, 0.2, false)),
            r#"{"progress":2000}"#.to_string(),
            change(3000, "b", Some(-1), row(5, 0.1, true)),
            change(3000, "b", Some(1), row(7, 0.3, true)),
            change(3000, "a", None, row(8, 0.25, false)),
            r#"{"progress":null}"#.to_string(),
        ] {
            report.apply_line(&line);
        }
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("experiment e: sample ratio ok"),
            "{table}"
        );
        // The control (b) first, whatever the names.
        assert!(lines[2].trim_start().starts_with("b "), "{table}");
        assert!(
            lines[2].contains("30.00%") && lines[3].contains("25.00%"),
            "{table}"
        );
        assert!(lines[3].contains("0.0100 *"), "{table}");
        let history = &report.history[&("e".to_string(), "b".to_string())];
        assert_eq!(history.len(), 2);
        assert_eq!(history[1], (3000, Some(0.3), Some(0.02)));

        let svg = tempfile_path("report.svg");
        report.write_svg(&svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(
            text.starts_with("<svg") && text.contains("e: CTR (%)"),
            "{text}"
        );
        let _ = std::fs::remove_file(svg);
    }

    fn tempfile_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("intentflow-{}-{name}", std::process::id()))
    }
}
