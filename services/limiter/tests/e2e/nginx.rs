//! nginx `auth_request` in front of a tiny upstream, pointed at `/v1/authorize`: the real
//! nginx from Debian's packages (deploy/local/test.sh installs it).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use domain::{Algorithm, ApiKey, KeyPrefix, Limit};
use storage::redis_cluster::projection::KeyLayout;
use storage::redis_cluster::{RedisCluster, RedisSettings};
use test_support::ServiceProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers every request 200 with the key id nginx passed on.
async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request).to_lowercase();
                let key_id = text
                    .lines()
                    .find_map(|l| l.strip_prefix("x-keymeter-key-id: "))
                    .unwrap_or("none")
                    .trim()
                    .to_owned();
                let body = format!("upstream saw key {key_id}");
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nginx(
    dir: &std::path::Path,
    listen: SocketAddr,
    limiter: SocketAddr,
    upstream: SocketAddr,
) -> Nginx {
    let conf = format!(
        r#"daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen {listen};
    location = /_keymeter {{
      internal;
      proxy_pass http://{limiter}/v1/authorize;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-API-Key $http_x_api_key;
    }}
    location / {{
      auth_request /_keymeter;
      auth_request_set $keymeter_key_id $upstream_http_x_keymeter_key_id;
      proxy_set_header X-Keymeter-Key-Id $keymeter_key_id;
      proxy_pass http://{upstream};
    }}
  }}
}}
"#,
        dir = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx is installed (deploy/local/test.sh installs it with apt-get)");
    Nginx(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_lets_allowed_requests_through_and_refuses_the_rest() {
    let redis = RedisCluster::new(RedisSettings::new(test_support::redis_nodes())).unwrap();
    let isolation = test_support::Isolation::new().await;
    let layout = KeyLayout::new(isolation.redis_prefix.clone());
    let (key, key_id) = crate::put_key(
        &redis,
        &layout,
        vec![Limit {
            name: "m".into(),
            algorithm: Algorithm::FixedWindow,
            limit: 3,
            window_ms: 3_600_000,
            burst: None,
        }],
    )
    .await;
    let (mut command, limiter_addr) = crate::serve_isolated(&isolation);
    command.env("KEYMETER_AUTHORIZE_DENY_STATUS", "forbidden");
    let _limiter = ServiceProcess::start(command, limiter_addr).await;
    let upstream_addr = upstream().await;
    let dir = std::env::temp_dir().join(format!("keymeter-nginx-{}", test_support::unique_name()));
    std::fs::create_dir_all(&dir).unwrap();
    let nginx_addr = test_support::free_addr();
    let _nginx = start_nginx(&dir, nginx_addr, limiter_addr, upstream_addr);

    let client = reqwest::Client::new();
    let get = |api_key: Option<&str>| {
        let mut request = client.get(format!("http://{nginx_addr}/hello"));
        if let Some(k) = api_key {
            request = request.header("x-api-key", k);
        }
        request.send()
    };
    // nginx takes a moment to listen.
    let mut first = None;
    for _ in 0..100 {
        if let Ok(response) = get(Some(key.expose())).await {
            first = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = first.expect("nginx answers");
    assert_eq!(first.status(), 200);
    assert_eq!(
        first.text().await.unwrap(),
        format!("upstream saw key {key_id}")
    );
    for _ in 0..2 {
        assert_eq!(get(Some(key.expose())).await.unwrap().status(), 200);
    }
    assert_eq!(
        get(Some(key.expose())).await.unwrap().status(),
        403,
        "the 4th of 3 per hour"
    );
    assert_eq!(get(None).await.unwrap().status(), 403, "no key");
    assert_eq!(
        get(Some("km_forged")).await.unwrap().status(),
        403,
        "malformed key"
    );
    let unknown = ApiKey::generate(&KeyPrefix::default());
    assert_eq!(
        get(Some(unknown.expose())).await.unwrap().status(),
        403,
        "unknown key"
    );

    isolation.cleanup().await;
    let _ = std::fs::remove_dir_all(&dir);
}
