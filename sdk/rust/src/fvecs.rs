//! Readers for the TEXMEX `.fvecs` / `.ivecs` files (SIFT-1M, ann-benchmarks, the shared
//! pypi-minilm dataset): each row is a little-endian `i32` dimension followed by that many
//! `f32` (fvecs) or `i32` (ivecs) values.
//!
//! They live in the SDK because everything that feeds vectors from such files into Quiver links
//! the SDK already: `quiver load` / `quiver search`, the benchmarks (`quiver-bench`) and the
//! test kit (`quiver-testkit`). One reader serves all three, and the product does not depend on
//! test support to get it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// A first field above this is not a dimension: the file is not `.fvecs` / `.ivecs`.
const MAX_DIM: usize = 65_536;

/// The vectors of a `.fvecs` file: `(dim, rows × dim floats)`, at most `limit` rows (only
/// those are read).
pub fn read_fvecs(path: &Path, limit: usize) -> io::Result<(usize, Vec<f32>)> {
    let (dim, values) = read_vecs(path, limit)?;
    Ok((dim, values.into_iter().map(f32::from_bits).collect()))
}

/// The rows of a `.ivecs` file (ground-truth ids): `(dim, rows × dim ints)`, at most `limit` rows.
pub fn read_ivecs(path: &Path, limit: usize) -> io::Result<(usize, Vec<i32>)> {
    let (dim, values) = read_vecs(path, limit)?;
    Ok((dim, values.into_iter().map(|v| v as i32).collect()))
}

/// The number of rows of a `.fvecs` / `.ivecs` file, from its size and its first dimension
/// field (the rows are not read).
pub fn count_rows(path: &Path) -> io::Result<usize> {
    let (_, dim, len) = open(path)?;
    Ok(len / row_bytes(dim))
}

fn row_bytes(dim: usize) -> usize {
    4 + dim * 4
}

fn invalid(text: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, text)
}

/// The open file (at its start), its dimension and its size, checked to be whole rows.
fn open(path: &Path) -> io::Result<(File, usize, usize)> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()));
    let mut file = File::open(path).map_err(context)?;
    let len = usize::try_from(file.metadata().map_err(context)?.len())
        .map_err(|_| invalid(format!("{} is too large for this machine", path.display())))?;
    if len < 4 {
        return Err(invalid(format!("{} is empty or not a .fvecs/.ivecs file", path.display())));
    }
    let mut head = [0u8; 4];
    file.read_exact(&mut head).map_err(context)?;
    file.seek(SeekFrom::Start(0)).map_err(context)?;
    let dim = u32::from_le_bytes(head) as usize;
    if dim == 0 || dim > MAX_DIM {
        return Err(invalid(format!("{}: implausible dimension {dim}; is it really .fvecs/.ivecs?", path.display())));
    }
    let row = row_bytes(dim);
    if !len.is_multiple_of(row) {
        return Err(invalid(format!("{}: size {len} is not a multiple of the row size {row}", path.display())));
    }
    Ok((file, dim, len))
}

/// The first `limit` rows as raw little-endian words, every row's dimension checked.
fn read_vecs(path: &Path, limit: usize) -> io::Result<(usize, Vec<u32>)> {
    let (mut file, dim, len) = open(path)?;
    let row = row_bytes(dim);
    let n = (len / row).min(limit);
    let mut bytes = vec![0u8; n * row];
    file.read_exact(&mut bytes)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))?;
    let mut out = Vec::with_capacity(n * dim);
    for (r, chunk) in bytes.chunks_exact(row).enumerate() {
        let (head, values) = chunk.split_at(4);
        if u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize != dim {
            return Err(invalid(format!("{}: row {r} has a different dimension", path.display())));
        }
        out.extend(values.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
    }
    Ok((dim, out))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file(rows: &[&[f32]]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for r in rows {
            f.write_all(&(r.len() as u32).to_le_bytes()).unwrap();
            for v in *r {
                f.write_all(&v.to_le_bytes()).unwrap();
            }
        }
        f
    }

    #[test]
    fn reads_at_most_limit_rows_and_counts_them_all() {
        let f = file(&[&[1.0, 2.0], &[3.0, 4.0], &[5.0, 6.0]]);
        assert_eq!(count_rows(f.path()).unwrap(), 3);
        assert_eq!(read_fvecs(f.path(), 2).unwrap(), (2, vec![1.0, 2.0, 3.0, 4.0]));
        assert_eq!(read_fvecs(f.path(), usize::MAX).unwrap().1.len(), 6);
    }

    #[test]
    fn damaged_files_say_what_is_wrong() {
        let err = |f: &tempfile::NamedTempFile| read_fvecs(f.path(), usize::MAX).unwrap_err().to_string();
        assert!(err(&file(&[&[1.0, 2.0], &[3.0]])).contains("not a multiple of the row size"));
        assert!(err(&file(&[])).contains("empty or not a .fvecs/.ivecs file"));
        assert!(err(&file(&[&[1.0, 2.0], &[3.0], &[]])).contains("row 1 has a different dimension"));
        let missing = read_fvecs(Path::new("/nonexistent/x.fvecs"), 1).unwrap_err().to_string();
        assert!(missing.contains("cannot read /nonexistent/x.fvecs"), "{missing}");
    }
}
