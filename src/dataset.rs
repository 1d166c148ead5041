//! Readers for the TEXMEX `.fvecs` / `.ivecs` formats (SIFT, ann-benchmarks, shared datasets).

use std::path::Path;

use anyhow::{bail, Context};

/// Vectors of a `.fvecs` file: `(dim, rows × dim floats)`, at most `limit` rows.
pub fn read_fvecs(path: &Path, limit: usize) -> anyhow::Result<(usize, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (dim, rows) = read_vecs(&bytes, limit, path)?;
    Ok((dim, rows.into_iter().map(f32::from_bits).collect()))
}

/// Rows of a `.ivecs` file (ground truth ids).
pub fn read_ivecs(path: &Path, limit: usize) -> anyhow::Result<(usize, Vec<i32>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (dim, rows) = read_vecs(&bytes, limit, path)?;
    Ok((dim, rows.into_iter().map(|v| v as i32).collect()))
}

fn read_vecs(bytes: &[u8], limit: usize, path: &Path) -> anyhow::Result<(usize, Vec<u32>)> {
    if bytes.len() < 4 {
        bail!("{} is empty or not a .fvecs/.ivecs file", path.display());
    }
    let dim = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if dim == 0 || dim > 65_536 {
        bail!("{}: implausible dimension {dim}; is it really .fvecs/.ivecs?", path.display());
    }
    let row = 4 + dim * 4;
    if !bytes.len().is_multiple_of(row) {
        bail!("{}: size {} is not a multiple of the row size {row}", path.display(), bytes.len());
    }
    let n = (bytes.len() / row).min(limit);
    let mut out = Vec::with_capacity(n * dim);
    for r in 0..n {
        let chunk = &bytes[r * row..(r + 1) * row];
        if u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as usize != dim {
            bail!("{}: row {r} has a different dimension", path.display());
        }
        out.extend(chunk[4..].chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
    }
    Ok((dim, out))
}
