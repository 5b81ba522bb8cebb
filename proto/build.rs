//! Compiles `meshward/**/*.proto` with protox (pure Rust), then generates prost messages
//! and tonic client/server stubs from the descriptors.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "meshward/tuning/v1/tuning.proto",
        "meshward/idempotency/v1/store.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
