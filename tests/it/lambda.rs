//! The Lambda path, as deployed code runs it: the real binary under
//! `cargo lambda watch` (the Lambda runtime API emulator), invoked with
//! `cargo lambda invoke`. Needs cargo-lambda on PATH (`make test` puts the
//! repo's venv first).

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Db, Fixture, Opts};
use outbox_relay::summary::Summary;

/// A `cargo lambda watch` process group, stopped on drop (even on panic).
struct Watch {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Drop for Watch {
    fn drop(&mut self) {
        // cargo-lambda runs the function as a grandchild: end the group.
        let _ = Command::new("kill")
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn watch(f: &Fixture) -> Watch {
    use std::os::unix::process::CommandExt;
    let port = common::free_port();
    let log_path = std::env::temp_dir().join(format!("cargo-lambda-watch-{port}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    // Build with the features this test binary has, so cargo-lambda does
    // not rebuild (and overwrite) the binary the other tests use.
    let features: &[&str] = if cfg!(feature = "faults") {
        &["--features", "faults"]
    } else {
        &[]
    };
    let child = Command::new("cargo")
        .args([
            "lambda",
            "watch",
            "--ignore-changes",
            "-A",
            "127.0.0.1",
            "-P",
            &port.to_string(),
        ])
        .args(features)
        .envs(f.env())
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect(
            "cargo lambda watch: is cargo-lambda installed? `make test` installs it into .venv",
        );
    let w = Watch {
        child,
        port,
        log: log_path,
    };
    // The first start builds the function: minutes on a cold cache.
    common::wait_port(port, "cargo lambda watch", Duration::from_secs(300));
    w
}

/// Invokes the function; Ok(response JSON) or Err(error output).
fn invoke(w: &Watch, data: &str) -> Result<String, String> {
    invoke_at(w.port, data)
}

/// [`invoke`] by port (from another thread while the invocation runs).
fn invoke_at(port: u16, data: &str) -> Result<String, String> {
    let out = Command::new("cargo")
        .args([
            "lambda",
            "invoke",
            "outbox-relay",
            "-A",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "--data-ascii",
            data,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// The invocation's summary; panics on an error response.
fn pass(w: &Watch, data: &str) -> Summary {
    serde_json::from_str(&invoke(w, data).unwrap()).unwrap()
}

/// The CloudWatch EMF lines the function logged so far.
fn emf_lines(w: &Watch) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&w.log)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('{') && l.contains("\"_aws\""))
        .map(|l| serde_json::from_str(l).expect("an EMF line is JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_function_answers_scheduled_manual_and_bad_events_under_cargo_lambda_watch() {
    let f = Fixture::new(Db::Postgres, Opts::batches_of(3))
        .await
        .unwrap();
    f.insert_many(8).await;
    let w = watch(&f);

    bad_events_are_refused(&w);
    assert_eq!(f.rows_left().await, 8, "a refused event changed nothing");
    let passes = manual_and_scheduled_passes(&w, &f).await;

    assert_eq!(f.rows_left().await, 0);
    let msgs = f.receive_all().await;
    assert_eq!(msgs.len(), 10);
    assert_eq!(common::counts(&msgs).len(), 10);
    each_real_pass_logged_its_emf_line(&emf_lines(&w), &passes, &f.table);
}

/// Bad payloads get an error response naming the problem.
fn bad_events_are_refused(w: &Watch) {
    let err = invoke(w, r#"{"max_row": 2}"#).unwrap_err();
    assert!(
        err.contains("InvalidEvent") && err.contains("max_row"),
        "{err}"
    );
    let err = invoke(
        w,
        r#"{"detail-type": "Object Created", "source": "aws.s3"}"#,
    )
    .unwrap_err();
    assert!(err.contains("InvalidEvent"), "{err}");
    // A schedule's input edited into a backfill is refused, not guessed at.
    let err = invoke(
        w,
        r#"{"source": "aws.scheduler", "detail-type": "Scheduled Event", "dry_run": true}"#,
    )
    .unwrap_err();
    assert!(err.contains("InvalidEvent"), "{err}");
    // A null is not "absent": it would run a real pass or drain everything.
    for null in [r#"{"dry_run": null}"#, r#"{"max_rows": null}"#] {
        let err = invoke(w, null).unwrap_err();
        assert!(
            err.contains("InvalidEvent") && err.contains("null"),
            "{null}: {err}"
        );
    }
}

/// A dry run, a backfill slice, the Scheduler's payload and an EventBridge
/// scheduled event, on the 8 rows of the fixture and 3 more inserted on the
/// way (one of them poison); returns the real passes' summaries.
async fn manual_and_scheduled_passes(w: &Watch, f: &Fixture) -> Vec<Summary> {
    // A dry run reports and changes nothing.
    let s = pass(w, r#"{"dry_run": true}"#);
    assert!(s.dry_run);
    assert_eq!((s.sent, s.deleted), (8, 0));
    assert_eq!(f.rows_left().await, 8);

    // A manual backfill slice.
    let slice = pass(w, r#"{"max_rows": 4, "dry_run": false}"#);
    assert_eq!((slice.sent, slice.deleted, slice.remaining), (4, 4, true));

    // The EventBridge Scheduler payload the template sends.
    f.insert(&[(Some("from the scheduler"), None), (None, None)])
        .await;
    let scheduler = pass(w, include_str!("../fixtures/scheduler-payload.json"));
    assert_eq!(
        (scheduler.sent, scheduler.quarantined, scheduler.remaining),
        (5, 1, false)
    );

    // An EventBridge scheduled event drains what is there.
    f.insert(&[(Some("last"), None)]).await;
    let scheduled = pass(
        w,
        include_str!("../fixtures/eventbridge-scheduled-event.json"),
    );
    assert_eq!(
        (
            scheduled.claimed,
            scheduled.sent,
            scheduled.deleted,
            scheduled.remaining
        ),
        (1, 1, 1, false)
    );
    vec![slice, scheduler, scheduled]
}

/// One EMF line per real pass, with its numbers and the declared metrics.
fn each_real_pass_logged_its_emf_line(emf: &[serde_json::Value], passes: &[Summary], table: &str) {
    assert_eq!(
        emf.len(),
        passes.len(),
        "one EMF line per real pass: {emf:?}"
    );
    for (d, s) in emf.iter().zip(passes) {
        assert_eq!(d["Sent"], s.sent, "{d}");
        assert_eq!(d["Recovered"], s.recovered, "{d}");
        assert_eq!(d["Quarantined"], s.quarantined, "{d}");
        assert_eq!(d["Skipped"], s.skipped, "{d}");
        assert_eq!(d["PassDurationMs"], s.elapsed_ms, "{d}");
        let declared: Vec<&str> = d["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        for name in [
            "Sent",
            "Recovered",
            "Quarantined",
            "Skipped",
            "PassDurationMs",
            "Backlog",
        ] {
            assert!(declared.contains(&name), "{name} not declared in {d}");
        }
        // The oldest row's age exists while a row does.
        let waiting = d["Backlog"].as_u64().unwrap() > 0;
        assert_eq!(declared.contains(&"OldestRowAgeSeconds"), waiting, "{d}");
        assert_eq!(d["Table"], table);
        assert_eq!(
            d["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "OutboxRelay"
        );
    }
    assert_eq!(emf[0]["Backlog"], 4, "4 rows were left after the slice");
    assert!(emf[0]["OldestRowAgeSeconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(emf[1]["Quarantined"], 1);
    assert_eq!(emf[2]["Backlog"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_function_replays_dead_letters_from_a_manual_payload() {
    let mut f = Fixture::new(Db::Postgres, Opts::default()).await.unwrap();
    let audit = format!("{}_replay", f.table);
    f.pool
        .exec(format!(
            "CREATE TABLE {audit} (id TEXT PRIMARY KEY, replay_count INTEGER NOT NULL, \
             last_replayed_at TIMESTAMPTZ NOT NULL)"
        ))
        .await;
    f.extra_env.insert("OUTBOX_REPLAY_TABLE".into(), audit);
    let ids = f.insert(&[(None, None), (None, None)]).await;
    assert_eq!(f.drain().await.quarantined, 2);
    f.pool
        .exec(format!("UPDATE {} SET payload = 'fixed'", f.dead_letter))
        .await;
    let w = watch(&f);

    let err = invoke(&w, r#"{"replay_dead_letters": {"ids": null}}"#).unwrap_err();
    assert!(err.contains("InvalidEvent"), "{err}");
    let payload = format!(
        r#"{{"replay_dead_letters": {{"ids": [{}, "999999"]}}}}"#,
        ids[0]
    );
    let report: serde_json::Value = serde_json::from_str(&invoke(&w, &payload).unwrap()).unwrap();
    assert_eq!(report["replayed"], serde_json::json!([ids[0]]));
    assert_eq!(report["refused"][0]["id"], "999999");
    assert_eq!(report["dry_run"], false);
    assert_eq!((f.rows_left().await, f.dead_letters().await.len()), (1, 1));

    let all: serde_json::Value =
        serde_json::from_str(&invoke(&w, r#"{"replay_dead_letters": {"all": true}}"#).unwrap())
            .unwrap();
    assert_eq!(all["replayed"], serde_json::json!([ids[1]]));
    let s = pass(&w, r#"{}"#);
    assert_eq!((s.sent, s.deleted), (2, 2));
    assert_eq!(f.receive_all().await.len(), 2);
}

/// A scheduled invocation with `FOLLOW_SECONDS` keeps relaying: rows
/// inserted while it runs go out within the same invocation, which returns
/// one summary (and logs one EMF line) for all of it, before its budget.
/// `cargo lambda watch` sends a deadline in 1970, which counts as unknown,
/// so `MAX_PASS_SECONDS` is the budget here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_invocation_delivers_rows_inserted_during_it_and_returns_in_time() {
    let mut f = Fixture::new(Db::Postgres, Opts::default()).await.unwrap();
    for (k, v) in [
        ("FOLLOW_SECONDS", "6"),
        ("MAX_PASS_SECONDS", "20"),
        ("POLL_INTERVAL_MS", "100"),
    ] {
        f.extra_env.insert(k.into(), v.into());
    }
    let w = watch(&f);
    // Warm the environment (connect) with a manual pass, which never follows.
    let s = pass(&w, r#"{"max_rows": 1}"#);
    assert_eq!(s.sent, 0);
    f.insert(&[(Some("before"), None)]).await;
    let scheduled = include_str!("../fixtures/eventbridge-scheduled-event.json");
    let started = Instant::now();
    let call = {
        let port = w.port;
        std::thread::spawn(move || invoke_at(port, scheduled))
    };
    let mut delivered = Vec::new();
    for n in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        f.insert(&[(Some(&format!("during {n}")), None)]).await;
    }
    // Delivered while the invocation still runs: no new invocation needed.
    let wait = Instant::now() + Duration::from_secs(30);
    while delivered.len() < 4 && Instant::now() < wait && !call.is_finished() {
        delivered.extend(f.receive_all().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        delivered.len(),
        4,
        "all four rows went out during the follow"
    );
    let s: Summary = serde_json::from_str(&call.join().unwrap().unwrap()).unwrap();
    let took = started.elapsed();
    assert_eq!((s.sent, s.deleted, s.remaining), (4, 4, false), "{s:?}");
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_secs(20),
        "followed {took:?}: FOLLOW_SECONDS, within the budget"
    );
    assert_eq!(f.rows_left().await, 0);
    let emf = emf_lines(&w);
    assert_eq!(emf.len(), 2, "one EMF line per invocation: {emf:?}");
    assert_eq!(emf[1]["Sent"], 4);
}
