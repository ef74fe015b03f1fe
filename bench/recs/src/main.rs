//! `recs-bench FILE.csv HORIZON_DAYS CUTOFF...`: what `ctl ml eval-recs --transactions
//! FILE.csv --horizon HORIZON_DAYS --cutoff CUTOFF...` prints (same evaluation, same
//! report), built from the `ml` crate alone so release figures need no fleet build.
//! Seed: `ML_SEED` (default 42). item2vec's shards and epochs: `RECS_SHARDS`,
//! `RECS_EPOCHS` (default: the served settings), to measure other settings.
//! `RECS_ITEM2VEC_ONLY=1` times only the tuning fit's item2vec at each cutoff (from
//! scratch on every set completed before `cutoff − 28 days`, what the training spends
//! most on), with a checksum of the vectors to compare builds.

use std::io::BufReader;

use anyhow::{Context, bail};
use ml::eval::parse_date;
use ml::recs::item2vec::{self, Item2VecParams};
use ml::recs::offline::{
    evaluate, load_average, machine_reference, process_cpu_seconds, read_transactions, write_report,
};
use ml::recs::{Corpus, RecsParams, training_sets};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, horizon, cutoffs @ ..] = args.as_slice() else {
        bail!("usage: recs-bench FILE.csv HORIZON_DAYS CUTOFF...");
    };
    let horizon: i64 = horizon
        .parse()
        .with_context(|| format!("horizon `{horizon}` is not a number of days"))?;
    let cutoffs = cutoffs
        .iter()
        .map(|c| parse_date(c).with_context(|| format!("unreadable cutoff `{c}`")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if cutoffs.is_empty() {
        bail!("give at least one cutoff");
    }
    let setting = |name: &str, default: u64| -> anyhow::Result<u64> {
        match std::env::var(name) {
            Ok(s) => s.parse().with_context(|| format!("{name} `{s}`")),
            Err(_) => Ok(default),
        }
    };
    let defaults = Item2VecParams::default();
    let seed = setting("ML_SEED", 42)?;
    let shards = setting("RECS_SHARDS", defaults.shards as u64)? as usize;
    let epochs = setting("RECS_EPOCHS", defaults.epochs as u64)? as usize;
    let started = std::time::Instant::now();
    let file = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    let log = read_transactions(BufReader::new(file))?;
    println!(
        "{} rows ({} skipped), {} customers, {} products; read in {:.1}s",
        log.rows,
        log.skipped,
        log.corpus.customers.len(),
        log.corpus.catalogue.len(),
        started.elapsed().as_secs_f64()
    );
    let machine = machine_reference();
    println!(
        "machine reference: memory read {:.1} GB/s, {:.0} M 32-dim dot products/s on one core; \
         load average {}",
        machine.memory_gb_per_second,
        machine.dots_per_second / 1e6,
        load_average()
    );
    let params = RecsParams {
        item2vec: Item2VecParams {
            seed,
            shards,
            epochs,
            ..defaults
        },
        ..RecsParams::default()
    };
    println!(
        "item2vec: {} shards, {} epochs, seed {seed}",
        params.item2vec.shards, params.item2vec.epochs
    );
    if std::env::var_os("RECS_ITEM2VEC_ONLY").is_some() {
        let days = u64::try_from(params.tuning_horizon_days)?;
        for cutoff in cutoffs {
            let start = cutoff - std::time::Duration::from_secs(86_400 * days);
            item2vec_only(&log.corpus.before(start), &cutoff.to_string(), &params);
        }
        return Ok(());
    }
    for cutoff in cutoffs {
        let report = evaluate(&log.corpus, cutoff, horizon, &params)?;
        let mut text = String::new();
        write_report(&mut text, &report, &machine)?;
        print!("{text}");
    }
    Ok(())
}

/// Times the tuning fit's item2vec alone on `corpus` (everything before the tuning
/// window of `cutoff`; see the module doc).
fn item2vec_only(corpus: &Corpus, cutoff: &str, p: &RecsParams) {
    let sets = training_sets(corpus);
    let (started, cpu_started) = (std::time::Instant::now(), process_cpu_seconds());
    let e = item2vec::train(&sets, &p.item2vec);
    // FNV-1a over the vectors' bits: equal only when the vectors are bit-identical.
    let checksum = e.vectors.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(x.to_bits())).wrapping_mul(0x100_0000_01b3)
    });
    println!(
        "cutoff {cutoff}: tuning item2vec over {} sets, {} vectors: {:.1} s wall, {:.1} CPU s \
         (load average {}); vectors checksum {checksum:016x}",
        sets.len(),
        e.len(),
        started.elapsed().as_secs_f64(),
        process_cpu_seconds() - cpu_started,
        load_average()
    );
}
