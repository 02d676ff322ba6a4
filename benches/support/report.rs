//! Results: one [`Row`] per benchmark row, each metric measured on the relay path (a)
//! and, where a direct subscriber has an equivalent, on the baseline (b). Printed as a
//! table and written as JSON from the same data, so the two never disagree.

use serde_json::{Value as Json, json};
use std::fmt::Write as _;

#[derive(Debug, Clone)]
pub enum Val {
    Num(f64),
    Flag(bool),
    /// No number, and why: not implemented yet, timed out, no baseline equivalent.
    Na(String),
}

impl Val {
    pub fn opt(value: Option<f64>, why: &str) -> Val {
        value.map_or_else(|| Val::Na(why.to_owned()), Val::Num)
    }

    pub fn num(&self) -> Option<f64> {
        match self {
            Val::Num(x) => Some(*x),
            _ => None,
        }
    }

    fn text(&self) -> String {
        match self {
            Val::Num(x) => fmt_num(*x),
            Val::Flag(b) => (if *b { "yes" } else { "no" }).to_owned(),
            Val::Na(_) => "n/a".to_owned(),
        }
    }

    fn json(&self) -> Json {
        match self {
            Val::Num(x) => json!(x),
            Val::Flag(b) => json!(b),
            Val::Na(why) => json!({"na": why}),
        }
    }
}

fn fmt_num(x: f64) -> String {
    match x.abs() {
        a if a >= 1000.0 => format!("{x:.0}"),
        a if a >= 100.0 => format!("{x:.1}"),
        a if a >= 1.0 => format!("{x:.2}"),
        _ => format!("{x:.3}"),
    }
}

pub struct Target {
    pub text: String,
    /// `None` when the value needed to judge is missing.
    pub pass: Option<bool>,
}

pub struct Metric {
    pub name: String,
    pub unit: &'static str,
    pub a: Val,
    pub b: Val,
    pub target: Option<Target>,
    /// Whether a/b means anything: not for a delay the baseline has next to none of.
    pub ratio: bool,
}

impl Metric {
    pub fn new(name: &str, unit: &'static str, a: Val, b: Val) -> Metric {
        Metric {
            name: name.to_owned(),
            unit,
            a,
            b,
            target: None,
            ratio: true,
        }
    }

    pub fn without_ratio(mut self) -> Metric {
        self.ratio = false;
        self
    }

    /// A relay-only metric: the direct subscriber has nothing comparable.
    pub fn relay(name: &str, unit: &'static str, a: Val) -> Metric {
        Metric::new(name, unit, a, Val::Na("no baseline equivalent".into()))
    }

    pub fn target(mut self, text: impl Into<String>, pass: Option<bool>) -> Metric {
        self.target = Some(Target {
            text: text.into(),
            pass,
        });
        self
    }

    /// Target `a <= limit`.
    pub fn at_most(self, limit: f64, text: impl Into<String>) -> Metric {
        let pass = self.a.num().map(|a| a <= limit);
        self.target(text, pass)
    }

    fn ratio(&self) -> Option<f64> {
        match (self.a.num(), self.b.num()) {
            (Some(a), Some(b)) if self.ratio && b > 0.0 && a >= 0.0 => Some(a / b),
            _ => None,
        }
    }

    fn status(&self) -> &'static str {
        match self.target.as_ref().map(|t| t.pass) {
            None => "",
            Some(Some(true)) => "PASS",
            Some(Some(false)) => "MISS",
            Some(None) => "MISS (n/a)",
        }
    }
}

pub struct Row {
    pub title: String,
    pub metrics: Vec<Metric>,
    pub notes: Vec<String>,
}

impl Row {
    pub fn new(title: &str) -> Row {
        Row {
            title: title.to_owned(),
            metrics: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn push(&mut self, metric: Metric) {
        self.metrics.push(metric);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}

/// Markdown table (readable in a terminal, pasteable into BENCHMARKS.md).
pub fn table(rows: &[Row]) -> String {
    let header = [
        "row",
        "metric",
        "relay (a)",
        "direct (b)",
        "a/b",
        "target",
        "status",
    ];
    let mut lines: Vec<[String; 7]> = Vec::new();
    for row in rows {
        for (i, m) in row.metrics.iter().enumerate() {
            let title = if i == 0 {
                row.title.clone()
            } else {
                String::new()
            };
            let name = if m.unit.is_empty() {
                m.name.clone()
            } else {
                format!("{} ({})", m.name, m.unit)
            };
            lines.push([
                title,
                name,
                m.a.text(),
                m.b.text(),
                m.ratio().map_or_else(String::new, |r| format!("{r:.2}")),
                m.target
                    .as_ref()
                    .map_or_else(String::new, |t| t.text.clone()),
                m.status().to_owned(),
            ]);
        }
    }
    let mut widths = header.map(str::len);
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut emit = |cells: &[String]| {
        out.push('|');
        for (cell, w) in cells.iter().zip(widths) {
            let _ = write!(out, " {cell:<w$} |");
        }
        out.push('\n');
    };
    emit(&header.map(str::to_owned));
    emit(&widths.map(|w| "-".repeat(w)));
    for line in &lines {
        emit(line);
    }
    for row in rows {
        for note in &row.notes {
            let _ = writeln!(out, "- {}: {note}", row.title);
        }
    }
    out
}

pub fn json(rows: &[Row], context: Json) -> Json {
    let rows: Vec<Json> = rows
        .iter()
        .map(|row| {
            let metrics: Vec<Json> = row
                .metrics
                .iter()
                .map(|m| {
                    json!({
                        "metric": m.name,
                        "unit": m.unit,
                        "relay": m.a.json(),
                        "baseline": m.b.json(),
                        "ratio": m.ratio(),
                        "target": m.target.as_ref().map(|t| json!({
                            "text": t.text,
                            "pass": t.pass,
                        })),
                    })
                })
                .collect();
            json!({"row": row.title, "metrics": metrics, "notes": row.notes})
        })
        .collect();
    json!({"context": context, "rows": rows})
}

/// Nearest-rank percentile of an ascending slice.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}
