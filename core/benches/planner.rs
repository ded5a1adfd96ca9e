//! Planner speed: packing a million sequences of a LongAlign-like mix into 64k rows.
//!
//! `cargo bench -p longalign-core --bench planner`. The goal (issue: core planner) is FFD over
//! 1,000,000 lengths in under 2 s on one core; the whole `plan` (pack, shuffle, weights) is timed too.

use criterion::{Criterion, criterion_group, criterion_main};
use longalign::plan::{self, Algorithm, PlanConfig, mix, pack};

fn bench(c: &mut Criterion) {
    let items = mix::longalign_like(500_000, 500_000, 1);
    let lengths: Vec<u32> = items.iter().map(|it| it.total).collect();
    let mut g = c.benchmark_group("pack 1M sequences into 64k rows");
    g.sample_size(10);
    g.bench_function("next-fit", |b| b.iter(|| pack::next_fit(&lengths, 65536)));
    g.bench_function("ffd", |b| b.iter(|| pack::first_fit_decreasing(&lengths, 65536)));
    g.bench_function("bfd", |b| b.iter(|| pack::best_fit_decreasing(&lengths, 65536)));
    let cfg = PlanConfig { algorithm: Algorithm::Ffd, max_tokens: Some(65536), ..PlanConfig::default() };
    g.bench_function("plan ffd + shuffle + weights", |b| b.iter(|| plan::plan(&items, &cfg).unwrap()));
    g.finish();
    let p = plan::plan(&items, &cfg).unwrap();
    eprintln!("ffd fill on the 1M mix: {:.4}", p.stats().fill);
}

criterion_group!(benches, bench);
criterion_main!(benches);
