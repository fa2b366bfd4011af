//! Credentials, endpoint and region from the standard AWS variables, as a user sets them
//! (the only test in this binary, so setting the process environment races with nothing).

use skynet_core::{Connection, RelPath, SourceFile};
use skynet_s3::testing::S3Server;
use skynet_s3::{S3Config, S3Connection};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_endpoint_from_the_environment() {
    let server = S3Server::start();
    server.create_bucket("envbucket").await;
    std::env::set_var("AWS_ACCESS_KEY_ID", server.access_key());
    std::env::set_var("AWS_SECRET_ACCESS_KEY", server.secret_key());
    std::env::set_var("AWS_ENDPOINT_URL", server.endpoint());
    std::env::remove_var("AWS_REGION");
    std::env::remove_var("AWS_DEFAULT_REGION");
    std::env::remove_var("AWS_PROFILE");
    // Keep the profile files out of it: point them at nothing.
    std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/skynet-test-config");
    std::env::set_var(
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/skynet-test-credentials",
    );
    // AWS_CA_BUNDLE stays as the environment has it: it must not get in the way.

    let mut cfg = S3Config::from_url("s3://envbucket/from/env").expect("url");
    cfg.path_style = true;
    let conn = S3Connection::new(cfg).await.expect("connection");
    assert_eq!(
        conn.describe(),
        format!("s3://envbucket/from/env (endpoint {})", server.endpoint())
    );
    conn.connect().await.expect("connect with the variables");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, b"hello").unwrap();
    let src = SourceFile::stat(&path).unwrap();
    let to = RelPath::from_bytes(b"f.txt").unwrap();
    assert_eq!(conn.send(&src, &to).await.unwrap(), 5);
    assert!(server.data_dir().join("envbucket/from/env/f.txt").is_file());
    assert_eq!(conn.read(&to).await.unwrap(), b"hello");
}
