//! Compiles the protocol (proto/umadb.proto) into the server's and the tests' gRPC code, with
//! the protoc that protoc-bin-vendored ships: no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts run single-threaded; tonic-prost-build reads PROTOC.
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/umadb.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto/umadb.proto");
    Ok(())
}
