//! `quiver bench` (written below).
use clap::Args;

#[derive(Args)]
pub struct BenchArgs {}

pub fn bench(_args: BenchArgs) -> anyhow::Result<i32> {
    anyhow::bail!("not yet")
}
