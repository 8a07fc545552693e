//! A minimal downstream consumer of `intentflow run --serve ADDR`.
//!
//! Subscribes to some views, keeps a live table of their current rows by applying every
//! change, and reports the table's size at each progress line. When the engine finishes
//! (or the connection closes) it prints the final table as JSON lines, sorted.
//!
//! ```text
//! intentflow run --input tcp://127.0.0.1:7000 --serve 127.0.0.1:7070 &
//! cargo run --example subscribe -- 127.0.0.1:7070 sessions,scores
//! ```
//!
//! It knows nothing about particular views: rows are keyed by (view, key), so it keeps
//! working as views are added.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7070".into());
    let views: Vec<String> = args
        .next()
        .unwrap_or_else(|| "sessions,scores".into())
        .split(',')
        .map(String::from)
        .collect();

    let mut stream = TcpStream::connect(&addr)?;
    let request = json!({ "subscribe": views, "snapshot": true });
    writeln!(stream, "{request}")?;

    // (view, key) -> current value; keys are compared as their JSON text.
    let mut table: BTreeMap<(String, String), Value> = BTreeMap::new();
    for line in BufReader::new(stream).lines() {
        let message: Value = serde_json::from_str(&line?)?;
        if let Some(error) = message.get("error") {
            return Err(format!("engine: {error}").into());
        }
        if let Some(progress) = message.get("progress") {
            if progress.is_null() {
                break;
            }
            let mut sizes: BTreeMap<&str, usize> = BTreeMap::new();
            for (view, _) in table.keys() {
                *sizes.entry(view.as_str()).or_default() += 1;
            }
            eprintln!("progress {progress}: {sizes:?}");
            continue;
        }
        let view = message["view"].as_str().unwrap_or_default().to_string();
        let key = message["key"].to_string();
        if message.get("deleted").is_some() || message["diff"].as_i64().is_some_and(|d| d < 0) {
            // A retraction removes the row unless an insertion already replaced it.
            if table.get(&(view.clone(), key.clone())) == Some(&message["value"])
                || message.get("deleted").is_some()
            {
                table.remove(&(view, key));
            }
        } else {
            table.insert((view, key), message["value"].clone());
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for ((view, key), value) in &table {
        let key: Value = serde_json::from_str(key)?;
        writeln!(
            out,
            "{}",
            json!({ "view": view, "key": key, "value": value })
        )?;
    }
    Ok(())
}
