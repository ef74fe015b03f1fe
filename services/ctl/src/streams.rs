//! `ctl streams` and `ctl dlq list|replay TOPIC`: what the streams look like and what
//! to do with dead letters. Only Redis is needed (`REDIS_URL`, `STREAM_PREFIX`).
//!
//! `ctl streams` prints one line per topic (length, groups, pending, lag, dead letters)
//! and one indented line per consumer group. `ctl dlq list` shows each dead letter with
//! the error that put it there; `ctl dlq replay` puts one (`--id`) or all (`--all`) back
//! on the topic, where every group of the topic receives it as a new entry.

use ::streams::{DeadLetter, Streams, Topic, TopicStats};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use config::Settings;

/// `ctl dlq`.
#[derive(Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List the dead letters of a topic, oldest first, with their errors.
    List {
        /// The topic (events.raw, events.normalized, profiles.merge_requests,
        /// predictions.requests, profiles.changes).
        #[arg(value_parser = parse_topic)]
        topic: Topic,
        /// Show at most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print the full body of each dead letter too.
        #[arg(long)]
        bodies: bool,
    },
    /// Put dead letters back on their topic (and remove them from the dead-letter stream).
    Replay {
        /// The topic.
        #[arg(value_parser = parse_topic)]
        topic: Topic,
        /// The dead letter's id (as listed by `ctl dlq list`).
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Replay every dead letter of the topic.
        #[arg(long)]
        all: bool,
    },
}

fn parse_topic(name: &str) -> Result<Topic, String> {
    Topic::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Topic::ALL.iter().map(|t| t.name()).collect();
        format!("unknown topic `{name}`; topics are {}", names.join(", "))
    })
}

async fn connect(settings: &Settings) -> anyhow::Result<Streams> {
    Streams::connect(
        &settings.redis_url,
        settings.stream_prefix.clone(),
        settings.stream_maxlen,
    )
    .await
    .with_context(|| {
        format!(
            "connecting to Redis at {}",
            config::redact_url_password(&settings.redis_url)
        )
    })
}

/// Runs `ctl streams`.
pub async fn show(settings: &Settings) -> anyhow::Result<()> {
    let streams = connect(settings).await?;
    let stats = streams.stats().await.context("reading stream statistics")?;
    print!("{}", render_stats(streams.prefix(), &stats));
    Ok(())
}

fn render_stats(prefix: &str, stats: &[TopicStats]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let shown_prefix = if prefix.is_empty() { "(none)" } else { prefix };
    let _ = writeln!(out, "stream prefix: {shown_prefix}");
    let _ = writeln!(
        out,
        "{:<26} {:>10} {:>7} {:>9} {:>9} {:>7}",
        "TOPIC", "LENGTH", "GROUPS", "PENDING", "LAG", "DLQ"
    );
    for t in stats {
        let lag = if t.groups.is_empty() {
            "-".to_owned()
        } else {
            t.max_lag()
                .map_or_else(|| "?".to_owned(), |l| l.to_string())
        };
        let _ = writeln!(
            out,
            "{:<26} {:>10} {:>7} {:>9} {:>9} {:>7}",
            t.topic,
            t.length,
            t.groups.len(),
            t.pending(),
            lag,
            t.dlq_length
        );
        for g in &t.groups {
            let _ = writeln!(
                out,
                "  group {:<18} consumers {:<3} pending {:<7} lag {:<7} last delivered {}",
                g.name,
                g.consumers,
                g.pending,
                g.lag.map_or_else(|| "?".to_owned(), |l| l.to_string()),
                g.last_delivered_id
            );
        }
    }
    out
}

fn render_dead_letter(d: &DeadLetter, with_body: bool) -> String {
    let failed_at = d
        .failed_at
        .map_or_else(|| "?".to_owned(), |t| t.to_rfc3339());
    let mut out = format!(
        "{}  entry {}  group {}  consumer {}  deliveries {}  at {}\n  error: {}\n",
        d.dlq_id, d.entry_id, d.group, d.consumer, d.deliveries, failed_at, d.error
    );
    if with_body {
        out.push_str(&format!("  body: {}\n", d.body));
    }
    out
}

/// Runs `ctl dlq`.
pub async fn dlq(settings: &Settings, args: DlqArgs) -> anyhow::Result<()> {
    let streams = connect(settings).await?;
    match args.command {
        DlqCommand::List {
            topic,
            limit,
            bodies,
        } => {
            let total = streams.dlq_len(topic).await?;
            let letters = streams.dead_letters(topic, limit).await?;
            println!("{} dead letters in {}", total, streams.dlq_key(topic));
            for d in &letters {
                print!("{}", render_dead_letter(d, bodies));
            }
            if (letters.len() as u64) < total {
                println!("(showing the oldest {}; use --limit)", letters.len());
            }
        }
        DlqCommand::Replay { topic, id, all } => {
            if all {
                let n = streams.replay_all_dead_letters(topic).await?;
                println!("replayed {n} dead letters onto {}", streams.key(topic));
            } else if let Some(id) = id {
                match streams.replay_dead_letter(topic, &id).await? {
                    Some(new_id) => println!(
                        "replayed {id} onto {} as entry {new_id}",
                        streams.key(topic)
                    ),
                    None => anyhow::bail!(
                        "no dead letter {id} in {}; `ctl dlq list {topic}` shows them",
                        streams.dlq_key(topic)
                    ),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::streams::GroupStats;

    #[test]
    fn topics_parse_by_name_and_unknown_ones_list_the_choices() {
        assert_eq!(parse_topic("events.raw"), Ok(Topic::EventsRaw));
        let err = parse_topic("events").unwrap_err();
        assert!(err.contains("predictions.requests"), "{err}");
    }

    #[test]
    fn the_table_has_a_line_per_topic_and_group() {
        let stats = [TopicStats {
            topic: "events.raw".into(),
            key: "p:events.raw".into(),
            length: 12,
            last_entry_id: Some("5-0".into()),
            groups: vec![GroupStats {
                name: "normalizer".into(),
                consumers: 2,
                pending: 3,
                lag: Some(4),
                last_delivered_id: "4-0".into(),
            }],
            dlq_length: 1,
        }];
        let text = render_stats("p:", &stats);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "stream prefix: p:");
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(row, ["events.raw", "12", "1", "3", "4", "1"]);
        assert!(lines[3].contains("group normalizer") && lines[3].contains("last delivered 4-0"));
    }
}
