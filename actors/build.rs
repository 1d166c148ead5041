//! Compiles the Milvus API subset (`schemas/proto/milvus`) into Rust with prost + tonic. The
//! `.proto` files are parsed by protox (pure Rust), so no `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../schemas/proto/milvus");
    let files = ["common.proto", "schema.proto", "msg.proto", "milvus.proto"].map(|f| dir.join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let descriptors = protox::compile(&files, [&dir])?;
    // The client is for black-box tests (tests/it/hostile.rs); without transport helpers,
    // because Milvus' own `Connect` RPC would clash with the generated `connect` constructor.
    tonic_prost_build::configure()
        .build_client(true)
        .build_transport(false)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
