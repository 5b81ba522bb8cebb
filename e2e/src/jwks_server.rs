//! A JWKS endpoint for the authz tests: serves a JSON Web Key Set the test can swap
//! (key rotation), can be told to answer 503, to hold its answers until released (a
//! slow or hung issuer) or be stopped (connection refused), and counts the fetches
//! that reached it. Built on [`RecordingUpstream`], so it runs on a
//! kernel-chosen port of 127.0.0.1 and every fetch is recorded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::upstream::{RecordedRequest, RecordingUpstream, Reply};

struct State {
    document: Mutex<String>,
    failing: AtomicBool,
    stopped: AtomicBool,
    /// Every request that reached the server, kept here rather than in the upstream so
    /// requests on connections that outlive `stop` are counted too.
    requests: Mutex<Vec<RecordedRequest>>,
    /// While true, answers wait (at most [`MAX_HOLD`]) until [`JwksServer::release`].
    held: Mutex<bool>,
    released: Condvar,
}

/// A held answer is sent anyway after this long, so no server thread lingers.
const MAX_HOLD: Duration = Duration::from_secs(30);

impl State {
    fn wait_while_held(&self) {
        let Ok(held) = self.held.lock() else { return };
        let _ = self
            .released
            .wait_timeout_while(held, MAX_HOLD, |held| *held);
    }
}

pub struct JwksServer {
    state: Arc<State>,
    port: u16,
    /// `None` once stopped.
    upstream: Mutex<Option<RecordingUpstream>>,
}

impl JwksServer {
    /// Serves `document` (a JWKS JSON text) with 200 to every request.
    pub fn start(document: &str) -> Result<Self, String> {
        let state = Arc::new(State {
            document: Mutex::new(document.to_owned()),
            failing: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
            held: Mutex::new(false),
            released: Condvar::new(),
        });
        let handler_state = state.clone();
        let upstream = RecordingUpstream::start_with(
            "127.0.0.1:0",
            Arc::new(move |request: &RecordedRequest| {
                if let Ok(mut requests) = handler_state.requests.lock() {
                    requests.push(request.clone());
                }
                handler_state.wait_while_held();
                if handler_state.stopped.load(Ordering::SeqCst) {
                    // A kept-alive connection outlives the listener: drop it unanswered.
                    return Reply::reset();
                }
                if handler_state.failing.load(Ordering::SeqCst) {
                    return Reply {
                        status: 503,
                        headers: vec![("content-type".into(), "text/plain".into())],
                        body: b"jwks test server: failing on purpose".to_vec(),
                    };
                }
                let document = handler_state
                    .document
                    .lock()
                    .map(|d| d.clone())
                    .unwrap_or_default();
                Reply {
                    status: 200,
                    headers: vec![
                        ("content-type".into(), "application/json".into()),
                        ("cache-control".into(), "max-age=300".into()),
                    ],
                    body: document.into_bytes(),
                }
            }),
        )?;
        Ok(Self {
            state,
            port: upstream.port(),
            upstream: Mutex::new(Some(upstream)),
        })
    }

    /// The port Envoy's JWKS cluster points at (refused after `stop`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves `document` from now on (key rotation).
    pub fn set_document(&self, document: &str) {
        if let Ok(mut current) = self.state.document.lock() {
            *current = document.to_owned();
        }
    }

    /// Answers 503 from now on (`false`: back to serving the document).
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Holds every answer (including those already waiting) until [`JwksServer::release`]:
    /// fetches reach the server and are counted, but Envoy sees no response.
    pub fn hold(&self) {
        if let Ok(mut held) = self.state.held.lock() {
            *held = true;
        }
    }

    /// Sends the held answers and answers at once from now on.
    pub fn release(&self) {
        if let Ok(mut held) = self.state.held.lock() {
            *held = false;
        }
        self.state.released.notify_all();
    }

    /// Closes the listening socket (new connections are refused) and resets kept-alive
    /// connections on their next request. Fetches recorded so far stay counted.
    pub fn stop(&self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.release();
        let upstream = self.upstream.lock().ok().and_then(|mut u| u.take());
        drop(upstream);
    }

    /// Every request that reached the server (answered, failed or reset), in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// How many fetches reached the server so far.
    pub fn fetches(&self) -> usize {
        self.requests().len()
    }

    /// Polls every 20 ms until at least `count` fetches arrived; true when they did.
    pub fn wait_for_fetches(&self, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.fetches() >= count {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        // Held connection threads must not outlive the test by `MAX_HOLD`.
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Request;

    #[test]
    fn serves_swaps_fails_holds_and_stops() {
        let server = JwksServer::start(r#"{"keys":[]}"#).unwrap();
        let get = || Request::get("/jwks").send(server.port());
        assert_eq!(get().unwrap().body_text(), r#"{"keys":[]}"#);
        server.set_document(r#"{"keys":[{"kid":"b"}]}"#);
        assert_eq!(get().unwrap().body_text(), r#"{"keys":[{"kid":"b"}]}"#);
        server.set_failing(true);
        assert_eq!(get().unwrap().status, 503);
        server.set_failing(false);

        server.hold();
        let port = server.port();
        let pending = std::thread::spawn(move || Request::get("/jwks").send(port));
        assert!(server.wait_for_fetches(4, Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!pending.is_finished(), "held answers wait");
        server.release();
        assert_eq!(pending.join().unwrap().unwrap().status, 200);

        server.stop();
        assert!(get().is_err(), "a stopped server refuses connections");
        assert_eq!(server.fetches(), 4, "refused connections are not fetches");
        assert!(server.requests().iter().all(|r| r.path == "/jwks"));
    }
}
