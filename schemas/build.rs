//! Generates the Cap'n Proto bindings for `quiver.capnp` into `$OUT_DIR/quiver_capnp.rs`.
//! Needs the `capnp` tool (Cap'n Proto ≥ 0.9) on `PATH`.

fn main() {
    println!("cargo:rerun-if-changed=quiver.capnp");
    if let Err(e) = capnpc::CompilerCommand::new().file("quiver.capnp").run() {
        eprintln!("error: compiling quiver.capnp failed: {e}");
        std::process::exit(1);
    }
}
