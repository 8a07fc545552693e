//! End-to-end I/O paths of `intentflow run` through the real binary: bad input
//! (DESIGN.md §7), TCP producers and `--serve` subscribers (§5), cluster mode (§6).

mod common;

use common::{BIN, Output, intentflow, repo_path, run_engine, temp_file};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const GOOD: [&str; 4] = [
    r#"{"user":"u1","type":"click","ts":1000,"item":"p1","session":"s1"}"#,
    r#"{"user":"u1","type":"add_to_cart","ts":2000,"item":"p1","session":"s1"}"#,
    r#"{"user":"u2","type":"purchase","ts":3000,"item":"p2"}"#,
    r#"{"user":"u2","type":"page_view","ts":4000,"item":"p2","scroll":0.5}"#,
];

/// Good lines with every kind of bad line between them; returns the bytes and the line
/// numbers (1-based) of the bad ones with a fragment of their expected reason.
fn mixed_input() -> (Vec<u8>, Vec<(usize, &'static str)>) {
    let huge = format!(
        r#"{{"user":"u9","type":"click","ts":1,"pad":"{}"}}"#,
        "x".repeat(2 << 20)
    );
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "malformed JSON"),
        (
            br#"{"type":"click","ts":5}"#.to_vec(),
            "missing field \"user\"",
        ),
        (
            br#"{"user":42,"type":"click","ts":5}"#.to_vec(),
            "field \"user\"",
        ),
        (huge.into_bytes(), "exceeds --max-line-bytes"),
        (
            b"{\"user\":\"u\xff\",\"type\":\"click\",\"ts\":5}".to_vec(),
            "invalid UTF-8",
        ),
        (
            br#"{"user":"u3","type":"scroll","ts":5,"scroll":1.7}"#.to_vec(),
            "\"scroll\"",
        ),
        (
            br#"{"user":"u3","type":"page_view","ts":5,"dwell_ms":-1}"#.to_vec(),
            "\"dwell_ms\"",
        ),
        (
            br#"{"user":"u3","type":"","ts":5}"#.to_vec(),
            "empty \"type\"",
        ),
        (
            br#"{"user":"u3","type":"click","ts":"soon"}"#.to_vec(),
            "unparseable \"ts\"",
        ),
        (b"[1,2,3]".to_vec(), "JSON object"),
    ];
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    let mut line = 0;
    let mut good = GOOD.iter().cycle();
    for (raw, reason) in bad {
        for _ in 0..2 {
            bytes.extend_from_slice(good.next().unwrap().as_bytes());
            bytes.push(b'\n');
            line += 1;
        }
        bytes.extend_from_slice(&raw);
        bytes.push(b'\n');
        line += 1;
        expected.push((line, reason));
    }
    bytes.extend_from_slice(GOOD[0].as_bytes());
    bytes.push(b'\n');
    (bytes, expected)
}

fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    file
}

#[test]
fn bad_lines_are_reported_dead_lettered_and_skipped() {
    let (bytes, bad) = mixed_input();
    let input = write_temp(&bytes);
    let dead_letter = tempfile::NamedTempFile::new().unwrap();
    let run = run_engine(
        input.path(),
        &["--dead-letter", dead_letter.path().to_str().unwrap()],
    );

    for (line, reason) in &bad {
        let reported = run
            .stderr
            .lines()
            .find(|l| l.contains(&format!("line {line}: ")));
        let reported =
            reported.unwrap_or_else(|| panic!("line {line} not reported:\n{}", run.stderr));
        assert!(
            reported.contains(reason),
            "line {line}: {reported:?} lacks {reason:?}"
        );
    }
    let records: Vec<serde_json::Value> = std::fs::read_to_string(dead_letter.path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lines: Vec<u64> = records
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(
        lines,
        bad.iter().map(|(l, _)| *l as u64).collect::<Vec<_>>()
    );
    assert!(
        records
            .iter()
            .all(|r| r["error"].as_str().is_some_and(|e| !e.is_empty()))
    );
    let good_lines = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count()
        - bad.len();
    assert!(
        run.stderr.contains(&format!("{good_lines} events"))
            && run.stderr.contains(&format!("{} bad lines", bad.len())),
        "summary: {}",
        run.stderr
    );

    // Every good line counted: the state equals a run on the good lines alone.
    let good_only: Vec<&[u8]> = bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(i, l)| !l.is_empty() && !bad.iter().any(|(n, _)| *n == i + 1))
        .map(|(_, l)| l)
        .collect();
    let clean = write_temp(&good_only.join(&b'\n'));
    let reference = run_engine(clean.path(), &[]);
    assert_eq!(run.output().final_state(), reference.output().final_state());
}

#[test]
fn strict_stops_at_the_first_bad_line() {
    let (bytes, bad) = mixed_input();
    let input = write_temp(&bytes);
    let run = intentflow(&["run", "--input", input.path().to_str().unwrap(), "--strict"]);
    assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("--strict: stopped at line {}", bad[0].0)),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains(&format!("line {}:", bad[1].0)),
        "read past the first bad line"
    );
}

#[test]
fn config_typo_is_an_error_naming_the_key() {
    let config = temp_file(".toml", "[weights]\nclikc = 2\n");
    let run = intentflow(&[
        "run",
        "--input",
        repo_path("examples/events.jsonl").to_str().unwrap(),
        "--config",
        config.path().to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(2));
    assert!(run.stderr.contains("clikc"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
}

/// A running engine whose stderr is read line by line, and whose stdout is collected, in
/// the background (an undrained stdout pipe would rightly back-pressure the engine).
struct Engine {
    child: Child,
    stderr: mpsc::Receiver<String>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Engine {
    fn start(args: &[&str]) -> Engine {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting intentflow");
        let (send, stderr) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        let mut pipe = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).unwrap();
            text
        });
        Engine {
            child,
            stderr,
            stdout: Some(stdout),
        }
    }

    /// Everything the engine wrote to stdout; call after it has exited.
    fn stdout(&mut self) -> String {
        self.stdout.take().unwrap().join().unwrap()
    }

    /// Waits for a stderr line containing `needle`; returns it.
    fn expect_stderr(&self, needle: &str) -> String {
        loop {
            match self.stderr.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(error) => panic!("no stderr line with {needle:?}: {error}"),
            }
        }
    }

    /// The addresses the engine announces on stderr after each of `needles`, in any order.
    fn addresses(&self, needles: &[&str]) -> Vec<String> {
        let mut found: Vec<Option<String>> = vec![None; needles.len()];
        while found.iter().any(Option::is_none) {
            let line = self.expect_stderr("intentflow:");
            for (needle, slot) in needles.iter().zip(&mut found) {
                if line.contains(needle) {
                    *slot = Some(
                        line.rsplit(' ')
                            .next()
                            .unwrap()
                            .trim_start_matches("tcp://")
                            .to_string(),
                    );
                }
            }
        }
        found.into_iter().map(Option::unwrap).collect()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

fn subscribe(addr: &str, request: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    writeln!(stream, "{request}").unwrap();
    stream
}

#[test]
fn tcp_producers_and_a_subscriber_see_the_file_state() {
    let events = std::fs::read_to_string(repo_path("examples/events.jsonl")).unwrap();
    let expected = run_engine(
        &repo_path("examples/events.jsonl"),
        &["--views", "sessions,scores"],
    )
    .output()
    .final_state();

    let mut engine = Engine::start(&[
        "run",
        "--input",
        "tcp://127.0.0.1:0",
        "--serve",
        "127.0.0.1:0",
        "--workers",
        "2",
    ]);
    let addresses = engine.addresses(&["accepting events on", "serving subscriptions on"]);
    let (input, serve) = (addresses[0].clone(), addresses[1].clone());
    let subscriber = subscribe(
        &serve,
        r#"{"subscribe":["sessions","scores"],"snapshot":true}"#,
    );
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        BufReader::new(subscriber)
            .read_to_string(&mut text)
            .unwrap();
        text
    });

    // Two producers, each sending half of the lines.
    let lines: Vec<&str> = events.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    for half in [first, second] {
        let mut producer = TcpStream::connect(&input).unwrap();
        producer
            .write_all((half.join("\n") + "\n").as_bytes())
            .unwrap();
    }
    engine.expect_stderr("disconnected after");
    engine.expect_stderr("disconnected after");
    assert!(engine.terminate().success());

    let received = Output::parse(&reader.join().unwrap()).unwrap();
    assert_eq!(received.final_state(), expected);
}

#[test]
fn snapshot_then_live_changes_for_a_late_subscriber() {
    let mut engine = Engine::start(&[
        "run",
        "--input",
        "stdin",
        "--serve",
        "127.0.0.1:0",
        "--idle-ms",
        "50",
    ]);
    let serve = engine.addresses(&["serving subscriptions on"]).remove(0);
    let mut stdin = engine.child.stdin.take().unwrap();
    writeln!(stdin, "{}\n{}", GOOD[0], GOOD[1]).unwrap();
    stdin.flush().unwrap();
    // The idle watermark makes the first two events' times complete.
    let mut first = BufReader::new(subscribe(
        &serve,
        r#"{"subscribe":["scores"],"snapshot":false}"#,
    ));
    let mut line = String::new();
    while !line.contains("\"progress\"") {
        line.clear();
        first.read_line(&mut line).unwrap();
    }
    let late = subscribe(&serve, r#"{"subscribe":["scores"],"snapshot":true}"#);
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        BufReader::new(late).read_to_string(&mut text).unwrap();
        text
    });
    std::thread::sleep(Duration::from_millis(300));
    writeln!(stdin, "{}", GOOD[2]).unwrap();
    drop(stdin);
    assert!(engine.child.wait().unwrap().success());
    let text = reader.join().unwrap();
    let snapshot_line = text.lines().next().unwrap();
    assert!(
        snapshot_line.contains(r#""item":"p1""#) && snapshot_line.contains(r#""diff":1"#),
        "{text}"
    );
    let state = Output::parse(&text).unwrap().final_state();
    assert_eq!(state.len(), 2, "p1 from the snapshot, p2 live: {text}");
}

/// The progress bounds a subscription receives until one passes `bound` (None if the
/// stream ends or stays silent for 10 s first).
fn progress_until(stream: TcpStream, bound: u64) -> (Vec<u64>, Option<u64>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        if let Some(progress) = value["progress"].as_u64() {
            seen.push(progress);
            if progress > bound {
                return (seen, Some(progress));
            }
        }
    }
    (seen, None)
}

#[test]
fn idle_input_makes_the_newest_event_final() {
    // With --idle-ms 0 the watermark passes the newest tick as soon as nothing more is
    // buffered; with a longer idle time, once the input has been quiet that long. Either
    // way the last event's changes come out without further input or EOF.
    for idle in ["0", "100"] {
        let mut engine = Engine::start(&[
            "run",
            "--input",
            "stdin",
            "--serve",
            "127.0.0.1:0",
            "--idle-ms",
            idle,
            "--lateness-ms",
            "0",
        ]);
        let serve = engine.addresses(&["serving subscriptions on"]).remove(0);
        let subscription = subscribe(&serve, r#"{"subscribe":["scores"],"snapshot":false}"#);
        std::thread::sleep(Duration::from_millis(200));
        let mut stdin = engine.child.stdin.take().unwrap();
        // ts 1500 is in the tick starting at 1000: final once progress passes 1000
        writeln!(
            stdin,
            r#"{{"user":"u1","type":"click","ts":1500,"item":"p1"}}"#
        )
        .unwrap();
        stdin.flush().unwrap();
        let (seen, passed) = progress_until(subscription, 1000);
        assert_eq!(passed, Some(2000), "--idle-ms {idle}: progress {seen:?}");
        drop(stdin);
        assert!(engine.child.wait().unwrap().success());
    }
}

#[test]
fn slow_subscriber_is_dropped_and_nothing_stalls() {
    let data = common::generate(400, 200, 30_000, 11);
    let mut engine = Engine::start(&[
        "run",
        "--input",
        "stdin",
        "--serve",
        "127.0.0.1:0",
        "--serve-queue",
        "2",
    ]);
    let serve = engine.addresses(&["serving subscriptions on"]).remove(0);
    let slow = subscribe(&serve, r#"{"subscribe":["sessions","scores"]}"#);
    std::thread::sleep(Duration::from_millis(200));
    let mut stdin = engine.child.stdin.take().unwrap();
    stdin.write_all(data.as_bytes()).unwrap();
    engine.expect_stderr("too slow");
    // Only now does the slow client read: whatever was queued, then the reason.
    let mut text = String::new();
    BufReader::new(slow).read_to_string(&mut text).unwrap();
    let last = text.lines().last().unwrap();
    assert!(
        last.contains("\"error\"") && last.contains("too slow"),
        "last line: {last}"
    );
    drop(stdin);
    assert!(engine.child.wait().unwrap().success());
    let stdout = engine.stdout();
    assert!(
        stdout.ends_with("{\"progress\":null}\n"),
        "stdout must be complete"
    );
}

#[test]
fn two_processes_agree_with_one() {
    let input = repo_path("examples/events.jsonl");
    let input = input.to_str().unwrap();
    let expected = run_engine(&repo_path("examples/events.jsonl"), &[]);
    let port = 23_000 + (std::process::id() % 2000) as u16 * 2;
    let hostfile = temp_file(
        ".txt",
        &format!("127.0.0.1:{port}\n127.0.0.1:{}\n", port + 1),
    );
    let hosts = hostfile.path().to_str().unwrap();
    let mut second = Command::new(BIN)
        .args([
            "run",
            "--input",
            input,
            "--processes",
            "2",
            "--process",
            "1",
            "--hostfile",
            hosts,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = intentflow(&[
        "run",
        "--input",
        input,
        "--processes",
        "2",
        "--process",
        "0",
        "--hostfile",
        hosts,
    ])
    .success();
    assert!(second.wait().unwrap().success());
    // Change lines are deterministic; where progress lines fall is not.
    let changes = |stdout: &str| {
        let mut lines: Vec<&str> = stdout
            .lines()
            .filter(|l| !l.starts_with("{\"progress\""))
            .collect();
        lines.sort_unstable();
        lines.join("\n")
    };
    assert!(first.stdout.ends_with("{\"progress\":null}\n"));
    assert_eq!(changes(&first.stdout), changes(&expected.stdout));
}

#[test]
fn example_config_visibly_changes_scores() {
    let events = repo_path("examples/events.jsonl");
    let catalog = repo_path("examples/catalog.jsonl");
    let config = repo_path("examples/intentflow.toml");
    let catalog = catalog.to_str().unwrap();
    let scores = |extra: &[&str]| {
        let mut flags = vec!["--catalog", catalog, "--views", "scores"];
        flags.extend_from_slice(extra);
        run_engine(&events, &flags).output().final_state()
    };
    let defaults = scores(&[]);
    let configured = scores(&["--config", config.to_str().unwrap()]);
    assert!(!defaults.is_empty());
    // add_to_cart weighs 4 instead of 3 and the last day counts double: many rows rise.
    let raised = defaults
        .iter()
        .filter(|(row, (value, _))| {
            configured.get(*row).is_some_and(|(new, _)| {
                new["score"].as_f64().unwrap() > value["score"].as_f64().unwrap()
            })
        })
        .count();
    assert!(
        raised > defaults.len() / 10,
        "only {raised} of {} rows rose",
        defaults.len()
    );
}

#[test]
fn empty_input_finishes_at_every_worker_count() {
    let empty = write_temp(b"");
    // Shutdown must not depend on any event having moved the frontier; repeated because
    // the hang this guards against was a race between workers.
    for workers in ["1", "2", "4"] {
        for _ in 0..5 {
            let run = run_engine(empty.path(), &["--workers", workers]);
            assert_eq!(run.stdout, "{\"progress\":null}\n");
        }
    }
}

#[test]
fn bad_catalog_lines_are_reported_and_the_first_line_of_an_item_wins() {
    let catalog = temp_file(
        ".jsonl",
        concat!(
            r#"{"item":"p1","category":"shoes","kind":"product","price":10}"#,
            "\n",
            r#"{"item":"p2","category":"","kind":"product"}"#,
            "\n",
            r#"{"item":"p2","category":"bags","kind":"product","price":-1}"#,
            "\n",
            r#"{"item":"p2","category":"bags"}"#,
            "\n",
            r#"{"item":"p1","category":"hats","kind":"product"}"#,
            "\n",
            r#"{"item":"p2","category":"bags","kind":"offer","price":null,"premium":null}"#,
            "\n",
        ),
    );
    let events = write_temp(format!("{}\n{}\n", GOOD[0], GOOD[2]).as_bytes());
    let run = run_engine(
        events.path(),
        &[
            "--catalog",
            catalog.path().to_str().unwrap(),
            "--views",
            "affinity",
        ],
    );
    for (line, reason) in [
        (2, "empty \"category\""),
        (3, "\"price\""),
        (4, "kind"),
        (5, "duplicate catalog item"),
    ] {
        assert!(
            run.stderr
                .lines()
                .any(|l| l.contains(&format!("line {line}: ")) && l.contains(reason)),
            "catalog line {line} ({reason}) not reported:\n{}",
            run.stderr
        );
    }
    assert!(run.stderr.contains("2 catalog items"), "{}", run.stderr);
    let state = run.output().final_state();
    let categories: Vec<String> = state.keys().map(|(_, key)| key.to_string()).collect();
    // u1 clicked and carted p1 (shoes, not hats); u2 bought p2 (bags).
    assert_eq!(categories.len(), 2, "{categories:?}");
    assert!(categories.iter().any(|k| k.contains("shoes")));
    assert!(categories.iter().any(|k| k.contains("bags")));
}

/// `intentflow report --input tcp://ADDR` follows a running engine's `experiments` view
/// through a subscription and ends with the same table as a report of the file output.
#[test]
fn report_follows_a_live_subscription() {
    let config = repo_path("examples/intentflow.toml");
    let config = config.to_str().unwrap();
    let events = intentflow(&[
        "generate", "--users", "100", "--events", "4000", "--days", "2", "--config", config,
    ])
    .success()
    .stdout;
    let events_file = temp_file(".jsonl", &events);
    let file_run = run_engine(
        events_file.path(),
        &["--config", config, "--views", "experiments"],
    );
    let file_output = temp_file(".jsonl", &file_run.stdout);
    let expected = intentflow(&["report", "--input", file_output.path().to_str().unwrap()])
        .success()
        .stdout;

    let mut engine = Engine::start(&[
        "run",
        "--input",
        "stdin",
        "--config",
        config,
        "--views",
        "experiments",
        "--serve",
        "127.0.0.1:0",
    ]);
    let serve = engine.addresses(&["serving subscriptions on"]).remove(0);
    let report = Command::new(BIN)
        .args(["report", "--input", &format!("tcp://{serve}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The report subscribes before the first event, so it sees every change live.
    std::thread::sleep(Duration::from_millis(300));
    let mut stdin = engine.child.stdin.take().unwrap();
    stdin.write_all(events.as_bytes()).unwrap();
    drop(stdin);
    assert!(engine.child.wait().unwrap().success());
    let output = report.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.trim_end().ends_with(expected.trim_end()),
        "live report:\n{text}\nfile report:\n{expected}"
    );
    assert!(text.matches("experiment strategy").count() > 1, "{text}");
}
