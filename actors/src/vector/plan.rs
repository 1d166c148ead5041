//! Turning [`IndexParams`] into a concrete faiss build for a segment of a given size, and the
//! small header stored in front of serialised faiss indexes.

use super::{IndexParams, IndexType, MetricType, Result, VectorError};

/// IVF lists when `nlist` is 0.
pub const DEFAULT_NLIST: usize = 128;
/// IVF_PQ sub-quantizers when `m` is 0 (or the largest divisor of `dim` not above it).
pub const DEFAULT_PQ_M: usize = 8;
/// IVF_PQ bits per code when `nbits` is 0.
pub const DEFAULT_NBITS: usize = 8;
/// HNSW graph degree when `m` is 0.
pub const DEFAULT_HNSW_M: usize = 16;
/// HNSW efConstruction when `ef_construction` is 0.
pub const DEFAULT_EF_CONSTRUCTION: usize = 200;
/// Training points k-means wants per centroid; nlist is clamped to `n / 39`.
pub const MIN_POINTS_PER_CENTROID: usize = 39;
/// Largest PQ code size faiss' IVF_PQ handles well.
const MAX_NBITS: usize = 16;

/// The concrete index to build, after defaults, clamping and fallbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BuildPlan {
    /// The index type actually built (IVF_PQ may fall back to IVF_FLAT, IVF_* to FLAT).
    pub kind: IndexType,
    pub nlist: usize,
    /// PQ sub-quantizers (IVF_PQ) or graph degree M (HNSW); 0 otherwise.
    pub m: usize,
    pub nbits: usize,
    pub ef_construction: usize,
}

fn or_default(v: u32, default: usize) -> usize {
    if v == 0 {
        default
    } else {
        v as usize
    }
}

/// Largest divisor of `dim` that is at most [`DEFAULT_PQ_M`].
fn default_pq_m(dim: usize) -> usize {
    (1..=DEFAULT_PQ_M.min(dim)).rev().find(|&m| dim.checked_rem(m) == Some(0)).unwrap_or(1)
}

impl BuildPlan {
    /// Chooses the build for `n` vectors of `dim` floats.
    ///
    /// Errors for parameters that can never work (`dim % m != 0`, `nbits > 16`, HNSW `m == 1`);
    /// falls back with a warning when the segment is too small to train the requested type.
    pub(crate) fn new(params: &IndexParams, dim: usize, n: usize) -> Result<Self> {
        let mut plan = BuildPlan { kind: params.index_type, nlist: 0, m: 0, nbits: 0, ef_construction: 0 };
        match params.index_type {
            IndexType::Flat => {}
            IndexType::Hnsw => {
                plan.m = or_default(params.m, DEFAULT_HNSW_M);
                if plan.m < 2 || plan.m > 2048 {
                    return Err(VectorError::InvalidParams(format!(
                        "HNSW m (graph degree M) = {} is out of range; use 2..=2048 (typical 8..64) or 0 for the default {DEFAULT_HNSW_M}",
                        plan.m
                    )));
                }
                plan.ef_construction = or_default(params.ef_construction, DEFAULT_EF_CONSTRUCTION);
            }
            IndexType::IvfFlat | IndexType::IvfSq8 | IndexType::IvfPq => {
                if params.index_type == IndexType::IvfPq {
                    plan.m = or_default(params.m, default_pq_m(dim));
                    plan.nbits = or_default(params.nbits, DEFAULT_NBITS);
                    if dim.checked_rem(plan.m) != Some(0) {
                        return Err(VectorError::InvalidParams(format!(
                            "IVF_PQ m = {} does not divide the vector dim {dim}; choose m among the divisors of {dim} (or 0 for a default)",
                            plan.m
                        )));
                    }
                    if plan.nbits > MAX_NBITS {
                        return Err(VectorError::InvalidParams(format!(
                            "IVF_PQ nbits = {} is too large; use 1..={MAX_NBITS} (typically 8) or 0 for the default {DEFAULT_NBITS}",
                            plan.nbits
                        )));
                    }
                    let needed = 1usize << plan.nbits;
                    if n < needed {
                        tracing::warn!(
                            rows = n,
                            needed,
                            nbits = plan.nbits,
                            "segment too small to train IVF_PQ (needs 2^nbits rows); building IVF_FLAT instead"
                        );
                        plan.kind = IndexType::IvfFlat;
                        plan.m = 0;
                        plan.nbits = 0;
                    }
                }
                if n == 0 {
                    tracing::warn!("empty segment cannot train an IVF index; building FLAT instead");
                    plan.kind = IndexType::Flat;
                    plan.m = 0;
                    plan.nbits = 0;
                    return Ok(plan);
                }
                let requested = or_default(params.nlist, DEFAULT_NLIST);
                plan.nlist = requested.min((n / MIN_POINTS_PER_CENTROID).max(1));
                if plan.nlist < requested {
                    tracing::debug!(rows = n, requested, nlist = plan.nlist, "clamped IVF nlist for a small segment");
                }
            }
        }
        Ok(plan)
    }

    /// The `faiss::index_factory` description.
    pub(crate) fn factory_string(&self) -> String {
        match self.kind {
            IndexType::Flat => "Flat".into(),
            IndexType::IvfFlat => format!("IVF{},Flat", self.nlist),
            IndexType::IvfSq8 => format!("IVF{},SQ8", self.nlist),
            // "np": skip polysemous training (slow simulated annealing; only polysemous
            // Hamming search uses it, which Quiver never enables).
            IndexType::IvfPq => format!("IVF{},PQ{}x{}np", self.nlist, self.m, self.nbits),
            IndexType::Hnsw => format!("HNSW{}", self.m),
        }
    }

    /// Approximate resident bytes of the built index holding `n` vectors of `dim` floats.
    pub(crate) fn mem_bytes(&self, metric: MetricType, dim: usize, n: usize) -> u64 {
        let (d, n) = (dim as u64, n as u64);
        let centroids = self.nlist as u64 * d * 4;
        let id = 8; // IVF lists store one i64 id per vector
        let bytes = match self.kind {
            IndexType::Flat => n * d * 4,
            IndexType::IvfFlat => n * (d * 4 + id) + centroids,
            IndexType::IvfSq8 => n * (d + id) + centroids + 2 * d * 4,
            IndexType::IvfPq => {
                let ksub = 1u64 << self.nbits;
                let code = (self.m as u64 * self.nbits as u64).div_ceil(8);
                // L2 with residuals keeps a precomputed table of nlist * m * ksub floats.
                let table = if metric == MetricType::L2 { self.nlist as u64 * self.m as u64 * ksub * 4 } else { 0 };
                n * (code + id) + centroids + ksub * d * 4 + table
            }
            // Vectors, 2*M level-0 links, ~1 upper-level link, level + offset bookkeeping.
            IndexType::Hnsw => n * (d * 4 + (2 * self.m as u64 + 1) * 4 + 16),
        };
        bytes + 1024
    }
}

/// Magic at the start of [`super::VectorIndex::to_bytes`] output.
const MAGIC: &[u8; 4] = b"QVIX";
/// The format written: header, checksum, faiss payload.
const VERSION: u8 = 2;
/// The format written before the checksum existed (header, faiss payload); still read.
const VERSION_UNCHECKED: u8 = 1;
/// Header size in bytes.
pub(crate) const HEADER_LEN: usize = 24;
/// Size of the checksum that follows the header (version 2 on): the first bytes of SHA-256
/// over the header and the faiss payload. faiss' reader trusts its input (a damaged HNSW graph
/// or list size loads, then reads out of bounds when searched), so nothing reaches it unless
/// the checksum matches.
pub(crate) const CHECKSUM_LEN: usize = 8;

/// The checksum of an index object with this `header` and faiss `payload`.
pub(crate) fn checksum(header: &[u8], payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new().chain_update(header).chain_update(payload).finalize();
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&digest[..CHECKSUM_LEN]);
    out
}

/// Splits an index object into its header and its faiss payload, checking the checksum
/// (objects of version 1, written before it existed, are passed on unchecked).
pub(crate) fn split_object(bytes: &[u8]) -> Result<(Header, &[u8])> {
    let header = Header::decode(bytes)?;
    let (fixed, rest) = bytes.split_at(HEADER_LEN);
    if fixed[4] == VERSION_UNCHECKED {
        return Ok((header, rest));
    }
    let Some((stored, payload)) = rest.split_first_chunk::<CHECKSUM_LEN>() else {
        return Err(VectorError::Corrupt("the index object ends inside its checksum; the data is truncated".into()));
    };
    if *stored != checksum(fixed, payload) {
        return Err(VectorError::Corrupt(
            "the index object's checksum does not match its contents: the data is damaged or truncated; rebuild \
             the index (drop_index, then create_index)"
                .into(),
        ));
    }
    Ok((header, payload))
}

/// What faiss' own file does not record: the Quiver metric (COSINE vs IP), the built type
/// and the parameters used for memory estimates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub metric: MetricType,
    pub plan: BuildPlan,
    pub dim: usize,
}

fn metric_code(m: MetricType) -> u8 {
    match m {
        MetricType::L2 => 0,
        MetricType::Ip => 1,
        MetricType::Cosine => 2,
    }
}

fn kind_code(k: IndexType) -> u8 {
    match k {
        IndexType::Flat => 0,
        IndexType::IvfFlat => 1,
        IndexType::IvfSq8 => 2,
        IndexType::IvfPq => 3,
        IndexType::Hnsw => 4,
    }
}

fn u32_field(name: &str, v: usize) -> Result<[u8; 4]> {
    u32::try_from(v)
        .map(u32::to_le_bytes)
        .map_err(|_| VectorError::InvalidParams(format!("{name} = {v} does not fit the index header")))
}

impl Header {
    pub(crate) fn encode(&self) -> Result<[u8; HEADER_LEN]> {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(MAGIC);
        h[4] = VERSION;
        h[5] = metric_code(self.metric);
        h[6] = kind_code(self.plan.kind);
        h[7] = 0;
        h[8..12].copy_from_slice(&u32_field("dim", self.dim)?);
        h[12..16].copy_from_slice(&u32_field("nlist", self.plan.nlist)?);
        h[16..20].copy_from_slice(&u32_field("m", self.plan.m)?);
        // nbits and efConstruction are both small; pack them in one word.
        let packed = u32_field("nbits", self.plan.nbits)?[0] as u32
            | (u32::try_from(self.plan.ef_construction.min(0xFF_FFFF)).unwrap_or(0) << 8);
        h[20..24].copy_from_slice(&packed.to_le_bytes());
        Ok(h)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Header> {
        let h = bytes.get(..HEADER_LEN).ok_or_else(|| {
            VectorError::Corrupt(format!(
                "{} bytes is shorter than the {HEADER_LEN}-byte index header; the data is truncated",
                bytes.len()
            ))
        })?;
        if &h[0..4] != MAGIC {
            return Err(VectorError::Corrupt(
                "missing QVIX magic; these bytes were not produced by VectorIndex::to_bytes".into(),
            ));
        }
        if h[4] != VERSION && h[4] != VERSION_UNCHECKED {
            return Err(VectorError::Corrupt(format!(
                "index format version {} is not supported (expected {VERSION}); rebuild the index",
                h[4]
            )));
        }
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]) as usize;
        let metric = match h[5] {
            0 => MetricType::L2,
            1 => MetricType::Ip,
            2 => MetricType::Cosine,
            c => return Err(VectorError::Corrupt(format!("unknown metric code {c} in index header"))),
        };
        let kind = match h[6] {
            0 => IndexType::Flat,
            1 => IndexType::IvfFlat,
            2 => IndexType::IvfSq8,
            3 => IndexType::IvfPq,
            4 => IndexType::Hnsw,
            c => return Err(VectorError::Corrupt(format!("unknown index type code {c} in index header"))),
        };
        let packed = word(20);
        let plan = BuildPlan { kind, nlist: word(12), m: word(16), nbits: packed & 0xFF, ef_construction: packed >> 8 };
        Ok(Header { metric, plan, dim: word(8) })
    }
}
