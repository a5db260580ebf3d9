//! Compiles Joompay's proto (the connector's own copy, as a TPP and Joompay
//! would share one) into the gRPC servers of the simulation, with protox:
//! no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = "../../providers/connectors/joompay/proto";
    let proto = format!("{dir}/joompay_openbanking.proto");
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto.as_str()], [dir])?;
    tonic_prost_build::configure()
        .build_client(false)
        .compile_fds(descriptors)?;
    Ok(())
}
