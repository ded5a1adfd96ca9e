//! Planner properties, checked on random inputs (proptest) and on hand-made cases.

use std::collections::HashMap;

use proptest::prelude::*;

use super::Strategy;
use super::*;
use proptest::strategy::Strategy as _;

fn items_strategy() -> impl proptest::strategy::Strategy<Value = Vec<Item>> {
    prop::collection::vec((1u32..600, 0u32..=100), 0..120).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(id, (total, pct))| Item { id: id * 3 + 7, total, target: total * pct / 100 })
            .collect()
    })
}

fn config_strategy() -> impl proptest::strategy::Strategy<Value = PlanConfig> {
    (
        prop_oneof![Just(Strategy::Naive), Just(Strategy::Sorted), Just(Strategy::Pack)],
        prop_oneof![Just(Algorithm::NextFit), Just(Algorithm::Ffd), Just(Algorithm::Bfd)],
        prop::option::of(200u32..1200),
        1usize..4,
        1usize..5,
        1usize..5,
        prop_oneof![Just(LossMode::Sequence), Just(LossMode::Token)],
        any::<u64>(),
        prop_oneof![Just(Overlong::Truncate), Just(Overlong::Drop)],
        1usize..3,
        prop::option::of(600u32..3000),
    )
        .prop_map(
            |(strategy, algorithm, max, batch_size, devices, accum, loss, seed, overlong, epochs, budget)| {
                PlanConfig {
                    strategy,
                    algorithm,
                    max_tokens: if strategy == Strategy::Pack { Some(max.unwrap_or(700)) } else { max },
                    batch_size,
                    token_budget: if strategy == Strategy::Sorted { budget } else { None },
                    devices,
                    accum,
                    loss,
                    seed,
                    overlong,
                    epochs,
                }
            },
        )
}

/// Checks every structural invariant of a plan against its input items.
fn check_plan(items: &[Item], cfg: &PlanConfig, plan: &Plan) {
    let limit = cfg.length_limit();
    let by_id: HashMap<usize, Item> = items.iter().map(|it| (it.id, *it)).collect();
    let expected_dropped = items.iter().filter(|it| limit.is_some_and(|l| it.total > l)).count();
    let expected_present = items.len() - if cfg.overlong == Overlong::Drop { expected_dropped } else { 0 };
    if cfg.overlong == Overlong::Drop {
        assert_eq!(plan.dropped, expected_dropped);
    } else {
        assert_eq!(plan.truncated, expected_dropped);
    }

    let mut seen: Vec<HashMap<usize, usize>> = vec![HashMap::new(); cfg.epochs];
    for (s, step) in plan.steps.iter().enumerate() {
        assert!(!step.micro_batches.is_empty());
        assert!(step.micro_batches.len() <= cfg.devices * cfg.accum);
        let mut per_device = vec![0usize; cfg.devices];
        let (mut weight_sum, mut seqs_with_target) = (0f64, 0usize);
        let mut step_targets = 0u64;
        for mb in &step.micro_batches {
            assert_eq!(mb.step, s);
            assert!(mb.device < cfg.devices && mb.micro < cfg.accum);
            per_device[mb.device] += 1;
            assert!(!mb.rows.is_empty() && mb.rows.len() <= cfg.batch_size.max(mb.rows.len()));
            if let Some(budget) = cfg.token_budget {
                assert!(mb.rows.len() as u64 * mb.row_len as u64 <= budget as u64);
            } else {
                assert!(mb.rows.len() <= cfg.batch_size);
            }
            let mut longest = 0;
            for row in &mb.rows {
                assert_eq!(row.cu_seqlens.len(), row.ids.len() + 1);
                assert_eq!(row.weights.len(), row.ids.len());
                assert_eq!(row.cu_seqlens[0], 0);
                assert!(row.used() <= mb.row_len, "row over capacity");
                if cfg.strategy != Strategy::Pack {
                    assert_eq!(row.ids.len(), 1, "padded strategies put one sequence per row");
                }
                longest = longest.max(row.used());
                for ((k, &id), &w) in row.ids.iter().enumerate().zip(&row.weights) {
                    let n = row.cu_seqlens[k + 1] - row.cu_seqlens[k];
                    let orig = by_id[&id];
                    let expect_n = limit.map_or(orig.total, |l| orig.total.min(l));
                    assert_eq!(n, expect_n, "sequence length in row");
                    let target = orig.target.saturating_sub(orig.total - n);
                    *seen[step.epoch].entry(id).or_default() += 1;
                    if target == 0 {
                        assert_eq!(w, 0.0);
                    } else {
                        seqs_with_target += 1;
                        step_targets += target as u64;
                        weight_sum += w as f64 * target as f64;
                    }
                }
                assert_eq!(row.positions().len() as u32, row.used());
            }
            if cfg.strategy == Strategy::Pack {
                assert_eq!(Some(mb.row_len), cfg.max_tokens);
            } else {
                assert_eq!(mb.row_len, longest, "padded rows pad to the micro-batch's longest");
            }
        }
        assert!(per_device.iter().all(|&c| c <= cfg.accum));
        if seqs_with_target > 0 {
            assert!((weight_sum - 1.0).abs() < 1e-5, "step weights sum to {weight_sum}");
        }
        // Sequence mode: each sequence's total weight is exactly 1/M (up to f32 rounding).
        if cfg.loss == LossMode::Sequence {
            for mb in &step.micro_batches {
                for row in &mb.rows {
                    for ((k, &id), &w) in row.ids.iter().enumerate().zip(&row.weights) {
                        let n = row.cu_seqlens[k + 1] - row.cu_seqlens[k];
                        let orig = by_id[&id];
                        let t = orig.target.saturating_sub(orig.total - n);
                        if t > 0 {
                            let total = w as f64 * t as f64;
                            assert!(
                                (total - 1.0 / seqs_with_target as f64).abs()
                                    < 1e-6 / seqs_with_target as f64 + 1e-9
                            );
                        }
                    }
                }
            }
        } else if step_targets > 0 {
            for mb in &step.micro_batches {
                for row in &mb.rows {
                    for &w in &row.weights {
                        assert!(w == 0.0 || w == (1.0 / step_targets as f64) as f32);
                    }
                }
            }
        }
    }
    for epoch in seen {
        assert_eq!(epoch.len(), expected_present, "every sequence once per epoch");
        assert!(epoch.values().all(|&c| c == 1), "a sequence twice in an epoch");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn plans_are_valid(items in items_strategy(), cfg in config_strategy()) {
        let plan = plan(&items, &cfg).unwrap();
        check_plan(&items, &cfg, &plan);
    }

    #[test]
    fn deterministic_under_seed(items in items_strategy(), cfg in config_strategy()) {
        let a = plan(&items, &cfg).unwrap();
        let b = plan(&items, &cfg).unwrap();
        let (mut ja, mut jb) = (Vec::new(), Vec::new());
        a.write_jsonl(&mut ja).unwrap();
        b.write_jsonl(&mut jb).unwrap();
        prop_assert_eq!(ja, jb);
    }

    /// The same global step gives the same per-sequence weights whatever its split over devices and
    /// accumulation: D × A = 4 as (4, 1), (2, 2) and (1, 4).
    #[test]
    fn weights_do_not_depend_on_the_split(items in items_strategy(), cfg in config_strategy()) {
        let mut per_split = Vec::new();
        for (devices, accum) in [(4, 1), (2, 2), (1, 4)] {
            let p = plan(&items, &PlanConfig { devices, accum, ..cfg.clone() }).unwrap();
            let steps: Vec<Vec<(usize, u32)>> = p.steps.iter().map(|s| {
                let mut v: Vec<(usize, u32)> = s.micro_batches.iter()
                    .flat_map(|mb| mb.rows.iter())
                    .flat_map(|r| r.ids.iter().copied().zip(r.weights.iter().map(|w| w.to_bits())))
                    .collect();
                v.sort_unstable();
                v
            }).collect();
            per_split.push(steps);
        }
        prop_assert_eq!(&per_split[0], &per_split[1]);
        prop_assert_eq!(&per_split[0], &per_split[2]);
    }

    /// First-fit never uses more rows than next-fit over the same order (the classic dominance
    /// result); FFD/BFD are compared with next-fit over the same decreasing order.
    #[test]
    fn ffd_and_bfd_fill_at_least_next_fit(lengths in prop::collection::vec(1u32..=1000, 0..300)) {
        let mut dec = lengths.clone();
        dec.sort_unstable_by(|a, b| b.cmp(a));
        let nf = pack::next_fit(&dec, 1000).len();
        prop_assert!(pack::first_fit_decreasing(&lengths, 1000).len() <= nf);
        prop_assert!(pack::best_fit_decreasing(&lengths, 1000).len() <= nf);
    }
}

/// "FFD fill ≥ next-fit fill" does not hold for every input order: next-fit over a lucky order can
/// be optimal where FFD is not. Sizes {3,3,2,2,2,2}, capacity 7: OPT = 2 rows (3+2+2 twice), FFD = 3
/// (3+3 | 2+2+2 | 2), next-fit over 3,2,2,3,2,2 = 2. So the property tested above is the true one,
/// and on realistic mixes (below) FFD wins by a wide margin.
#[test]
fn ffd_is_not_optimal_and_next_fit_can_be_lucky() {
    let lucky = [3, 2, 2, 3, 2, 2];
    assert_eq!(pack::next_fit(&lucky, 7).len(), 2);
    assert_eq!(pack::first_fit_decreasing(&lucky, 7).len(), 3);
}

#[test]
fn ffd_fill_on_longalign_mix() {
    let items = mix::longalign_like(10_000, 10_000, 1);
    let base = PlanConfig { max_tokens: Some(65536), ..PlanConfig::default() };
    let fill = |algorithm| plan(&items, &PlanConfig { algorithm, ..base.clone() }).unwrap().stats().fill;
    let (nf, ffd, bfd) = (fill(Algorithm::NextFit), fill(Algorithm::Ffd), fill(Algorithm::Bfd));
    assert!(ffd >= 0.995, "FFD fill {ffd}");
    assert!(bfd >= 0.995, "BFD fill {bfd}");
    assert!(ffd > nf, "FFD {ffd} vs next-fit {nf}");
}

#[test]
fn hand_made_pack_plan() {
    let items: Vec<Item> = [(5, 2), (4, 4), (2, 0), (3, 1)]
        .iter()
        .enumerate()
        .map(|(id, &(total, target))| Item { id, total, target })
        .collect();
    let cfg = PlanConfig { max_tokens: Some(8), algorithm: Algorithm::Ffd, ..PlanConfig::default() };
    let p = plan(&items, &cfg).unwrap();
    // FFD: 5 → r0, 4 → r1, 3 → r0 (full), 2 → r1. One step (D = A = 1, batch 1 → 2 steps).
    assert_eq!(p.steps.len(), 2);
    let rows: Vec<&Row> = p.micro_batches().flat_map(|mb| mb.rows.iter()).collect();
    let mut ids: Vec<Vec<usize>> = rows.iter().map(|r| r.ids.clone()).collect();
    ids.sort();
    assert_eq!(ids, vec![vec![0, 3], vec![1, 2]]);
    let r0 = rows.iter().find(|r| r.ids == vec![0, 3]).unwrap();
    assert_eq!(r0.cu_seqlens, vec![0, 5, 8]);
    assert_eq!(r0.positions(), vec![0, 1, 2, 3, 4, 0, 1, 2]);
    // Step of row [0, 3] alone: M = 2 → seq 0 (2 targets) weight 1/4, seq 3 (1 target) 1/2.
    assert_eq!(r0.weights, vec![0.25, 0.5]);
    let r1 = rows.iter().find(|r| r.ids == vec![1, 2]).unwrap();
    // Seq 2 has no targets: weight 0, M = 1.
    assert_eq!(r1.weights, vec![0.25, 0.0]);
}

#[test]
fn overlong_policies() {
    let items = vec![Item { id: 0, total: 10, target: 4 }, Item { id: 1, total: 3, target: 3 }];
    let cfg = PlanConfig { max_tokens: Some(8), ..PlanConfig::default() };
    let p = plan(&items, &PlanConfig { overlong: Overlong::Truncate, ..cfg.clone() }).unwrap();
    assert_eq!((p.truncated, p.dropped), (1, 0));
    assert_eq!(p.items[0], Item { id: 0, total: 8, target: 2 });
    let p = plan(&items, &PlanConfig { overlong: Overlong::Drop, ..cfg.clone() }).unwrap();
    assert_eq!((p.truncated, p.dropped, p.items.len()), (0, 1, 1));
    let err = plan(&items, &PlanConfig { overlong: Overlong::Error, ..cfg }).unwrap_err();
    assert_eq!(err, PlanError::Overlong { id: 0, total: 10, limit: 8 });
}

#[test]
fn bad_items_and_configs_are_errors() {
    let cfg = PlanConfig::default();
    assert!(plan(&[Item { id: 3, total: 0, target: 0 }], &cfg).unwrap_err().to_string().contains("item 3"));
    assert!(plan(&[Item { id: 1, total: 2, target: 5 }], &cfg).is_err());
    assert!(plan(&[], &PlanConfig { batch_size: 0, ..cfg.clone() }).is_err());
    assert!(plan(&[], &PlanConfig { max_tokens: None, ..cfg.clone() }).is_err());
    assert!(plan(&[], &PlanConfig { token_budget: Some(10), ..cfg }).is_err());
}

#[test]
fn sorted_batches_group_similar_lengths_and_shuffle_steps() {
    let items: Vec<Item> =
        (0..64).map(|id| Item { id, total: 1 + ((id as u32 * 37) % 64) / 4, target: 1 }).collect();
    let cfg =
        PlanConfig { strategy: Strategy::Sorted, max_tokens: None, batch_size: 4, ..PlanConfig::default() };
    let p = plan(&items, &cfg).unwrap();
    let stats = p.stats();
    assert_eq!(stats.fill, 1.0, "each length occurs 4 times: sorted groups of 4 have no padding");
    let first_lens: Vec<u32> = p.steps.iter().map(|s| s.micro_batches[0].row_len).collect();
    let mut sorted = first_lens.clone();
    sorted.sort();
    assert_ne!(first_lens, sorted, "steps are shuffled");
}

#[test]
fn device_assignment_balances_tokens() {
    // Four micro-batches of loads 10, 9, 2, 1 over two devices × two micro: LPT gives {10,1} and
    // {9,2}, not the round-robin {10,2} / {9,1}.
    let items: Vec<Item> =
        [10, 9, 2, 1].iter().enumerate().map(|(id, &t)| Item { id, total: t, target: 1 }).collect();
    let cfg = PlanConfig {
        strategy: Strategy::Sorted,
        max_tokens: None,
        batch_size: 1,
        devices: 2,
        accum: 2,
        ..PlanConfig::default()
    };
    let p = plan(&items, &cfg).unwrap();
    let mut per_device = [0u32; 2];
    for mb in p.micro_batches() {
        per_device[mb.device] += mb.row_len;
    }
    per_device.sort();
    assert_eq!(per_device, [11, 11]);
}
