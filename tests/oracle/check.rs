//! Runs the engine on an input and checks its output against the oracle: the harness the
//! end-to-end oracle tests share.

use super::{Oracle, Params};
use crate::common::{Granularity, Run, State, run_engine, temp_file};

/// The engine run that passed the check, and its final state.
pub struct Checked {
    pub run: Run,
    pub final_state: State,
}

/// Runs the engine on `input` with the config, catalog and models of `params` (`--views`
/// as given, plus `flags`), checks that its output is consolidated and equals the oracle
/// at every checkpoint of `granularity` for `views`, and reports the sizes on stderr.
/// Panics, naming the command, on a mismatch.
pub fn engine_against_oracle(
    input: &str,
    params: Params,
    views: &[&str],
    flags: &[&str],
    granularity: Granularity,
) -> Checked {
    let config_file = params
        .config_text
        .as_ref()
        .map(|text| temp_file(".toml", text));
    let catalog_file = params
        .catalog
        .text
        .as_ref()
        .map(|text| temp_file(".jsonl", text));
    let model_files: Vec<_> = [
        &params.models.kmeans,
        &params.models.propensity,
        &params.models.als,
    ]
    .into_iter()
    .flatten()
    .map(|model| temp_file(".json", &model.to_string()))
    .collect();
    let oracle = Oracle::new(input, params);
    assert!(
        oracle.rejected.is_empty(),
        "the test input has invalid lines (first: {:?}); this test is for valid input",
        oracle.rejected.first()
    );
    let input_file = temp_file(".jsonl", input);
    let view_list = views.join(",");
    let mut args = vec!["--views", &view_list];
    if let Some(file) = &config_file {
        args.extend(["--config", file.path().to_str().unwrap()]);
    }
    if let Some(file) = &catalog_file {
        args.extend(["--catalog", file.path().to_str().unwrap()]);
    }
    for file in &model_files {
        args.extend(["--model", file.path().to_str().unwrap()]);
    }
    args.extend_from_slice(flags);
    let run = run_engine(input_file.path(), &args);
    let output = run.output();
    output
        .check_consolidated()
        .unwrap_or_else(|e| panic!("`{}`: {e}", run.command));
    let started = std::time::Instant::now();
    oracle
        .check(&output, views, granularity)
        .unwrap_or_else(|e| panic!("`{}`:\n{e}", run.command));
    let final_state = output.final_state();
    let rows: Vec<String> = views
        .iter()
        .map(|view| {
            let n = final_state.keys().filter(|(v, _)| v == view).count();
            format!("{n} {view}")
        })
        .collect();
    eprintln!(
        "`{}`: {} events ({} late), {} changes, {} progress lines, rows at the end: {}; engine {:.1?}, oracle check {:.1?}",
        run.command,
        oracle.events.len(),
        oracle.late_events(),
        output.change_count(),
        output.progress_count(),
        rows.join(", "),
        run.elapsed,
        started.elapsed(),
    );
    Checked { run, final_state }
}
