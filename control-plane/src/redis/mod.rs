//! The Redis/Valkey layer shared by the rate-limit service and the idempotency store
//! (docs/adr/0009): one handle, cheap to clone, over either a single node or a Redis
//! Cluster, with every command bounded by one timeout and timed in the metrics.
//!
//! - Single node (`redis://`, `rediss://`, `unix://`): redis-rs `ConnectionManager`,
//!   one multiplexed connection, reconnected in the background after an I/O error.
//!   Created lazily: the control plane starts while Redis is down and its commands fail
//!   (as [`RedisError`]) until Redis is reachable.
//! - Cluster (`redis+cluster://host:port[,host:port...]`, `rediss+cluster://` for TLS):
//!   redis-rs `cluster_async` (one multiplexed connection per node, slot map refreshed
//!   on `MOVED`). Discovery runs in a background task started by [`Redis::connect`], each
//!   attempt bounded by 5 s and retried with backoff until it succeeds; a command waits
//!   for it only within its own timeout (failing meanwhile, `UNAVAILABLE`), so a slow
//!   discovery is never cancelled by short command timeouts.
//!   Keys of one script must share a hash tag (`{...}`), as they do for every Meshward key.
//!
//! ```ignore
//! let redis = Redis::connect("redis://127.0.0.1:6379", Duration::from_millis(50))
//!     .await?
//!     .with_metrics(world.metrics.redis.clone());
//! static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new("return redis.call('INCR', KEYS[1])"));
//! let n: i64 = redis.invoke("store_reserve", SCRIPT.key("mw:k")).await?;
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::{Cmd, FromRedisValue, IntoConnectionInfo, Script, ScriptInvocation, ToRedisArgs};
use tokio::sync::watch;

use crate::metrics::{OpLabels, RedisMetrics};

/// Default for `--redis-timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// A connected (or connecting) Redis/Valkey. Clones share the connection(s).
#[derive(Clone)]
pub struct Redis {
    connection: Connection,
    timeout: Duration,
    metrics: RedisMetrics,
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(LazyCluster),
}

/// The cluster connection once the background task has it (`None` until then). The
/// task ends once connected, or when every handle is gone.
#[derive(Clone)]
struct LazyCluster {
    connection: watch::Receiver<Option<ClusterConnection>>,
}

/// Why a command did not answer. Either way the caller must not guess: the gRPC
/// services answer `UNAVAILABLE` (`From<RedisError> for tonic::Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisError {
    /// No answer within the timeout (connecting included).
    Timeout(Duration),
    /// Connection refused or lost, or an error reply.
    Failed(String),
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisError::Timeout(after) => write!(f, "Redis did not answer within {after:?}"),
            RedisError::Failed(message) => write!(f, "Redis: {message}"),
        }
    }
}

impl std::error::Error for RedisError {}

impl From<RedisError> for tonic::Status {
    fn from(error: RedisError) -> Self {
        tonic::Status::unavailable(error.to_string())
    }
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("cluster", &self.is_cluster())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// How long one connection attempt may take (the command's own timeout still bounds
/// what a caller waits; this only keeps a dead address from holding a socket).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one cluster discovery (connecting to the seeds, reading the slot map) may
/// take; it runs in the background, not within a command's timeout.
const CLUSTER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Backoff between failed cluster discoveries.
const CLUSTER_RETRY_MIN: Duration = Duration::from_millis(100);
const CLUSTER_RETRY_MAX: Duration = Duration::from_secs(5);

/// Small requests answered at once: no Nagle delay behind a pending reply.
fn tcp_settings() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

impl Redis {
    /// Parses `url` and prepares the connection; does not wait for Redis (a down Redis
    /// is an error per command, not at start). Errors: a malformed URL.
    ///
    /// `timeout` bounds every command, from the call until the answer, including
    /// (re)connecting.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Redis, String> {
        if timeout.is_zero() {
            return Err("the Redis timeout must be greater than zero".into());
        }
        let connection = match cluster_nodes(url)? {
            Some(nodes) => {
                let client = ClusterClient::builder(nodes)
                    .tcp_settings(tcp_settings())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(timeout)
                    // Redirections (MOVED/ASK) and retries stay within the command's timeout.
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()
                    .map_err(|e| format!("--redis-url {}: {e}", redact(url)))?;
                Connection::Cluster(LazyCluster::start(client, redact(url)))
            }
            None => {
                let info = url
                    .into_connection_info()
                    .map_err(|e| format!("--redis-url {}: {e}", redact(url)))?
                    .set_tcp_settings(tcp_settings());
                let client = redis::Client::open(info)
                    .map_err(|e| format!("--redis-url {}: {e}", redact(url)))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    // A reconnect is retried with backoff (≤ 500 ms apart) and then
                    // restarted by the next command that finds it failed.
                    .set_number_of_retries(3)
                    .set_min_delay(Duration::from_millis(20))
                    .set_max_delay(Duration::from_millis(500));
                let manager = ConnectionManager::new_lazy_with_config(client, config)
                    .map_err(|e| format!("--redis-url {}: {e}", redact(url)))?;
                Connection::Single(manager)
            }
        };
        Ok(Redis {
            connection,
            timeout,
            metrics: RedisMetrics::default(),
        })
    }

    /// Records latency and errors in `metrics` (normally `world.metrics.redis`).
    pub fn with_metrics(mut self, metrics: RedisMetrics) -> Redis {
        self.metrics = metrics;
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.connection, Connection::Cluster(_))
    }

    /// Runs a Lua script (`EVALSHA`, loading it on `NOSCRIPT`); `op` names it in the
    /// metrics. Build the invocation with `script.key(..).arg(..)`.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        op: &str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        self.timed(op, async {
            match &self.connection {
                Connection::Single(manager) => invocation.invoke_async(&mut manager.clone()).await,
                Connection::Cluster(cluster) => {
                    invocation
                        .invoke_async(&mut cluster.connection().await?)
                        .await
                }
            }
        })
        .await
    }

    /// [`Redis::invoke`] with keys and arguments of one type each.
    pub async fn eval<T: FromRedisValue, K: ToRedisArgs, A: ToRedisArgs>(
        &self,
        op: &str,
        script: &Script,
        keys: &[K],
        args: &[A],
    ) -> Result<T, RedisError> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        self.invoke(op, &invocation).await
    }

    /// Runs one command (`redis::cmd("PTTL").arg(key)`).
    pub async fn query<T: FromRedisValue>(&self, op: &str, cmd: &Cmd) -> Result<T, RedisError> {
        self.timed(op, async {
            match &self.connection {
                Connection::Single(manager) => cmd.query_async(&mut manager.clone()).await,
                Connection::Cluster(cluster) => {
                    cmd.query_async(&mut cluster.connection().await?).await
                }
            }
        })
        .await
    }

    /// `PING` (op `ping`): whether Redis answers within the timeout.
    pub async fn ping(&self) -> Result<(), RedisError> {
        self.query::<String>("ping", &redis::cmd("PING"))
            .await
            .map(|_| ())
    }

    async fn timed<T>(
        &self,
        op: &str,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        let start = Instant::now();
        let result = match tokio::time::timeout(self.timeout, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(RedisError::Failed(error.to_string())),
            Err(_) => Err(RedisError::Timeout(self.timeout)),
        };
        let labels = OpLabels { op: op.to_owned() };
        self.metrics
            .seconds
            .get_or_create(&labels)
            .observe(start.elapsed().as_secs_f64());
        if result.is_err() {
            self.metrics.errors.get_or_create(&labels).inc();
        }
        result
    }
}

impl LazyCluster {
    /// Starts connecting in a background task (needs a Tokio runtime).
    fn start(client: ClusterClient, url: String) -> LazyCluster {
        let (sender, connection) = watch::channel(None);
        tokio::spawn(async move {
            let mut backoff = CLUSTER_RETRY_MIN;
            loop {
                if sender.is_closed() {
                    return; // every handle is gone
                }
                let error = match tokio::time::timeout(
                    CLUSTER_CONNECT_TIMEOUT,
                    client.get_async_connection(),
                )
                .await
                {
                    Ok(Ok(connection)) => {
                        sender.send_replace(Some(connection));
                        return;
                    }
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => format!("no answer within {CLUSTER_CONNECT_TIMEOUT:?}"),
                };
                eprintln!(
                    "meshward-control-plane: connecting to the Redis Cluster {url}: {error}; retrying in {backoff:?}"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(CLUSTER_RETRY_MAX);
            }
        });
        LazyCluster { connection }
    }

    /// The connection, once there is one: callers bound the wait (their timeout).
    async fn connection(&self) -> redis::RedisResult<ClusterConnection> {
        if let Some(connection) = self.connection.borrow().as_ref() {
            return Ok(connection.clone());
        }
        let mut receiver = self.connection.clone();
        let waited = receiver
            .wait_for(Option::is_some)
            .await
            .map(|connection| connection.clone());
        match waited {
            Ok(Some(connection)) => Ok(connection),
            _ => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the Redis Cluster connection task ended",
            ))),
        }
    }
}

/// `redis+cluster://[user:pass@]h1:p1,h2:p2[/...]` → the seed nodes as `redis://` URLs
/// (`rediss+cluster://` → `rediss://`); `None` for a single-node URL.
fn cluster_nodes(url: &str) -> Result<Option<Vec<String>>, String> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("redis+cluster", rest)) => ("redis", rest),
        Some(("rediss+cluster", rest)) => ("rediss", rest),
        _ => return Ok(None),
    };
    let (authority, suffix) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    };
    // Cluster mode has only database 0: keep just a query string (e.g. `?protocol=resp3`).
    let query = suffix.find('?').map_or("", |at| &suffix[at..]);
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|host| !host.is_empty())
        .map(|host| format!("{scheme}://{userinfo}{host}{query}"))
        .collect();
    if nodes.is_empty() {
        return Err(format!(
            "--redis-url {}: expected {scheme}+cluster://host:port[,host:port...]",
            redact(url)
        ));
    }
    Ok(Some(nodes))
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (userinfo, hosts) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{hosts}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_become_seed_nodes() {
        assert_eq!(cluster_nodes("redis://h:6379/2").unwrap(), None);
        assert_eq!(
            cluster_nodes("redis+cluster://a:7000,b:7001").unwrap(),
            Some(vec![
                "redis://a:7000".to_owned(),
                "redis://b:7001".to_owned()
            ])
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://u:p@a:7000,b:7001/0?protocol=resp3").unwrap(),
            Some(vec![
                "rediss://u:p@a:7000?protocol=resp3".to_owned(),
                "rediss://u:p@b:7001?protocol=resp3".to_owned()
            ])
        );
        assert!(cluster_nodes("redis+cluster://").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://:secret@h:1"), "redis://:***@h:1");
        assert_eq!(redact("redis://me:secret@h:1"), "redis://me:***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }

    #[tokio::test]
    async fn a_malformed_url_is_refused_and_a_down_redis_fails_per_command() {
        assert!(Redis::connect("http://x", DEFAULT_TIMEOUT).await.is_err());
        assert!(Redis::connect("redis://h", Duration::ZERO).await.is_err());
        // Nothing listens on port 1: refused quickly, counted as an error.
        let metrics = RedisMetrics::default();
        let redis = Redis::connect("redis://127.0.0.1:1", Duration::from_millis(300))
            .await
            .unwrap()
            .with_metrics(metrics.clone());
        let start = Instant::now();
        assert!(redis.ping().await.is_err());
        assert!(start.elapsed() < Duration::from_secs(1));
        let labels = OpLabels { op: "ping".into() };
        assert_eq!(metrics.errors.get_or_create(&labels).get(), 1);
    }
}
