//! faiss with SIMD chosen at run time.
//!
//! faiss-sys links faiss 1.12 built without SIMD (`FAISS_OPT_LEVEL=generic`). This crate's
//! build script builds the same faiss source again as faiss' own AVX2 and AVX-512 variants and
//! prefixes every symbol they define (`qv_avx2_…`, `qv_avx512_…`), so all three live in one
//! static binary. [`FaissApi`] is the table of the faiss C API functions Quiver calls, one
//! table per [`SimdLevel`]; [`api`] hands out the table of a level after checking that it was
//! built and that this CPU can run it, so asking for a level the CPU lacks is an error, never
//! an illegal instruction.
//!
//! Every faiss object belongs to the variant that created it: free it, search it and read its
//! errors ([`FaissApi::faiss_get_last_error`]) through the same table. The variants share
//! nothing but libgomp, libstdc++ and BLAS; their serialised index format is the same, so an
//! index written by one variant reads back in any other.
//!
//! The process-wide default level ([`default_api`]) is `auto` (the best the CPU runs) unless
//! [`set_default`] chose another (Quiver does, from `node.faiss_simd`, at start).

use std::ffi::{c_char, c_int};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

pub use faiss_sys as sys;
use faiss_sys::{
    idx_t, FaissIDSelector, FaissIDSelectorBitmap, FaissIndex, FaissIndexIVF, FaissMetricType, FaissParameterSpace,
    FaissSearchParameters, FaissSearchParametersIVF, FILE,
};

/// The SIMD instructions a faiss build uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SimdLevel {
    /// No SIMD beyond x86-64's SSE2 (faiss-sys' build; runs on every CPU).
    Generic,
    /// AVX2, FMA, F16C and POPCNT (faiss' `avx2` build).
    Avx2,
    /// AVX-512 F, CD, VL, DQ and BW on top of AVX2 (faiss' `avx512` build).
    Avx512,
}

impl SimdLevel {
    /// Every level, lowest first.
    pub const ALL: [SimdLevel; 3] = [SimdLevel::Generic, SimdLevel::Avx2, SimdLevel::Avx512];

    /// The name used in configuration, logs and status (`generic`, `avx2`, `avx512`).
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Generic => "generic",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }

    /// Whether this binary contains the level's faiss build.
    pub fn is_built(self) -> bool {
        match self {
            SimdLevel::Generic => true,
            SimdLevel::Avx2 => cfg!(quiver_faiss_avx2),
            SimdLevel::Avx512 => cfg!(quiver_faiss_avx512),
        }
    }

    /// The CPU features the level's build is compiled for (gcc's `-m` flags in faiss' cmake).
    pub fn cpu_features(self) -> &'static [&'static str] {
        match self {
            SimdLevel::Generic => &[],
            SimdLevel::Avx2 => &["avx2", "fma", "f16c", "popcnt"],
            SimdLevel::Avx512 => {
                &["avx2", "fma", "f16c", "popcnt", "avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"]
            }
        }
    }

    /// The features of [`SimdLevel::cpu_features`] this CPU lacks (empty when it can run it).
    pub fn missing_cpu_features(self) -> Vec<&'static str> {
        self.missing_on(&cpu_has)
    }

    fn missing_on(self, has: &dyn Fn(&str) -> bool) -> Vec<&'static str> {
        self.cpu_features().iter().copied().filter(|f| !has(f)).collect()
    }

    /// Whether this binary has the level and this CPU can run it.
    pub fn is_available(self) -> bool {
        self.is_built() && self.missing_cpu_features().is_empty()
    }

    /// The highest available level.
    pub fn best() -> SimdLevel {
        SimdChoice::Auto.resolve_on(&cpu_has).unwrap_or(SimdLevel::Generic)
    }
}

/// Whether this CPU has `feature` (one of [`SimdLevel::cpu_features`]' names).
#[cfg(target_arch = "x86_64")]
fn cpu_has(feature: &str) -> bool {
    match feature {
        "avx2" => std::arch::is_x86_feature_detected!("avx2"),
        "fma" => std::arch::is_x86_feature_detected!("fma"),
        "f16c" => std::arch::is_x86_feature_detected!("f16c"),
        "popcnt" => std::arch::is_x86_feature_detected!("popcnt"),
        "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
        "avx512cd" => std::arch::is_x86_feature_detected!("avx512cd"),
        "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
        "avx512dq" => std::arch::is_x86_feature_detected!("avx512dq"),
        "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
        _ => false,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has(_feature: &str) -> bool {
    false
}

impl fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to run: the best available level, or one level (`auto`, `generic`, `avx2`, `avx512`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SimdChoice {
    /// The best level this binary and CPU have ([`SimdLevel::best`]).
    #[default]
    Auto,
    /// Exactly this level; an error where it is not available.
    Level(SimdLevel),
}

impl SimdChoice {
    /// The level this choice runs on this machine.
    pub fn resolve(self) -> Result<SimdLevel> {
        self.resolve_on(&cpu_has)
    }

    /// [`SimdChoice::resolve`] on a CPU that has the features for which `has` is true.
    fn resolve_on(self, has: &dyn Fn(&str) -> bool) -> Result<SimdLevel> {
        match self {
            SimdChoice::Auto => Ok(SimdLevel::ALL
                .into_iter()
                .rev()
                .find(|l| l.is_built() && l.missing_on(has).is_empty())
                .unwrap_or(SimdLevel::Generic)),
            SimdChoice::Level(level) if !level.is_built() => Err(Error::NotBuilt(level)),
            SimdChoice::Level(level) => {
                let missing = level.missing_on(has);
                if missing.is_empty() {
                    Ok(level)
                } else {
                    Err(Error::NotSupported { level, missing: missing.join(", ") })
                }
            }
        }
    }
}

impl FromStr for SimdChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<SimdChoice> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(SimdChoice::Auto),
            "generic" => Ok(SimdChoice::Level(SimdLevel::Generic)),
            "avx2" => Ok(SimdChoice::Level(SimdLevel::Avx2)),
            "avx512" => Ok(SimdChoice::Level(SimdLevel::Avx512)),
            _ => Err(Error::Unknown(s.to_string())),
        }
    }
}

impl fmt::Display for SimdChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimdChoice::Auto => f.write_str("auto"),
            SimdChoice::Level(level) => f.write_str(level.name()),
        }
    }
}

/// Why a SIMD level cannot be used.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The name is none of the levels.
    #[error("unknown faiss SIMD level {0:?}; use auto, generic, avx2 or avx512")]
    Unknown(String),
    /// The level was not compiled into this binary.
    #[error(
        "faiss SIMD level {0} is not built into this binary (built: {built}); use auto or one of those, or \
         rebuild on x86_64 without QUIVER_FAISS_SIMD_BUILD=generic",
        built = built_levels()
    )]
    NotBuilt(SimdLevel),
    /// This CPU lacks instructions the level needs.
    #[error(
        "this CPU cannot run faiss SIMD level {level}: it lacks {missing}; use auto (picks {best}) or generic",
        best = SimdLevel::best()
    )]
    NotSupported {
        /// The level asked for.
        level: SimdLevel,
        /// The missing CPU features, comma-separated.
        missing: String,
    },
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

fn built_levels() -> String {
    SimdLevel::ALL.iter().filter(|l| l.is_built()).map(|l| l.name()).collect::<Vec<_>>().join(", ")
}

/// Declares the C API functions once and, from that list, the [`FaissApi`] table and one
/// instance of it per built variant (the variants' functions carry their symbol prefix).
macro_rules! faiss_api {
    ($($name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?;)*) => {
        /// The faiss C API functions Quiver uses, as one variant's function pointers (same
        /// names and signatures as in faiss-sys). Call them only with objects this same
        /// table created.
        #[allow(non_snake_case)]
        pub struct FaissApi {
            /// The variant these functions belong to.
            pub level: SimdLevel,
            $(
                #[doc = concat!("`", stringify!($name), "` of this variant.")]
                pub $name: unsafe extern "C" fn($($ty),*) $(-> $ret)?,
            )*
        }

        static GENERIC: FaissApi = FaissApi { level: SimdLevel::Generic, $($name: faiss_sys::$name,)* };

        #[cfg(quiver_faiss_avx2)]
        mod avx2 {
            use super::*;
            extern "C" {
                $(
                    #[link_name = concat!("qv_avx2_", stringify!($name))]
                    pub(super) fn $name($($arg: $ty),*) $(-> $ret)?;
                )*
            }
        }
        #[cfg(quiver_faiss_avx2)]
        static AVX2: FaissApi = FaissApi { level: SimdLevel::Avx2, $($name: avx2::$name,)* };

        #[cfg(quiver_faiss_avx512)]
        mod avx512 {
            use super::*;
            extern "C" {
                $(
                    #[link_name = concat!("qv_avx512_", stringify!($name))]
                    pub(super) fn $name($($arg: $ty),*) $(-> $ret)?;
                )*
            }
        }
        #[cfg(quiver_faiss_avx512)]
        static AVX512: FaissApi = FaissApi { level: SimdLevel::Avx512, $($name: avx512::$name,)* };
    };
}

faiss_api! {
    faiss_get_last_error() -> *const c_char;
    faiss_index_factory(p_index: *mut *mut FaissIndex, d: c_int, description: *const c_char, metric: FaissMetricType) -> c_int;
    faiss_Index_free(obj: *mut FaissIndex);
    faiss_Index_d(index: *const FaissIndex) -> c_int;
    faiss_Index_ntotal(index: *const FaissIndex) -> idx_t;
    faiss_Index_metric_type(index: *const FaissIndex) -> FaissMetricType;
    faiss_Index_is_trained(index: *const FaissIndex) -> c_int;
    faiss_IndexIVF_cast(index: *mut FaissIndex) -> *mut FaissIndexIVF;
    faiss_Index_train(index: *mut FaissIndex, n: idx_t, x: *const f32) -> c_int;
    faiss_Index_add(index: *mut FaissIndex, n: idx_t, x: *const f32) -> c_int;
    faiss_Index_search(index: *const FaissIndex, n: idx_t, x: *const f32, k: idx_t, distances: *mut f32, labels: *mut idx_t) -> c_int;
    faiss_Index_search_with_params(index: *const FaissIndex, n: idx_t, x: *const f32, k: idx_t, params: *const FaissSearchParameters, distances: *mut f32, labels: *mut idx_t) -> c_int;
    faiss_ParameterSpace_new(space: *mut *mut FaissParameterSpace) -> c_int;
    faiss_ParameterSpace_free(obj: *mut FaissParameterSpace);
    faiss_ParameterSpace_set_index_parameter(space: *const FaissParameterSpace, index: *mut FaissIndex, name: *const c_char, value: f64) -> c_int;
    faiss_write_index(index: *const FaissIndex, f: *mut FILE) -> c_int;
    faiss_read_index(f: *mut FILE, io_flags: c_int, p_out: *mut *mut FaissIndex) -> c_int;
    faiss_SearchParametersIVF_new_with(p_sp: *mut *mut FaissSearchParametersIVF, sel: *mut FaissIDSelector, nprobe: usize, max_codes: usize) -> c_int;
    faiss_SearchParametersIVF_free(obj: *mut FaissSearchParametersIVF);
    faiss_SearchParameters_new(p_sp: *mut *mut FaissSearchParameters, sel: *mut FaissIDSelector) -> c_int;
    faiss_SearchParameters_free(obj: *mut FaissSearchParameters);
    faiss_IDSelectorBitmap_new(p_sel: *mut *mut FaissIDSelectorBitmap, n: usize, bitmap: *const u8) -> c_int;
    faiss_IDSelectorBitmap_free(obj: *mut FaissIDSelectorBitmap);
}

impl fmt::Debug for FaissApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaissApi").field("level", &self.level).finish_non_exhaustive()
    }
}

/// The table of `level`, after checking that this binary has it and this CPU can run it.
pub fn api(level: SimdLevel) -> Result<&'static FaissApi> {
    SimdChoice::Level(level).resolve()?;
    match level {
        SimdLevel::Generic => Ok(&GENERIC),
        #[cfg(quiver_faiss_avx2)]
        SimdLevel::Avx2 => Ok(&AVX2),
        #[cfg(quiver_faiss_avx512)]
        SimdLevel::Avx512 => Ok(&AVX512),
        #[allow(unreachable_patterns)]
        other => Err(Error::NotBuilt(other)),
    }
}

/// 0 = not chosen yet; otherwise 1 + the index of the level in [`SimdLevel::ALL`].
static DEFAULT_LEVEL: AtomicU8 = AtomicU8::new(0);

/// Makes `choice` the process-wide default for new faiss objects and returns the level it
/// resolved to. Objects created before keep their variant.
pub fn set_default(choice: SimdChoice) -> Result<SimdLevel> {
    let level = choice.resolve()?;
    DEFAULT_LEVEL.store(encode(level), Ordering::Relaxed);
    Ok(level)
}

/// The process-wide default table: the level [`set_default`] chose, else the best available.
pub fn default_api() -> &'static FaissApi {
    let level = match DEFAULT_LEVEL.load(Ordering::Relaxed) {
        0 => SimdLevel::best(),
        n => SimdLevel::ALL.get(usize::from(n - 1)).copied().unwrap_or(SimdLevel::Generic),
    };
    api(level).unwrap_or(&GENERIC)
}

/// The level of [`default_api`].
pub fn default_level() -> SimdLevel {
    default_api().level
}

fn encode(level: SimdLevel) -> u8 {
    match level {
        SimdLevel::Generic => 1,
        SimdLevel::Avx2 => 2,
        SimdLevel::Avx512 => 3,
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for level in SimdLevel::ALL {
            assert_eq!(level.name().parse::<SimdChoice>(), Ok(SimdChoice::Level(level)));
        }
        assert_eq!("AUTO".parse::<SimdChoice>(), Ok(SimdChoice::Auto));
        assert!(matches!("sse9".parse::<SimdChoice>(), Err(Error::Unknown(_))));
    }

    #[test]
    fn generic_is_always_available() {
        assert!(SimdLevel::Generic.is_available());
        assert_eq!(api(SimdLevel::Generic).map(|a| a.level), Ok(SimdLevel::Generic));
    }

    #[test]
    fn unavailable_levels_are_refused_with_the_reason() {
        for level in SimdLevel::ALL {
            match api(level) {
                Ok(a) => assert!(level.is_available() && a.level == level),
                Err(Error::NotBuilt(l)) => assert!(l == level && !level.is_built()),
                Err(Error::NotSupported { level: l, missing }) => {
                    assert!(l == level && !missing.is_empty());
                    assert!(Error::NotSupported { level: l, missing }.to_string().contains("lacks"));
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }

    #[test]
    fn a_cpu_without_the_instructions_is_refused_by_name() {
        let avx2_only = |f: &str| !f.starts_with("avx512");
        let refused = SimdChoice::Level(SimdLevel::Avx512).resolve_on(&avx2_only);
        if SimdLevel::Avx512.is_built() {
            let Err(e @ Error::NotSupported { .. }) = refused else { panic!("{refused:?}") };
            let text = e.to_string();
            assert!(text.contains("avx512f") && text.contains("use auto"), "{text}");
            let auto = SimdChoice::Auto.resolve_on(&avx2_only);
            assert_eq!(auto, Ok(if SimdLevel::Avx2.is_built() { SimdLevel::Avx2 } else { SimdLevel::Generic }));
        } else {
            assert_eq!(refused, Err(Error::NotBuilt(SimdLevel::Avx512)));
        }
        let bare = |_: &str| false;
        assert_eq!(SimdChoice::Auto.resolve_on(&bare), Ok(SimdLevel::Generic));
        assert_eq!(SimdChoice::Level(SimdLevel::Generic).resolve_on(&bare), Ok(SimdLevel::Generic));
        assert!(SimdChoice::Level(SimdLevel::Avx2).resolve_on(&bare).is_err());
    }

    #[test]
    fn best_is_available() {
        assert!(SimdLevel::best().is_available());
        assert_eq!(SimdChoice::Auto.resolve(), Ok(SimdLevel::best()));
    }
}
