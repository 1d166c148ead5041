#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;

use super::*;

const DIM: usize = 32;
const N: usize = 5000;
const NQ: usize = 100;
const K: usize = 10;

const TYPES: [IndexType; 5] =
    [IndexType::Flat, IndexType::IvfFlat, IndexType::IvfSq8, IndexType::IvfPq, IndexType::Hnsw];
const METRICS: [MetricType; 3] = [MetricType::L2, MetricType::Ip, MetricType::Cosine];

/// Deterministic uniform floats in [-1, 1) (64-bit LCG, top 24 bits).
fn random_vectors(seed: u64, rows: usize, dim: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..rows * dim)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn params(index_type: IndexType, metric: MetricType) -> IndexParams {
    IndexParams { index_type, metric, nlist: 0, m: 0, nbits: 0, ef_construction: 0, auto: false, name: String::new() }
}

/// Search knobs that should make each type (near) exact, except HNSW at ef 64.
fn search_params(index: &VectorIndex) -> SearchParams {
    SearchParams { nprobe: index.nlist() as u32, ef: 64 }
}

fn recall(truth: &[i64], got: &[i64], k: usize) -> f64 {
    let mut hits = 0usize;
    for (t, g) in truth.chunks(k).zip(got.chunks(k)) {
        let t: HashSet<i64> = t.iter().copied().filter(|&l| l >= 0).collect();
        hits += g.iter().filter(|l| t.contains(l)).count();
    }
    hits as f64 / truth.len() as f64
}

fn exact(metric: MetricType, data: &[f32], queries: &[f32], k: usize) -> (Vec<f32>, Vec<i64>) {
    let flat = FlatVectors::from_vec(DIM, metric, data.to_vec()).unwrap();
    flat.search(queries, k, &|_| false)
}

#[test]
fn recall_per_type_and_metric() {
    let data = random_vectors(1, N, DIM);
    let queries = random_vectors(2, NQ, DIM);
    for metric in METRICS {
        let (truth_d, truth) = exact(metric, &data, &queries, K);
        for ty in TYPES {
            let index = VectorIndex::build(&params(ty, metric), DIM, &data).unwrap();
            assert_eq!(index.len(), N);
            assert_eq!(index.index_type(), ty);
            let (d, l) = index.search(&queries, K, &search_params(&index)).unwrap();
            assert_eq!(l.len(), NQ * K);
            let r = recall(&truth, &l, K);
            println!(
                "recall@{K} {ty:?} {metric:?} nlist={} = {r:.4} (mem ~{} KiB)",
                index.nlist(),
                index.mem_bytes() / 1024
            );
            let min = match ty {
                IndexType::Flat | IndexType::IvfFlat => 0.99,
                IndexType::IvfSq8 => 0.85,
                IndexType::Hnsw => 0.9,
                IndexType::IvfPq => 0.05,
            };
            assert!(r >= min, "{ty:?} {metric:?} recall {r} < {min}");
            if ty == IndexType::Flat {
                for (a, b) in d.iter().zip(&truth_d) {
                    assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "faiss {a} vs exact {b}");
                }
            }
            // Best first in the metric's direction.
            for row in d.chunks(K) {
                for w in row.windows(2) {
                    assert!(if higher_is_better(metric) { w[0] >= w[1] } else { w[0] <= w[1] });
                }
            }
        }
    }
}

#[test]
fn serialization_round_trip_is_identical() {
    let data = random_vectors(3, 3000, DIM);
    let queries = random_vectors(4, 20, DIM);
    for metric in METRICS {
        for ty in TYPES {
            let index = VectorIndex::build(&params(ty, metric), DIM, &data).unwrap();
            let sp = SearchParams { nprobe: 4, ef: 32 };
            let before = index.search(&queries, K, &sp).unwrap();
            let bytes = index.to_bytes().unwrap();
            let loaded = VectorIndex::from_bytes(&bytes).unwrap();
            assert_eq!(loaded.metric(), metric);
            assert_eq!(loaded.index_type(), ty);
            assert_eq!((loaded.len(), loaded.dim(), loaded.nlist()), (index.len(), DIM, index.nlist()));
            assert_eq!(loaded.mem_bytes(), index.mem_bytes());
            let after = loaded.search(&queries, K, &sp).unwrap();
            assert_eq!(before.1, after.1, "{ty:?} {metric:?} labels differ after reload");
            assert_eq!(before.0, after.0, "{ty:?} {metric:?} distances differ after reload");
            assert_eq!(loaded.to_bytes().unwrap(), bytes);
        }
    }
    let index = VectorIndex::build(&params(IndexType::Flat, MetricType::L2), DIM, &data).unwrap();
    let bytes = index.to_bytes().unwrap();
    assert!(matches!(VectorIndex::from_bytes(&bytes[..10]), Err(VectorError::Corrupt(_))));
    assert!(VectorIndex::from_bytes(&bytes[..bytes.len() / 2]).is_err());
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(matches!(VectorIndex::from_bytes(&bad), Err(VectorError::Corrupt(_))));
}

/// A damaged index object (a flipped byte in the payload) used to load, and faiss' reader
/// trusts what it reads (HNSW neighbour ids, list sizes), so a search of it could read out of
/// bounds. The checksum refuses every damage before faiss sees the bytes; the `index_decode`
/// fuzz target checks the same with random damage.
#[test]
fn damaged_index_objects_are_refused_before_faiss_reads_them() {
    use super::plan::HEADER_LEN;
    let data = random_vectors(11, N, DIM);
    for ty in [IndexType::Hnsw, IndexType::IvfPq, IndexType::Flat] {
        let bytes = VectorIndex::build(&params(ty, MetricType::L2), DIM, &data).unwrap().to_bytes().unwrap();
        let n = bytes.len();
        for at in [4, 8, 20, 24, 31, 32, 40, n / 3, n / 2, n - 9, n - 1] {
            for flip in [0x01, 0x80, 0xFF] {
                let mut bad = bytes.clone();
                bad[at] ^= flip;
                let err = VectorIndex::from_bytes(&bad).unwrap_err();
                assert!(matches!(err, VectorError::Corrupt(_)), "{ty:?}: byte {at} ^ {flip:#x}: {err}");
            }
        }
        for keep in [HEADER_LEN, HEADER_LEN + 4, HEADER_LEN + 8, n / 2, n - 1] {
            assert!(VectorIndex::from_bytes(&bytes[..keep]).is_err(), "{ty:?}: truncated to {keep}");
        }
        // Objects written before the checksum (version 1: no checksum) still load.
        let mut v1 = bytes[..HEADER_LEN].to_vec();
        v1[4] = 1;
        v1.extend_from_slice(&bytes[HEADER_LEN + 8..]);
        assert_eq!(VectorIndex::from_bytes(&v1).unwrap().len(), N, "{ty:?}");
    }
}

#[test]
fn concurrent_search_on_one_index() {
    let data = random_vectors(5, N, DIM);
    let queries = random_vectors(6, 10, DIM);
    for ty in [IndexType::Hnsw, IndexType::IvfFlat, IndexType::Flat] {
        let index = VectorIndex::build(&params(ty, MetricType::L2), DIM, &data).unwrap();
        let spa = SearchParams { nprobe: 2, ef: 16 };
        let spb = SearchParams { nprobe: 32, ef: 128 };
        let want_a = index.search(&queries, K, &spa).unwrap();
        let want_b = index.search(&queries, K, &spb).unwrap();
        std::thread::scope(|s| {
            for (sp, want) in [(&spa, &want_a), (&spb, &want_b)] {
                let (index, queries) = (&index, &queries);
                s.spawn(move || {
                    for _ in 0..50 {
                        assert_eq!(&index.search(queries, K, sp).unwrap(), want, "{ty:?}");
                    }
                });
            }
        });
    }
}

#[test]
fn small_segment_falls_back() {
    let data = random_vectors(7, 50, DIM);
    let queries = random_vectors(8, 5, DIM);
    let (_, truth) = exact(MetricType::L2, &data, &queries, K);
    let cases = [
        (IndexType::IvfFlat, IndexType::IvfFlat),
        (IndexType::IvfSq8, IndexType::IvfSq8),
        (IndexType::IvfPq, IndexType::IvfFlat),
    ];
    for (asked, built) in cases {
        let mut p = params(asked, MetricType::L2);
        (p.nlist, p.m, p.nbits) = (128, 8, 8);
        let index = VectorIndex::build(&p, DIM, &data).unwrap();
        assert_eq!((index.index_type(), index.nlist(), index.len()), (built, 1, 50));
        let (_, l) = index.search(&queries, K, &SearchParams::default()).unwrap();
        let r = recall(&truth, &l, K);
        assert!(r >= if built == IndexType::IvfSq8 { 0.8 } else { 1.0 }, "{asked:?}: {r}");
    }
    // An empty segment still builds and searches.
    let empty = VectorIndex::build(&params(IndexType::IvfPq, MetricType::Ip), DIM, &[]).unwrap();
    assert_eq!((empty.index_type(), empty.len()), (IndexType::Flat, 0));
    let (_, l) = empty.search(&queries, 3, &SearchParams::default()).unwrap();
    assert!(l.iter().all(|&x| x == -1));
}

#[test]
fn invalid_params_are_explained() {
    let data = random_vectors(9, 500, 30);
    let mut p = params(IndexType::IvfPq, MetricType::L2);
    p.m = 8;
    match VectorIndex::build(&p, 30, &data) {
        Err(VectorError::InvalidParams(msg)) => assert!(msg.contains("m = 8") && msg.contains("30"), "{msg}"),
        other => panic!("expected InvalidParams, got {other:?}"),
    }
    p.m = 0; // default picks a divisor of 30
    let index = VectorIndex::build(&p, 30, &data).unwrap();
    assert_eq!(index.index_type(), IndexType::IvfPq);
    (p.m, p.nbits) = (5, 20);
    assert!(matches!(VectorIndex::build(&p, 30, &data), Err(VectorError::InvalidParams(m)) if m.contains("nbits")));
    assert!(matches!(VectorIndex::build(&p, 0, &data), Err(VectorError::InvalidParams(_))));
    assert!(matches!(VectorIndex::build(&p, 30, &data[..31]), Err(VectorError::InvalidParams(_))));
    let flat = VectorIndex::build(&params(IndexType::Flat, MetricType::L2), 30, &data).unwrap();
    assert!(flat.search(&data[..29], 1, &SearchParams::default()).is_err());
}

#[test]
fn deleted_rows_are_skipped_and_k_still_returned() {
    let data = random_vectors(10, N, DIM);
    let queries = random_vectors(11, 20, DIM);
    let even = |l: i64| l % 2 == 0;
    let flat = FlatVectors::from_vec(DIM, MetricType::L2, data.clone()).unwrap();
    let truth = flat.search(&queries, K, &|r| r % 2 == 0);
    let index = VectorIndex::build(&params(IndexType::Flat, MetricType::L2), DIM, &data).unwrap();
    for hint in [N / 2, 0] {
        let got = index.search_filtered(&queries, K, &SearchParams::default(), &even, hint).unwrap();
        assert_eq!(got.1, truth.1, "hint {hint}");
    }
    // Nearly everything deleted: the 5 live rows come back, the rest is padding.
    let live = |l: i64| l >= 5;
    let (d, l) = index.search_filtered(&queries, K, &SearchParams::default(), &live, 0).unwrap();
    for (row_l, row_d) in l.chunks(K).zip(d.chunks(K)) {
        let mut first: Vec<i64> = row_l[..5].to_vec();
        first.sort_unstable();
        assert_eq!(first, vec![0, 1, 2, 3, 4]);
        assert!(row_l[5..].iter().all(|&x| x == -1));
        assert!(row_d[5..].iter().all(|&x| x == f32::INFINITY));
    }
    // Approximate index: still k live hits.
    let hnsw = VectorIndex::build(&params(IndexType::Hnsw, MetricType::Cosine), DIM, &data).unwrap();
    let (_, l) = hnsw.search_filtered(&queries, K, &SearchParams::default(), &even, 10).unwrap();
    assert!(l.iter().all(|&x| x >= 0 && x % 2 == 1));
}

#[test]
fn flat_vectors_exact_with_skip_and_threads() {
    let data = random_vectors(12, 3000, DIM);
    let queries = random_vectors(13, 64, DIM);
    for metric in METRICS {
        let mut flat = FlatVectors::new(DIM, metric);
        flat.push(&data[..1000 * DIM]).unwrap();
        flat.push(&data[1000 * DIM..]).unwrap();
        assert_eq!(flat.len(), 3000);
        assert!(flat.push(&data[..5]).is_err());
        let skip = |r: usize| r.checked_rem(3) == Some(0);
        let (d, l) = flat.search(&queries, K, &skip); // 64*3000*32 → multi-threaded
        let (d1, l1) = flat.search(&queries[..DIM], K, &skip); // single-threaded
                                                               // The same rows; distances agree up to rounding (BLAS sums a batch in another order).
        assert_eq!(&l[..K], &l1[..]);
        for (a, b) in d[..K].iter().zip(&d1) {
            assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{metric:?}: {a} vs {b}");
        }
        // Naive reference.
        let mut normed = data.clone();
        let mut qn = queries.clone();
        if metric == MetricType::Cosine {
            normalize(&mut normed, DIM);
            normalize(&mut qn, DIM);
        }
        for (qi, q) in qn.chunks(DIM).enumerate() {
            let mut all: Vec<(f32, i64)> = normed
                .chunks(DIM)
                .enumerate()
                .filter(|(r, _)| !skip(*r))
                .map(|(r, v)| {
                    let s = match metric {
                        MetricType::L2 => -q.iter().zip(v).map(|(a, b)| (a - b) * (a - b)).sum::<f32>(),
                        _ => q.iter().zip(v).map(|(a, b)| a * b).sum::<f32>(),
                    };
                    (s, r as i64)
                })
                .collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0));
            let want: Vec<i64> = all[..K].iter().map(|x| x.1).collect();
            assert_eq!(&l[qi * K..(qi + 1) * K], &want[..], "{metric:?} query {qi}");
        }
    }
    let (d, l) = FlatVectors::new(DIM, MetricType::Ip).search(&queries, 2, &|_| false);
    assert_eq!((d.len(), l), (128, vec![-1; 128]));
    assert!(d.iter().all(|&x| x == f32::NEG_INFINITY));
}

#[test]
fn normalize_and_helpers() {
    let mut v = vec![3.0, 4.0, 0.0, 0.0, 1.0];
    normalize(&mut v, 2);
    assert_eq!(v, vec![0.6, 0.8, 0.0, 0.0, 1.0]);
    assert!(!higher_is_better(MetricType::L2));
    assert!(higher_is_better(MetricType::Ip) && higher_is_better(MetricType::Cosine));
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<VectorIndex>();
    assert_send_sync::<FlatVectors>();
}

#[test]
fn faiss_threads_apply_to_other_threads() {
    extern "C" {
        fn omp_get_max_threads() -> libc::c_int;
    }
    set_faiss_threads(3);
    // SAFETY: plain getter of the OpenMP runtime.
    assert_eq!(unsafe { omp_get_max_threads() }, 3);
    let other = std::thread::spawn(|| {
        apply_faiss_threads();
        // SAFETY: as above.
        unsafe { omp_get_max_threads() }
    });
    assert_eq!(other.join().unwrap(), 3);
    set_faiss_threads(std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1));
}

/// A bitmap (faiss IDSelectorBitmap layout) of the rows `0..n` for which `keep` holds.
fn bitmap(n: usize, keep: impl Fn(usize) -> bool) -> Vec<u8> {
    let mut bits = vec![0u8; n.div_ceil(8)];
    for i in (0..n).filter(|&i| keep(i)) {
        bits[i >> 3] |= 1 << (i & 7);
    }
    bits
}

fn allowed(bits: &[u8], row: i64) -> bool {
    row >= 0 && bits.get(row as usize >> 3).is_some_and(|b| (b >> (row & 7)) & 1 == 1)
}

#[test]
fn search_selected_prefilters_inside_faiss() {
    let data = random_vectors(1, N, DIM);
    let queries = random_vectors(2, NQ, DIM);
    let five = [7usize, 123, 999, 2500, 4999];
    let filters: [(&str, Vec<u8>); 3] = [
        ("every 3rd row", bitmap(N, |i| i % 3 == 0)),
        ("10% of rows", bitmap(N, |i| i % 10 == 4)),
        ("5 rows", bitmap(N, |i| five.contains(&i))),
    ];
    for metric in METRICS {
        for ty in [IndexType::Flat, IndexType::IvfFlat, IndexType::IvfSq8, IndexType::Hnsw] {
            let index = VectorIndex::build(&params(ty, metric), DIM, &data).unwrap();
            let sp = search_params(&index);
            for (name, bits) in &filters {
                let (d, l) = index.search_selected(&queries, K, &sp, bits).unwrap();
                assert_eq!((d.len(), l.len()), (NQ * K, NQ * K));
                for (&label, &dist) in l.iter().zip(&d) {
                    assert!(label == -1 || allowed(bits, label), "{ty:?} {metric:?} {name}: label {label} not allowed");
                    if label == -1 {
                        assert_eq!(dist, worst_distance(metric), "{ty:?} {metric:?} {name}: padding");
                    }
                }
                let flat = FlatVectors::from_vec(DIM, metric, data.clone()).unwrap();
                let (truth_d, truth) = flat.search(&queries, K, &|r| !allowed(bits, r as i64));
                // Recall over the hits that exist (the 5-row filter has only 5 per query).
                let r = recall(&truth, &l, K) * truth.len() as f64 / truth.iter().filter(|&&x| x >= 0).count() as f64;
                println!("search_selected {ty:?} {metric:?} {name}: recall@{K} vs exact = {r:.4}");
                match ty {
                    // Exact: FLAT, and IVF_FLAT probing every list, equal brute force over the
                    // allowed rows (distances compared, so exact ties may swap labels).
                    IndexType::Flat | IndexType::IvfFlat => {
                        assert!(r >= 0.998, "{ty:?} {metric:?} {name}: recall {r}");
                        for (a, b) in d.iter().zip(&truth_d) {
                            let close = a == b || (a - b).abs() <= 1e-3 * (1.0 + b.abs());
                            assert!(close, "{ty:?} {metric:?} {name}: {a} vs {b}");
                        }
                    }
                    IndexType::IvfSq8 => assert!(r >= 0.85, "{ty:?} {metric:?} {name}: recall {r}"),
                    // The 5-row filter leaves the graph mostly unreachable; only check labels.
                    IndexType::Hnsw if *name != "5 rows" => {
                        assert!(r >= 0.9, "{ty:?} {metric:?} {name}: recall {r}")
                    }
                    _ => {}
                }
                if *name == "5 rows" && ty != IndexType::Hnsw {
                    // Every allowed row is found, then padding.
                    for q in l.chunks(K) {
                        let mut got: Vec<i64> = q[..5].to_vec();
                        got.sort_unstable();
                        assert_eq!(got, five.iter().map(|&i| i as i64).collect::<Vec<_>>(), "{ty:?} {metric:?}");
                        assert!(q[5..].iter().all(|&x| x == -1));
                    }
                }
            }
        }
    }
}

#[test]
fn search_selected_with_all_rows_equals_search() {
    let data = random_vectors(3, N, DIM);
    let queries = random_vectors(4, 20, DIM);
    let all = bitmap(N, |_| true);
    for metric in METRICS {
        for ty in TYPES {
            let index = VectorIndex::build(&params(ty, metric), DIM, &data).unwrap();
            let sp = SearchParams { nprobe: 8, ef: 32 };
            let (d0, l0) = index.search(&queries, K, &sp).unwrap();
            let (d1, l1) = index.search_selected(&queries, K, &sp, &all).unwrap();
            // With a selector faiss takes its non-BLAS path, so distances may differ in the
            // last bits (and exact ties may swap).
            let r = recall(&l0, &l1, K);
            assert!(r >= 0.99, "{ty:?} {metric:?}: recall {r}");
            for (a, b) in d0.iter().zip(&d1) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{ty:?} {metric:?}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn search_selected_edge_cases() {
    let data = random_vectors(5, 300, DIM);
    let queries = random_vectors(6, 3, DIM);
    let index = VectorIndex::build(&params(IndexType::Hnsw, MetricType::L2), DIM, &data).unwrap();
    // No bits (and a bitmap shorter than the index): nothing is allowed.
    for bits in [Vec::new(), vec![0u8; 38], vec![0xFF; 2]] {
        let (d, l) = index.search_selected(&queries, K, &SearchParams::default(), &bits).unwrap();
        assert!(l.iter().all(|&x| x == -1 || (bits.len() == 2 && x < 16)), "{l:?}");
        assert!(l.iter().zip(&d).all(|(&x, &y)| x != -1 || y == f32::INFINITY));
    }
    // An HNSW search at another ef through the write lock.
    let bits = bitmap(300, |i| i % 2 == 1);
    let (_, l) = index.search_selected(&queries, K, &SearchParams { nprobe: 0, ef: 200 }, &bits).unwrap();
    assert!(l.iter().all(|&x| x % 2 == 1), "{l:?}");
    assert!(index.search_selected(&queries[..5], K, &SearchParams::default(), &bits).is_err());
    let empty = VectorIndex::build(&params(IndexType::Flat, MetricType::Ip), DIM, &[]).unwrap();
    let (d, l) = empty.search_selected(&queries, 2, &SearchParams::default(), &[]).unwrap();
    assert_eq!(l, vec![-1; 6]);
    assert_eq!(d, vec![f32::NEG_INFINITY; 6]);
}

/// The SIMD levels this binary has and this CPU runs (generic always).
fn available_levels() -> Vec<SimdLevel> {
    SimdLevel::ALL.into_iter().filter(|l| l.is_available()).collect()
}

/// Every faiss build this CPU runs builds and searches each index type correctly, and an
/// index written by any level reads back in every other with the same results and the same
/// bytes (the serialised format does not depend on SIMD).
#[test]
fn every_simd_level_builds_searches_and_reads_the_others_indexes() {
    let data = random_vectors(11, 3000, DIM);
    let queries = random_vectors(12, 50, DIM);
    let levels = available_levels();
    assert!(levels.contains(&SimdLevel::Generic));
    for metric in [MetricType::L2, MetricType::Ip] {
        let (_, truth) = exact(metric, &data, &queries, K);
        for ty in [IndexType::Flat, IndexType::IvfFlat, IndexType::Hnsw] {
            let mut flat_results = Vec::new();
            for &writer in &levels {
                let options = BuildOptions { simd: Some(writer), threads: None };
                let index = VectorIndex::build_with(&options, &params(ty, metric), DIM, &data).unwrap();
                assert_eq!(index.simd_level(), writer);
                let sp = SearchParams { nprobe: index.nlist() as u32, ef: 64 };
                let (d, l) = index.search(&queries, K, &sp).unwrap();
                let r = recall(&truth, &l, K);
                assert!(r >= 0.9, "{writer} {ty:?} {metric:?}: recall {r}");
                if ty == IndexType::Flat {
                    flat_results.push((writer, l.clone()));
                }
                let bytes = index.to_bytes().unwrap();
                for &reader in &levels {
                    let loaded = VectorIndex::from_bytes_on(reader, &bytes).unwrap();
                    assert_eq!(loaded.simd_level(), reader);
                    let (d2, l2) = loaded.search(&queries, K, &sp).unwrap();
                    assert_eq!(l, l2, "{ty:?} {metric:?}: written by {writer}, read by {reader}: labels differ");
                    for (a, b) in d.iter().zip(&d2) {
                        assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{writer}→{reader} {ty:?}: {a} vs {b}");
                    }
                    assert_eq!(loaded.to_bytes().unwrap(), bytes, "{writer}→{reader} {ty:?}: bytes differ");
                }
            }
            // Exact search finds the same rows whatever instructions compute the distances.
            for (level, labels) in flat_results.iter().skip(1) {
                assert_eq!(labels, &flat_results[0].1, "FLAT {metric:?}: {level} vs {}", flat_results[0].0);
            }
        }
    }
}

/// `generic` can always be forced, process-wide; a level the binary or CPU lacks is refused
/// with the reason instead of running (and dying of an illegal instruction).
#[test]
fn forcing_a_simd_level() {
    let data = random_vectors(13, 500, DIM);
    assert_eq!(select_simd(SimdChoice::Level(SimdLevel::Generic)).unwrap(), SimdLevel::Generic);
    let index = VectorIndex::build(&params(IndexType::Hnsw, MetricType::L2), DIM, &data).unwrap();
    assert_eq!(index.simd_level(), SimdLevel::Generic);
    assert_eq!(select_simd(SimdChoice::Auto).unwrap(), SimdLevel::best());
    assert_eq!(simd_level(), SimdLevel::best());
    for level in SimdLevel::ALL.into_iter().filter(|l| !l.is_available()) {
        let options = BuildOptions { simd: Some(level), threads: None };
        let err = VectorIndex::build_with(&options, &params(IndexType::Flat, MetricType::L2), DIM, &data).unwrap_err();
        assert!(matches!(err, VectorError::Simd(_)), "{err}");
        assert!(select_simd(SimdChoice::Level(level)).is_err());
    }
    // The config's names (validated in quiver-runtime without this crate) all parse.
    for name in quiver_runtime::config::FAISS_SIMD_CHOICES {
        assert!(name.parse::<SimdChoice>().is_ok(), "{name}");
    }
}

/// A build's thread count applies to its own thread only, and only while it runs.
#[test]
fn build_threads_stay_on_the_build_thread() {
    extern "C" {
        fn omp_get_max_threads() -> libc::c_int;
    }
    std::thread::spawn(|| {
        // SAFETY (all three): plain getter of the calling thread's OpenMP setting.
        let before = unsafe { omp_get_max_threads() };
        let inside = with_omp_threads(before as usize + 3, || unsafe { omp_get_max_threads() });
        assert_eq!(inside, before + 3);
        assert_eq!(unsafe { omp_get_max_threads() }, before);
        let data = random_vectors(14, 500, DIM);
        let options = BuildOptions { simd: None, threads: Some(2) };
        let index = VectorIndex::build_with(&options, &params(IndexType::Hnsw, MetricType::L2), DIM, &data).unwrap();
        assert_eq!(index.len(), 500);
    })
    .join()
    .unwrap();
}
