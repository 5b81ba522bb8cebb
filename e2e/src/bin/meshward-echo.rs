//! The demo upstream: answers every request with a JSON echo of what it received.
//! `meshward-echo [ADDRESS]` (default 127.0.0.1:18080).

fn main() {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18080".to_string());
    match meshward_e2e::RecordingUpstream::start_on(&address) {
        Ok(upstream) => {
            eprintln!("meshward-echo listening on 127.0.0.1:{}", upstream.port());
            upstream.wait();
        }
        Err(err) => {
            eprintln!("meshward-echo: {err}");
            std::process::exit(1);
        }
    }
}
