//! The runner's command line: its scenarios and options.

use super::{NOTIFY, WHOLE_BOUNDARY};

/// What the runner measures: a scenario of the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Scenario {
    RawInsert,
    AppendUnguarded,
    AppendDisjoint,
    AppendHot,
    AppendMixed,
    BesideBulk,
    GuardLatency,
    ReadThroughput,
    FeedCatchUp,
    LiveLatency,
    DecideDisjoint,
    DecideCached,
}

impl Scenario {
    const ALL: [Scenario; 12] = [
        Scenario::RawInsert,
        Scenario::AppendUnguarded,
        Scenario::AppendDisjoint,
        Scenario::AppendHot,
        Scenario::AppendMixed,
        Scenario::BesideBulk,
        Scenario::GuardLatency,
        Scenario::ReadThroughput,
        Scenario::DecideDisjoint,
        Scenario::DecideCached,
        Scenario::FeedCatchUp,
        Scenario::LiveLatency,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Scenario::RawInsert => "raw-insert",
            Scenario::AppendUnguarded => "append-unguarded",
            Scenario::AppendDisjoint => "append-disjoint",
            Scenario::AppendHot => "append-hot",
            Scenario::AppendMixed => "append-mixed",
            Scenario::BesideBulk => "beside-bulk",
            Scenario::GuardLatency => "guard-latency",
            Scenario::DecideCached => "decide-cached",
            Scenario::ReadThroughput => "read-throughput",
            Scenario::FeedCatchUp => "feed-catch-up",
            Scenario::LiveLatency => "live-latency",
            Scenario::DecideDisjoint => "decide-disjoint",
        }
    }
}

/// The command line, parsed.
#[derive(Debug)]
pub(super) struct Args {
    pub(super) scenarios: Vec<Scenario>,
    pub(super) writers: Vec<usize>,
    pub(super) seconds: f64,
    pub(super) events: u64,
    pub(super) json: bool,
    pub(super) quick: bool,
    pub(super) ten_million: bool,
    /// `--cached`: `decide-disjoint` decides through a `DecisionCache` per writer.
    pub(super) cached: bool,
    /// Group commit: the most appends per transaction and the groups in flight.
    pub(super) group: (usize, usize),
}

pub(super) fn usage() -> String {
    let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
    format!(
        "usage: contention <{}|all> [--writers 1,8,32,64] [--seconds S] [--events N] [--group N] [--in-flight N] [--no-notify] [--whole-boundary-guard] [--cached] [--json] [--quick] [--ten-million]",
        names.join("|")
    )
}

pub(super) fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let which = args.next().ok_or_else(usage)?;
    let scenarios = if which == "all" {
        Scenario::ALL.to_vec()
    } else {
        vec![
            *Scenario::ALL
                .iter()
                .find(|s| s.name() == which)
                .ok_or_else(|| format!("unknown scenario {which:?}\n{}", usage()))?,
        ]
    };
    let mut parsed = Args {
        scenarios,
        writers: vec![1, 8, 32, 64],
        seconds: 10.0,
        events: 100_000,
        json: false,
        quick: false,
        ten_million: false,
        cached: false,
        group: (
            dcbstore::pg::DEFAULT_MAX_GROUP_SIZE,
            dcbstore::pg::DEFAULT_GROUPS_IN_FLIGHT,
        ),
    };
    let mut writers_given = false;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--writers" => {
                parsed.writers = value()?
                    .split(',')
                    .map(|w| {
                        w.trim()
                            .parse()
                            .map_err(|_| format!("bad writer count {w:?}"))
                    })
                    .collect::<Result<_, _>>()?;
                writers_given = true;
            }
            "--seconds" => parsed.seconds = value()?.parse().map_err(|_| "bad --seconds")?,
            "--events" => parsed.events = value()?.parse().map_err(|_| "bad --events")?,
            "--group" => parsed.group.0 = value()?.parse().map_err(|_| "bad --group")?,
            "--in-flight" => parsed.group.1 = value()?.parse().map_err(|_| "bad --in-flight")?,
            "--no-notify" => NOTIFY.store(false, std::sync::atomic::Ordering::Relaxed),
            "--whole-boundary-guard" => {
                WHOLE_BOUNDARY.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            "--cached" => parsed.cached = true,
            "--json" => parsed.json = true,
            "--quick" => parsed.quick = true,
            "--ten-million" => parsed.ten_million = true,
            other => return Err(format!("unknown option {other:?}\n{}", usage())),
        }
    }
    if parsed.quick {
        parsed.seconds = parsed.seconds.min(1.0);
        parsed.events = parsed.events.min(2_000);
        if !writers_given {
            parsed.writers = vec![1, 4];
        }
    }
    if parsed.writers.is_empty() || parsed.writers.contains(&0) {
        return Err("--writers needs positive counts".into());
    }
    Ok(parsed)
}
