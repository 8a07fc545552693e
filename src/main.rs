//! intentflow: wires the command line to the runtime. See README.md and DESIGN.md.

use clap::Parser;
use cli::{Cli, Command, ConfigArgs, GenerateArgs, RunArgs};
use intentflow::{cli, config, engine, generate, ingest, model_files, output, serve};
use intentflow_dataflows::ViewName;
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long a finished engine waits for subscribers to receive what is queued for them.
const SUBSCRIBER_DRAIN_LIMIT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Generate(args) => generate(args),
        Command::Report(args) => {
            intentflow::report::report(&args.input, args.svg.as_deref()).map(|()| ExitCode::SUCCESS)
        }
        Command::Train(args) => intentflow::train::train(&args).map(|()| ExitCode::SUCCESS),
        Command::Config(args) => config_command(args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("intentflow: error: {message}");
            ExitCode::from(2)
        }
    }
}

fn timely_config(args: &RunArgs) -> Result<timely::Config, String> {
    let workers = args.workers as usize;
    if args.processes == 1 {
        return Ok(timely::Config::process(workers));
    }
    let processes = args.processes as usize;
    let process = args.process as usize;
    if process >= processes {
        return Err(format!(
            "--process {process} is out of range for --processes {processes}"
        ));
    }
    let addresses: Vec<String> = match &args.hostfile {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read hostfile {}: {e}", path.display()))?;
            let addresses: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            if addresses.len() < processes {
                return Err(format!(
                    "hostfile {} lists {} addresses; --processes is {processes}",
                    path.display(),
                    addresses.len()
                ));
            }
            addresses.into_iter().take(processes).collect()
        }
        None => (0..processes)
            .map(|i| format!("localhost:{}", 2101 + i))
            .collect(),
    };
    Ok(timely::Config {
        communication: timely::CommunicationConfig::Cluster {
            threads: workers,
            process,
            addresses,
            report: false,
            zerocopy: false,
        },
        worker: timely::WorkerConfig::default(),
    })
}

fn run(args: RunArgs) -> Result<ExitCode, String> {
    let started = Instant::now();
    let config = match &args.config {
        Some(path) => config::load(path)?,
        None => Default::default(),
    };
    let mut params = config.views;
    let models = model_files::load_into(&args.models, &mut params)?;
    let views: Vec<ViewName> = match &args.views {
        // By default the model views are on when there is something to compute them from.
        None => ViewName::ALL
            .into_iter()
            .filter(|view| match view {
                ViewName::Segments => {
                    models.kmeans.is_some()
                        || args.refit_every.is_some()
                        || !params.segments.rules.is_empty()
                }
                ViewName::Propensity => params.propensity.is_some(),
                ViewName::Als => models.als.is_some(),
                ViewName::Experiments => !params.experiments.is_empty(),
                _ => true,
            })
            .collect(),
        Some(names) => names
            .iter()
            .map(|name| name.trim().parse())
            .collect::<Result<_, _>>()?,
    };
    if views.contains(&ViewName::Experiments) && params.experiments.is_empty() {
        return Err(
            "the experiments view needs [[experiments]] in the config (--config FILE)".into(),
        );
    }
    let refit_kmeans = views.contains(&ViewName::Segments);
    let refit_als = views.contains(&ViewName::Als);
    if args.refit_every.is_some() && !refit_kmeans && !refit_als {
        return Err(
            "--refit-every refits the models of the segments and als views; add one to --views"
                .into(),
        );
    }
    let refit = args
        .refit_every
        .map(|every| intentflow::refit::RefitOptions {
            every,
            train: config.train.clone(),
            recency_days: params.windows.recency_days.clone(),
            kmeans: refit_kmeans,
            als: refit_als,
            out: args.refit_out.clone(),
        });
    let timely = timely_config(&args)?;
    let leader = args.process == 0;

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal kills at once; the first ends the input gracefully.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
            .map_err(|e| e.to_string())?;
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }

    if !leader {
        // Only process 0 writes the protocol; keep timely's chatter off our stdout.
        output::protocol_stdout(true).map_err(|e| format!("stdout: {e}"))?;
    }
    let input_worker = Arc::new(OnceLock::new());
    let (mut ingest_thread, mut output_thread, mut engine_input, mut engine_output) =
        (None, None, None, None);
    let mut forwarders = None;
    if leader {
        let (to_worker, from_ingest) = crossbeam_channel::bounded(64);
        let (to_output, from_engine) = output::channel(1024);
        let subscriptions = match &args.serve {
            Some(addr) => {
                let (requests, subscriptions) = crossbeam_channel::unbounded();
                let (local, tracker) =
                    serve::spawn_server(addr, views.clone(), args.serve_queue.max(1), requests)?;
                eprintln!("intentflow: serving subscriptions on {local}");
                forwarders = Some(tracker);
                Some(subscriptions)
            }
            None => None,
        };
        let stdout = if args.no_stdout {
            None
        } else {
            let cluster = args.processes > 1;
            Some(output::protocol_stdout(cluster).map_err(|e| format!("stdout: {e}"))?)
        };
        let options = output::OutputOptions {
            format: args.format,
            stdout,
        };
        output_thread = Some(std::thread::spawn(move || {
            output::run_output(from_engine, subscriptions, options)
        }));
        let ingest_options = ingest::IngestOptions {
            input: ingest::InputSpec::parse(&args.input),
            catalog: args.catalog.clone(),
            tick_ms: args.tick_ms,
            lateness_ms: args.lateness_ms,
            idle_ms: args.idle_ms,
            max_line_bytes: args.max_line_bytes,
            strict: args.strict,
            dead_letter: args.dead_letter.clone(),
        };
        let link = ingest::WorkerLink::new(to_worker, Arc::clone(&input_worker));
        let stop = Arc::clone(&stop);
        ingest_thread = Some(std::thread::spawn(move || {
            ingest::run_ingest(ingest_options, link, stop)
        }));
        engine_input = Some(from_ingest);
        engine_output = Some(to_output);
    }

    let stats = args
        .arrangement_stats
        .as_deref()
        .map(intentflow::stats::create_file)
        .transpose()?;
    let setup = engine::EngineSetup {
        timely,
        params,
        views,
        input: engine_input,
        output: engine_output,
        input_worker,
        stats,
        models,
        refit,
    };
    engine::run(setup)?;

    let Some(ingest_thread) = ingest_thread else {
        return Ok(ExitCode::SUCCESS);
    };
    let ingest = ingest_thread
        .join()
        .map_err(|_| "ingest thread panicked".to_string())??;
    let output = output_thread
        .map(|t| t.join())
        .transpose()
        .map_err(|_| "output thread panicked".to_string())?
        .unwrap_or_default();
    // The output thread has closed every subscriber queue; let them write out what is queued.
    if let Some(forwarders) = forwarders {
        let still = forwarders.wait_idle(SUBSCRIBER_DRAIN_LIMIT);
        if still > 0 {
            eprintln!(
                "intentflow: {still} subscriber(s) still writing after {}s; closing them",
                SUBSCRIBER_DRAIN_LIMIT.as_secs()
            );
        }
    }
    print_summary(&ingest, &output, started.elapsed().as_secs_f64());
    Ok(match ingest.strict_failure {
        Some(message) => {
            eprintln!("intentflow: error: --strict: stopped at {message}");
            ExitCode::from(1)
        }
        None => ExitCode::SUCCESS,
    })
}

fn print_summary(ingest: &ingest::IngestStats, output: &output::OutputStats, seconds: f64) {
    let rate = ingest.events as f64 / seconds.max(1e-9);
    eprintln!(
        "intentflow: {} lines: {} events ({} late, {} of unknown type, {} with items not in the catalog), {} bad lines; {} catalog items",
        ingest.lines,
        ingest.events,
        ingest.late_events,
        ingest.unknown_types,
        ingest.unknown_items,
        ingest.bad_lines,
        ingest.catalog_items
    );
    eprintln!(
        "intentflow: changes emitted: {}; {} progress lines; {seconds:.2} s, {rate:.0} events/s",
        per_view(&output.changes),
        output.progress_lines
    );
    if !output.live_rows.is_empty() {
        eprintln!(
            "intentflow: rows at the end: {}",
            per_view(&output.live_rows)
        );
    }
}

/// "sessions 12, scores 34" (or "none"), for the summary.
fn per_view<N: std::fmt::Display>(counts: &BTreeMap<ViewName, N>) -> String {
    if counts.is_empty() {
        return "none".to_string();
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(view, n)| format!("{view} {n}"))
        .collect();
    parts.join(", ")
}

/// The experiment `generate --config --uplift` simulates.
fn experiment_sim(args: &GenerateArgs) -> Result<Option<generate::ExperimentSim>, String> {
    let Some(path) = &args.config else {
        return match args.uplift.is_empty() {
            true => Ok(None),
            false => Err("--uplift needs --config (the experiment to simulate)".into()),
        };
    };
    let config = config::load(path)?;
    let Some(experiment) = config.views.experiments.into_iter().next() else {
        return Err(format!(
            "config {} has no [[experiments]] to simulate",
            path.display()
        ));
    };
    let mut uplift = vec![0.0; experiment.variants.len()];
    for spec in &args.uplift {
        let (name, fraction) = spec
            .split_once('=')
            .ok_or_else(|| format!("--uplift {spec:?}: expected VARIANT=FRACTION"))?;
        let index = experiment
            .variants
            .iter()
            .position(|variant| variant.name == name)
            .ok_or_else(|| {
                format!(
                    "--uplift {spec:?}: experiment {:?} has no variant {name:?}",
                    experiment.name
                )
            })?;
        if uplift[index] != 0.0 {
            return Err(format!("--uplift {spec:?}: {name:?} has an uplift already"));
        }
        uplift[index] = fraction
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f > -1.0)
            .ok_or_else(|| format!("--uplift {spec:?}: the fraction must be a number above -1"))?;
    }
    Ok(Some(generate::ExperimentSim { experiment, uplift }))
}

fn generate(args: GenerateArgs) -> Result<ExitCode, String> {
    let spec = generate::GenerateSpec {
        users: args.users,
        items: args.items,
        events: args.events,
        seed: args.seed,
        days: args.days,
        experiment: experiment_sim(&args)?,
        ..Default::default()
    };
    let create = |path: &std::path::Path| {
        std::fs::File::create(path)
            .map(BufWriter::new)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))
    };
    let mut catalog = args.catalog_out.as_deref().map(create).transpose()?;
    let mut truth = args.truth_out.as_deref().map(create).transpose()?;
    let stdout = std::io::stdout();
    let mut events = BufWriter::with_capacity(1 << 16, stdout.lock());
    generate::generate(
        &spec,
        &mut events,
        catalog.as_mut().map(|w| w as &mut dyn Write),
        truth.as_mut().map(|w| w as &mut dyn Write),
    )
    .and_then(|_| events.flush())
    .and_then(|_| catalog.as_mut().map_or(Ok(()), |w| w.flush()))
    .and_then(|_| truth.as_mut().map_or(Ok(()), |w| w.flush()))
    .map_err(|e| format!("generate: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

fn config_command(args: ConfigArgs) -> Result<ExitCode, String> {
    if let Some(path) = &args.check {
        config::load(path)?;
        eprintln!("intentflow: {} is valid", path.display());
    }
    if args.print_defaults || args.check.is_none() {
        print!("{}", config::DEFAULT_CONFIG);
    }
    Ok(ExitCode::SUCCESS)
}
