use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port: bound, read and released (a tiny race, fine for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A free loopback address, for a service a test starts.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The real service binary, started as an operator would, with only the settings the test
/// gives it (inherited `KEYMETER_*` variables are removed first).
pub struct ServiceProcess {
    child: Child,
    pub addr: SocketAddr,
}

pub fn service_command(binary: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(binary);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEYMETER_") {
            command.env_remove(name);
        }
    }
    command.env("KEYMETER_LOG", "warn");
    command
}

impl ServiceProcess {
    /// Starts `command` (which must listen on `addr`) and waits until `/healthz` answers.
    pub async fn start(mut command: Command, addr: SocketAddr) -> Self {
        command.stderr(Stdio::inherit());
        Self::start_with_own_stderr(command, addr).await
    }

    /// As `start`, for a command whose stderr the test has pointed somewhere already.
    pub async fn start_with_own_stderr(mut command: Command, addr: SocketAddr) -> Self {
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .expect("start the service binary");
        let mut process = Self { child, addr };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("the service exited before answering: {status}");
            }
            if let Ok(response) = client.get(process.url("/healthz")).send().await
                && response.status().is_success()
            {
                return process;
            }
            assert!(Instant::now() < deadline, "no /healthz answer within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends SIGTERM, as Kubernetes does, and waits for the exit.
    pub async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl ServiceProcess {
    /// SIGKILL: the process dies at once, with no chance to finish anything.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a binary that should refuse its settings; returns its exit status and stderr.
pub fn run_to_exit(mut command: Command) -> (ExitStatus, String) {
    let output = command.output().expect("run the binary");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A binary of another package of the workspace (cargo builds every binary before running
/// any test): found beside the running test executable.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable lives in target/<profile>/deps");
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} is not built; run the workspace's tests",
        binary.display()
    );
    binary
}
