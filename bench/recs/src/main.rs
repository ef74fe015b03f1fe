//! `recs-bench FILE.csv HORIZON_DAYS CUTOFF...`: what `ctl ml eval-recs --transactions
//! FILE.csv --horizon HORIZON_DAYS --cutoff CUTOFF...` prints (same evaluation, same
//! report), built from the `ml` crate alone so release figures need no fleet build.
//! Seed: `ML_SEED` (default 42). item2vec's shards, epochs, negative samples and
//! subsampling: `RECS_SHARDS`, `RECS_EPOCHS`, `RECS_NEGATIVES`, `RECS_SUBSAMPLE`
//! (default: the served settings), to measure other settings.
//! `RECS_ITEM2VEC_ONLY=1` times only the tuning fit's item2vec at each cutoff (from
//! scratch on every set completed before `cutoff − 28 days`, what the training spends
//! most on), with a checksum of the vectors to compare builds.
//! `RECS_MODEL=FILE.json` times scoring alone at each cutoff: the model trained as of
//! the cutoff is read from `FILE.json` (trained and written there first when the file
//! does not exist), then `RECS_SCORE_PASSES` passes (default 5) score the evaluation's
//! customers in the scorer's batches, each printing profiles/s and a checksum of every
//! list (items, sources, score bits, reasons): two builds scoring the same model file
//! list the same only when their checksums are equal.
//! `RECS_SAVE_MODELS=DIR` writes each cutoff's evaluated model to
//! `DIR/model-CUTOFF.json` (what `RECS_MODEL` then scores, so a scoring comparison uses
//! the very model whose quality the evaluation printed).

use std::io::BufReader;

use anyhow::{Context, bail};
use ml::eval::parse_date;
use ml::recs::item2vec::{self, Item2VecParams};
use ml::recs::offline::{
    evaluate_keeping, load_average, machine_reference, process_cpu_seconds, read_transactions,
    write_report,
};
use ml::recs::{Activity, Corpus, Recommender, RecsParams, future_purchases, training_sets};
use ml::scoring::{RECOMMEND_BATCH, RECOMMENDATIONS};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, horizon, cutoff_args @ ..] = args.as_slice() else {
        bail!("usage: recs-bench FILE.csv HORIZON_DAYS CUTOFF...");
    };
    let horizon: i64 = horizon
        .parse()
        .with_context(|| format!("horizon `{horizon}` is not a number of days"))?;
    let cutoffs = cutoff_args
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
    let negatives = setting("RECS_NEGATIVES", defaults.negatives as u64)? as usize;
    let subsample = match std::env::var("RECS_SUBSAMPLE") {
        Ok(s) => s.parse().with_context(|| format!("RECS_SUBSAMPLE `{s}`"))?,
        Err(_) => defaults.subsample,
    };
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
            negatives,
            subsample,
            ..defaults
        },
        ..RecsParams::default()
    };
    println!(
        "item2vec: {} shards, {} epochs, {} negatives, subsample {}, seed {seed}",
        params.item2vec.shards,
        params.item2vec.epochs,
        params.item2vec.negatives,
        params.item2vec.subsample
    );
    if std::env::var_os("RECS_ITEM2VEC_ONLY").is_some() {
        let days = u64::try_from(params.tuning_horizon_days)?;
        for cutoff in cutoffs {
            let start = cutoff - std::time::Duration::from_secs(86_400 * days);
            item2vec_only(&log.corpus.before(start), &cutoff.to_string(), &params);
        }
        return Ok(());
    }
    if let Some(path) = std::env::var_os("RECS_MODEL") {
        let passes = setting("RECS_SCORE_PASSES", 5)? as usize;
        for cutoff in cutoff_args {
            score_only(
                &log.corpus,
                cutoff,
                horizon,
                &params,
                std::path::Path::new(&path),
                passes,
            )?;
        }
        return Ok(());
    }
    let save = std::env::var_os("RECS_SAVE_MODELS").map(std::path::PathBuf::from);
    for cutoff in cutoffs {
        let (report, fitted) = evaluate_keeping(&log.corpus, cutoff, horizon, &params)?;
        let mut text = String::new();
        write_report(&mut text, &report, &machine)?;
        print!("{text}");
        if let Some(dir) = &save {
            let path = dir.join(format!("model-{}.json", cutoff.format("%Y-%m-%d")));
            std::fs::write(&path, fitted.model.to_json()?)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("model written to {}", path.display());
        }
    }
    Ok(())
}

/// Times the tuning fit's item2vec alone on `corpus` (everything before the tuning
/// window of `cutoff`; see the module doc).
fn item2vec_only(corpus: &Corpus, cutoff: &str, p: &RecsParams) {
    let sets = training_sets(corpus);
    let (started, cpu_started) = (std::time::Instant::now(), process_cpu_seconds());
    let e = item2vec::train(&sets, &p.item2vec);
    // Equal only when the vectors are bit-identical.
    let mut hash = Fnv::default();
    e.vectors
        .iter()
        .for_each(|x| hash.add(u64::from(x.to_bits())));
    let checksum = hash.0;
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

/// Times scoring alone (see the module doc): the model of `path` (trained as of
/// `cutoff` and written there when the file does not exist) scores the customers the
/// evaluation scores, `passes` times.
fn score_only(
    corpus: &Corpus,
    cutoff: &str,
    horizon: i64,
    params: &RecsParams,
    path: &std::path::Path,
    passes: usize,
) -> anyhow::Result<()> {
    let cutoff = parse_date(cutoff).with_context(|| format!("unreadable cutoff `{cutoff}`"))?;
    if !path.exists() {
        let started = std::time::Instant::now();
        let model = Recommender::train(corpus, cutoff, params);
        std::fs::write(path, model.to_json()?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "cutoff {}: trained in {:.1} s, written to {}",
            cutoff.format("%Y-%m-%d"),
            started.elapsed().as_secs_f64(),
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let model = Recommender::from_json(&text)?;
    if model.as_of != cutoff {
        bail!(
            "{} holds a model as of {}, not {cutoff}",
            path.display(),
            model.as_of
        );
    }
    let train = corpus.before(cutoff);
    let truth = future_purchases(corpus, cutoff, horizon);
    let activities: Vec<&Activity> = truth.iter().map(|(c, _)| &train.customers[*c]).collect();
    println!(
        "cutoff {}: {} profiles; re-ranker {}, explore ranker {}",
        cutoff.format("%Y-%m-%d"),
        activities.len(),
        if model.ranker.is_some() {
            "kept"
        } else {
            "not kept"
        },
        if model.explore_ranker.is_some() {
            "kept"
        } else {
            "not kept"
        },
    );
    for pass in 1..=passes {
        let (started, cpu_started) = (std::time::Instant::now(), process_cpu_seconds());
        let lists: Vec<_> = activities
            .chunks(RECOMMEND_BATCH)
            .flat_map(|batch| model.recommend_many(batch, cutoff, RECOMMENDATIONS))
            .collect();
        let (wall, cpu) = (
            started.elapsed().as_secs_f64(),
            process_cpu_seconds() - cpu_started,
        );
        let mut hash = Fnv::default();
        for list in &lists {
            hash.add(list.len() as u64);
            for r in list {
                hash.add(u64::from(r.item));
                hash.add(r.source as u64);
                hash.add(r.score.to_bits());
                r.reason.bytes().for_each(|b| hash.add(u64::from(b)));
            }
        }
        println!(
            "  pass {pass}: {:.0} profiles/s ({:.0} per CPU second), load average {}; lists \
             checksum {:016x}",
            lists.len() as f64 / wall,
            lists.len() as f64 / cpu,
            load_average(),
            hash.0
        );
    }
    Ok(())
}

/// FNV-1a over 64-bit words: equal only when the words are.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(0x100_0000_01b3);
    }
}
