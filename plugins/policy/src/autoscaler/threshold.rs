//! Threshold-based vertical autoscaling, ClickHouse-Cloud style (MISSION S3.3, S3.4).

use super::{AutoscaleSettings, Autoscaler, MetricSample, Recommendation, ReplicaSize, GIB};

/// Recommends one size for every replica from the peaks of a window of samples.
///
/// - **Pinned** (S3.4): `min_memory_bytes == max_memory_bytes` fixes the size there and turns
///   autoscaling off, whatever the samples say.
/// - **No samples**: nothing to go on, so the current size stays (moved into the bounds if the
///   operator changed them).
/// - **CPU rule** (S3.3): with `peak` the highest `cpu_percent` in the window, `peak >
///   cpu_upper_percent` doubles the current CPU, `peak < cpu_upper_percent / 2` halves it,
///   anything in between (both ends included: 75% and 37.5% keep) keeps it. Doubling and
///   halving rather than stepping by one core converges in a few rounds, and the gap between
///   the two thresholds keeps the size from flapping.
/// - **Memory rule** (S3.3): `memory_headroom_percent` (125%) of the peak memory in use, or
///   `oom_headroom_percent` (150%) when any sample saw an out-of-memory event, since the peak
///   then understates what the workload wanted.
/// - The CPU figure is converted to memory at `memory_per_cpu_bytes` (1 CPU : 4 GiB) and the
///   **larger** of the two wins, so neither resource is starved; the result is rounded up to a
///   whole CPU's worth of memory, clamped to `[min_memory_bytes, max_memory_bytes]`, and the
///   CPU follows from the memory at the same ratio.
///
/// The reason names the rule that decided, with its numbers (e.g. `cpu peak 82.0% > 75%:
/// double to 4 CPU / 16 GiB`), and says when the bounds clamped the size. Invalid settings
/// (`memory_per_cpu_bytes` of 0, min above max) keep the current size and say why.
#[derive(Debug, Default, Clone, Copy)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ThresholdAutoscaler;

impl Autoscaler for ThresholdAutoscaler {
    fn recommend(
        &self,
        window: &[MetricSample],
        current: &ReplicaSize,
        settings: &AutoscaleSettings,
    ) -> Recommendation {
        let (min, max, per_cpu) = (settings.min_memory_bytes, settings.max_memory_bytes, settings.memory_per_cpu_bytes);
        if per_cpu == 0 {
            return keep(current, "invalid settings: memory_per_cpu_bytes is 0, so sizes cannot be computed");
        }
        if min > max {
            return keep(
                current,
                &format!("invalid settings: min memory {} is above max memory {}", gib(min), gib(max)),
            );
        }
        if min == max {
            let size = size_for(min, per_cpu);
            let reason = format!("autoscaling disabled: min = max memory pins the size at {}", describe(&size));
            return Recommendation { size, reason };
        }
        if window.is_empty() {
            let memory = current.memory_bytes.clamp(min, max);
            if memory == current.memory_bytes {
                return keep(current, "no samples in the window");
            }
            let size = size_for(memory, per_cpu);
            let reason = format!(
                "no samples in the window: keep the current size{}",
                clamp_note(current.memory_bytes, min, max)
            );
            return Recommendation { size, reason: format!("{reason}: {}", describe(&size)) };
        }

        // Ignores NaN samples (`f64::max` returns the other operand).
        let peak_cpu = window.iter().map(|s| s.cpu_percent).fold(0.0, f64::max);
        let upper = settings.cpu_upper_percent;
        let lower = upper / 2.0;
        let (cpu_millis, cpu_rule, cpu_verb) = if peak_cpu > upper {
            (current.cpu_millis.saturating_mul(2), format!("cpu peak {peak_cpu:.1}% > {upper}%"), "double to")
        } else if peak_cpu < lower {
            (current.cpu_millis / 2, format!("cpu peak {peak_cpu:.1}% < {lower}%"), "halve to")
        } else {
            (current.cpu_millis, format!("cpu peak {peak_cpu:.1}% within {lower}%..={upper}%"), "keep")
        };
        let cpu_memory = memory_for(cpu_millis, per_cpu);

        let peak_memory = window.iter().map(|s| s.memory_used).max().unwrap_or(0);
        let oom = window.iter().any(|s| s.oom);
        let headroom = if oom { settings.oom_headroom_percent } else { settings.memory_headroom_percent };
        // Rounded to the byte so that exact products (16 GiB × 125%) stay exact; `as` saturates
        // and maps NaN to 0.
        let peak_memory_wanted = (peak_memory as f64 * headroom / 100.0).round() as u64;
        let after_oom = if oom { " after an OOM" } else { "" };
        let peak = gib(peak_memory);
        let memory_rule = format!("memory peak {peak} × {headroom}%{after_oom} = {}", gib(peak_memory_wanted));

        let (wanted, rule, verb, other) = if cpu_memory >= peak_memory_wanted {
            (cpu_memory, cpu_rule, cpu_verb, format!("memory rule wanted {}", gib(peak_memory_wanted)))
        } else {
            (peak_memory_wanted, memory_rule, "size to", format!("cpu rule wanted {}", gib(cpu_memory)))
        };
        let rounded = wanted.div_ceil(per_cpu).saturating_mul(per_cpu);
        let wanted_size = size_for(rounded, per_cpu);
        let size = size_for(rounded.clamp(min, max), per_cpu);
        let mut reason = format!("{rule}: {verb} {}", describe(&wanted_size));
        if size != wanted_size {
            reason.push_str(&format!("{}: {}", clamp_note(rounded, min, max), describe(&size)));
        }
        reason.push_str(&format!(" ({other})"));
        Recommendation { size, reason }
    }
}

fn keep(current: &ReplicaSize, why: &str) -> Recommendation {
    Recommendation { size: *current, reason: format!("{why}: keep {}", describe(current)) }
}

/// The size with `memory` bytes and the CPU that comes with it.
fn size_for(memory: u64, per_cpu: u64) -> ReplicaSize {
    let millis = (u128::from(memory) * 1000).checked_div(u128::from(per_cpu)).unwrap_or(0);
    ReplicaSize { cpu_millis: u32::try_from(millis).unwrap_or(u32::MAX), memory_bytes: memory }
}

/// The memory that comes with `cpu_millis`.
fn memory_for(cpu_millis: u32, per_cpu: u64) -> u64 {
    u64::try_from(u128::from(cpu_millis) * u128::from(per_cpu) / 1000).unwrap_or(u64::MAX)
}

fn clamp_note(memory: u64, min: u64, max: u64) -> String {
    if memory > max {
        format!(", clamped to max {}", gib(max))
    } else if memory < min {
        format!(", clamped to min {}", gib(min))
    } else {
        String::new()
    }
}

/// `4 CPU / 16 GiB`.
fn describe(size: &ReplicaSize) -> String {
    format!("{} CPU / {}", f64::from(size.cpu_millis) / 1000.0, gib(size.memory_bytes))
}

/// `16 GiB`, or `9.6 GiB` when not whole.
fn gib(bytes: u64) -> String {
    // Not `is_multiple_of`: that needs Rust 1.87 and the workspace supports 1.85.
    if (bytes / GIB) * GIB == bytes {
        format!("{} GiB", bytes / GIB)
    } else {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn size(cpus: u32, gib: u64) -> ReplicaSize {
        ReplicaSize { cpu_millis: cpus * 1000, memory_bytes: gib * GIB }
    }

    fn sample(cpu_percent: f64, memory_used: u64) -> MetricSample {
        MetricSample { at_ms: 0, cpu_percent, memory_used, oom: false }
    }

    /// Samples peaking at `cpu` percent, with little memory in use.
    fn cpu_window(cpu: f64) -> Vec<MetricSample> {
        vec![sample(cpu / 3.0, GIB), sample(cpu, GIB), sample(1.0, GIB)]
    }

    fn recommend(window: &[MetricSample], current: ReplicaSize) -> Recommendation {
        ThresholdAutoscaler.recommend(window, &current, &AutoscaleSettings::default())
    }

    #[test]
    fn cpu_above_the_upper_threshold_doubles() {
        let r = recommend(&cpu_window(82.0), size(2, 8));
        assert_eq!(r.size, size(4, 16));
        assert!(r.reason.starts_with("cpu peak 82.0% > 75%: double to 4 CPU / 16 GiB"), "{}", r.reason);
    }

    #[test]
    fn cpu_exactly_at_the_upper_threshold_keeps() {
        let r = recommend(&cpu_window(75.0), size(2, 8));
        assert_eq!(r.size, size(2, 8));
        assert!(r.reason.starts_with("cpu peak 75.0% within 37.5%..=75%: keep 2 CPU / 8 GiB"), "{}", r.reason);
        assert_eq!(recommend(&cpu_window(75.01), size(2, 8)).size, size(4, 16));
    }

    #[test]
    fn cpu_below_half_the_upper_threshold_halves() {
        let r = recommend(&cpu_window(20.0), size(4, 16));
        assert_eq!(r.size, size(2, 8));
        assert!(r.reason.starts_with("cpu peak 20.0% < 37.5%: halve to 2 CPU / 8 GiB"), "{}", r.reason);
        assert_eq!(recommend(&cpu_window(37.49), size(4, 16)).size, size(2, 8));
    }

    #[test]
    fn cpu_exactly_at_half_the_upper_threshold_keeps() {
        assert_eq!(recommend(&cpu_window(37.5), size(4, 16)).size, size(4, 16));
        assert_eq!(recommend(&cpu_window(50.0), size(4, 16)).size, size(4, 16));
    }

    #[test]
    fn the_peak_decides_not_the_average() {
        let window = [sample(10.0, GIB), sample(90.0, GIB), sample(10.0, GIB), sample(10.0, GIB)];
        assert_eq!(recommend(&window, size(2, 8)).size, size(4, 16));
    }

    #[test]
    fn memory_sizes_to_125_percent_of_peak_rounded_up_to_whole_cpus() {
        // 12 GiB × 125% = 15 GiB → 16 GiB = 4 CPU; the CPU rule only wants 8 GiB.
        let window = [sample(50.0, 10 * GIB), sample(50.0, 12 * GIB)];
        let r = recommend(&window, size(2, 8));
        assert_eq!(r.size, size(4, 16));
        assert!(r.reason.starts_with("memory peak 12 GiB × 125% = 15 GiB: size to 4 CPU / 16 GiB"), "{}", r.reason);
        assert!(r.reason.contains("cpu rule wanted 8 GiB"), "{}", r.reason);
    }

    #[test]
    fn an_exact_multiple_is_not_rounded_further() {
        // 16 GiB × 125% = 20 GiB = 5 CPU exactly.
        let r = recommend(&[sample(50.0, 16 * GIB)], size(2, 8));
        assert_eq!(r.size, size(5, 20));
    }

    #[test]
    fn an_oom_sizes_to_150_percent() {
        let mut window = vec![sample(50.0, 12 * GIB), sample(50.0, 11 * GIB)];
        window[1].oom = true;
        // 12 GiB × 150% = 18 GiB → 20 GiB = 5 CPU.
        let r = recommend(&window, size(2, 8));
        assert_eq!(r.size, size(5, 20));
        let expected = "memory peak 12 GiB × 150% after an OOM = 18 GiB: size to 5 CPU";
        assert!(r.reason.starts_with(expected), "{}", r.reason);
    }

    #[test]
    fn the_larger_recommendation_wins() {
        // CPU doubles 8 → 16 CPU (64 GiB); memory wants 12 GiB × 125% = 15 GiB.
        let window = [sample(80.0, 12 * GIB)];
        let r = recommend(&window, size(8, 32));
        assert_eq!(r.size, size(16, 64));
        assert!(r.reason.starts_with("cpu peak 80.0% > 75%"), "{}", r.reason);
        // CPU halves 8 → 4 CPU (16 GiB); memory wants 30 GiB × 125% = 37.5 GiB → 40 GiB.
        let window = [sample(10.0, 30 * GIB)];
        let r = recommend(&window, size(8, 32));
        assert_eq!(r.size, size(10, 40));
        assert!(r.reason.starts_with("memory peak 30 GiB × 125% = 37.5 GiB"), "{}", r.reason);
    }

    #[test]
    fn clamps_to_the_maximum() {
        let r = recommend(&cpu_window(95.0), size(16, 64));
        assert_eq!(r.size, size(16, 64));
        assert!(
            r.reason.contains("double to 32 CPU / 128 GiB, clamped to max 64 GiB: 16 CPU / 64 GiB"),
            "{}",
            r.reason
        );
        let r = recommend(&[sample(50.0, 100 * GIB)], size(2, 8));
        assert_eq!(r.size, size(16, 64));
        assert!(r.reason.contains("clamped to max 64 GiB"), "{}", r.reason);
    }

    #[test]
    fn clamps_to_the_minimum() {
        let settings = AutoscaleSettings { min_memory_bytes: 8 * GIB, ..AutoscaleSettings::default() };
        let r = ThresholdAutoscaler.recommend(&cpu_window(5.0), &size(2, 8), &settings);
        assert_eq!(r.size, size(2, 8));
        assert!(r.reason.contains("halve to 1 CPU / 4 GiB, clamped to min 8 GiB: 2 CPU / 8 GiB"), "{}", r.reason);
        // Without the raised minimum, halving 1 CPU gives half a CPU: rounded up to 1 CPU.
        let r = recommend(&cpu_window(5.0), size(1, 4));
        assert_eq!(r.size, size(1, 4));
        assert!(!r.reason.contains("clamped"), "{}", r.reason);
    }

    #[test]
    fn a_bound_that_is_not_a_whole_cpu_gives_fractional_cpu() {
        let settings = AutoscaleSettings { max_memory_bytes: 10 * GIB, ..AutoscaleSettings::default() };
        let r = ThresholdAutoscaler.recommend(&cpu_window(90.0), &size(2, 8), &settings);
        assert_eq!(r.size, ReplicaSize { cpu_millis: 2_500, memory_bytes: 10 * GIB });
        assert!(r.reason.contains("double to 4 CPU / 16 GiB, clamped to max 10 GiB: 2.5 CPU / 10 GiB"), "{}", r.reason);
    }

    #[test]
    fn pinned_size_disables_autoscaling() {
        let settings = AutoscaleSettings {
            min_memory_bytes: 16 * GIB,
            max_memory_bytes: 16 * GIB,
            ..AutoscaleSettings::default()
        };
        for window in [cpu_window(99.0), cpu_window(1.0), Vec::new()] {
            let r = ThresholdAutoscaler.recommend(&window, &size(1, 4), &settings);
            assert_eq!(r.size, size(4, 16));
            assert!(r.reason.contains("autoscaling disabled") && r.reason.contains("pins"), "{}", r.reason);
        }
        let settings = AutoscaleSettings {
            min_memory_bytes: 10 * GIB,
            max_memory_bytes: 10 * GIB,
            ..AutoscaleSettings::default()
        };
        let r = ThresholdAutoscaler.recommend(&[], &size(1, 4), &settings);
        assert_eq!(r.size, ReplicaSize { cpu_millis: 2_500, memory_bytes: 10 * GIB });
    }

    #[test]
    fn no_samples_keeps_the_current_size_within_bounds() {
        let r = recommend(&[], size(2, 8));
        assert_eq!(r.size, size(2, 8));
        assert!(r.reason.contains("no samples"), "{}", r.reason);

        let r = recommend(&[], size(32, 128));
        assert_eq!(r.size, size(16, 64));
        assert!(r.reason.contains("no samples") && r.reason.contains("clamped to max 64 GiB"), "{}", r.reason);

        let r = recommend(&[], ReplicaSize { cpu_millis: 500, memory_bytes: 2 * GIB });
        assert_eq!(r.size, size(1, 4));
        assert!(r.reason.contains("clamped to min 4 GiB"), "{}", r.reason);
    }

    #[test]
    fn invalid_settings_keep_the_current_size() {
        let zero = AutoscaleSettings { memory_per_cpu_bytes: 0, ..AutoscaleSettings::default() };
        let r = ThresholdAutoscaler.recommend(&cpu_window(99.0), &size(2, 8), &zero);
        assert_eq!(r.size, size(2, 8));
        assert!(r.reason.contains("memory_per_cpu_bytes is 0"), "{}", r.reason);

        let inverted =
            AutoscaleSettings { min_memory_bytes: 64 * GIB, max_memory_bytes: 4 * GIB, ..AutoscaleSettings::default() };
        let r = ThresholdAutoscaler.recommend(&cpu_window(99.0), &size(2, 8), &inverted);
        assert_eq!(r.size, size(2, 8));
        assert!(r.reason.contains("min memory 64 GiB is above max memory 4 GiB"), "{}", r.reason);
    }

    #[test]
    fn nan_samples_are_ignored_and_huge_figures_saturate() {
        let window = [sample(f64::NAN, GIB), sample(50.0, GIB)];
        assert_eq!(recommend(&window, size(2, 8)).size, size(2, 8));

        let settings = AutoscaleSettings { max_memory_bytes: u64::MAX, ..AutoscaleSettings::default() };
        let huge = ReplicaSize { cpu_millis: u32::MAX, memory_bytes: u64::MAX };
        let r = ThresholdAutoscaler.recommend(&[sample(99.0, u64::MAX)], &huge, &settings);
        assert!(r.size.memory_bytes >= u64::MAX - 4 * GIB && r.size.cpu_millis == u32::MAX, "{r:?}");
    }

    #[test]
    fn custom_thresholds_are_used() {
        let settings = AutoscaleSettings { cpu_upper_percent: 50.0, ..AutoscaleSettings::default() };
        let r = ThresholdAutoscaler.recommend(&cpu_window(60.0), &size(2, 8), &settings);
        assert_eq!(r.size, size(4, 16));
        assert!(r.reason.starts_with("cpu peak 60.0% > 50%"), "{}", r.reason);
        let r = ThresholdAutoscaler.recommend(&cpu_window(24.0), &size(2, 8), &settings);
        assert!(r.reason.starts_with("cpu peak 24.0% < 25%: halve"), "{}", r.reason);
    }
}
