//! Private, throw-away servers that a fault test may freeze, kill and restart: a `mariadbd`, a
//! `redis-server` and real `kuota` processes, each on a free 127.0.0.1 port with its files in
//! its own temporary folder, killed and deleted on drop. The shared MariaDB and Redis of the
//! other tests are never signalled.
//!
//! Freezing is SIGSTOP (the process keeps its sockets open and answers nothing, as a server in a
//! long GC pause, swapped out or on a stalled disk does); thawing is SIGCONT; killing is SIGKILL.
//! The signals go through the `kill` program: a few lines do not warrant a crate.
//!
//! Initializing a MariaDB data directory takes seconds, so it is done once and kept as a
//! template in the temporary directory (`kuota-mariadb-template-<mariadbd's size and mtime>`),
//! reused by later runs; each server starts on its own copy.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a private server may take to answer after it was started.
const SERVER_START_SECONDS_MAX: u64 = 60;

/// Where server binaries are looked for besides `PATH` (CI images often lack the sbin folders).
const BINARY_FOLDERS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];

/// The first of `names` found in `PATH` or in the usual binary folders.
pub fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let folders: Vec<PathBuf> =
        std::env::split_paths(&path).chain(BINARY_FOLDERS.iter().map(PathBuf::from)).collect();
    names
        .iter()
        .flat_map(|name| folders.iter().map(move |folder| folder.join(name)))
        .find(|path| path.is_file())
}

/// A free TCP port on 127.0.0.1 (the kernel's choice; it stays free unless someone races us).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("the kernel hands out a free loopback port")
        .port()
}

/// A folder under the temporary directory, deleted with everything in it on drop.
#[derive(Debug)]
pub struct TemporaryFolder {
    pub path: PathBuf,
}

impl TemporaryFolder {
    /// `kuota-<label>-<this process id>-<random>`: the process id lets a later run delete what
    /// a killed run could not (see `remove_folders_of_dead_runs`).
    pub fn new(label: &str) -> TemporaryFolder {
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(remove_folders_of_dead_runs);
        // Short on purpose: a unix socket path inside it must stay under ~107 bytes.
        let name = format!("kuota-{label}-{}-{}", std::process::id(), kuota_persist::random::token_hex(4));
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("the temporary directory is writable");
        TemporaryFolder { path }
    }
}

/// Deletes the folders `TemporaryFolder` made in runs whose process is gone: a run killed
/// without unwinding (its servers die with it, see `Watched`) leaves them behind.
fn remove_folders_of_dead_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.map_while(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let parts: Vec<&str> = name.split('-').collect();
        let [prefix, _label, process_id, random] = parts[..] else { continue };
        let ours = prefix == "kuota"
            && process_id.parse::<u32>().is_ok()
            && kuota_persist::random::is_lowercase_hex(random, 8);
        if ours && !Path::new(&format!("/proc/{process_id}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for TemporaryFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Sends `signal` (STOP, CONT, KILL, TERM) to `process_id`.
pub fn send_signal(process_id: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), process_id.to_string()])
        .status()
        .expect("the kill program runs");
    assert!(status.success(), "kill -{signal} {process_id} failed: {status}");
    // A signal is delivered asynchronously: wait until every thread has really stopped (or
    // runs again), so that what a test does next happens to a frozen (or thawed) process.
    let stopped_wanted = match signal {
        "STOP" => true,
        "CONT" => false,
        _ => return,
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if all_threads_stopped(process_id) == Some(stopped_wanted) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!(
        "process {process_id} did not {} within 2 s of SIG{signal}",
        if stopped_wanted { "stop" } else { "resume" }
    );
}

/// Whether every thread of the process is stopped (state `T` in /proc), or None when it is gone.
fn all_threads_stopped(process_id: u32) -> Option<bool> {
    let threads = std::fs::read_dir(format!("/proc/{process_id}/task")).ok()?;
    let mut all_stopped = true;
    for thread in threads.map_while(Result::ok) {
        let stat = std::fs::read_to_string(thread.path().join("stat")).unwrap_or_default();
        // "pid (comm) S ...": comm may hold spaces and parentheses, so read after the last ')'.
        let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
        all_stopped &= matches!(state, Some('T') | Some('t'));
    }
    Some(all_stopped)
}

/// The `sh` watchdog every private process runs under. It starts the process (its output
/// appended to the files named by $1 and $2), prints its pid, and SIGKILLs it as soon as the
/// watchdog's stdin, a pipe from this test process, reaches end of file: when the test drops
/// its end, and also when the test process dies without unwinding (Ctrl-C, a timeout's
/// SIGKILL), so that no private server outlives its run. It exits with the process's status.
const WATCHDOG_SCRIPT: &str = r#"exec 3<&0
out=$1; err=$2; shift 2
"$@" 3<&- </dev/null >>"$out" 2>>"$err" &
child=$!
echo "$child"
( read -r _ <&3; kill -KILL "$child" 2>/dev/null ) &
wait "$child"
"#;

/// A process started under the watchdog.
#[derive(Debug)]
pub struct Watched {
    pub process_id: u32,
    watchdog: Child,
    /// Closing it makes the watchdog kill the process.
    lifeline: Option<ChildStdin>,
    /// The process's stdout, when it was not sent to a file.
    stdout: Option<BufReader<ChildStdout>>,
}

impl Watched {
    /// Starts `command`'s program with its arguments and environment under the watchdog, its
    /// stdout to `stdout` (None: a pipe, see `take_stdout`) and its stderr to `stderr`.
    fn spawn(command: &Command, stdout: Option<&Path>, stderr: &Path) -> Watched {
        let out = stdout.map_or_else(|| "/dev/stdout".to_string(), |path| path.display().to_string());
        let mut watchdog = Command::new("sh");
        watchdog
            .args(["-c", WATCHDOG_SCRIPT, "watchdog", &out])
            .arg(stderr)
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => watchdog.env(key, value),
                None => watchdog.env_remove(key),
            };
        }
        let mut watchdog = watchdog
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh runs the watchdog");
        let mut stdout = BufReader::new(watchdog.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the watchdog prints the process id");
        let process_id = line.trim().parse().unwrap_or_else(|_| panic!("not a process id: {line:?}"));
        Watched { process_id, lifeline: watchdog.stdin.take(), watchdog, stdout: Some(stdout) }
    }

    /// The process's stdout (when it went to the pipe); once.
    fn take_stdout(&mut self) -> Option<BufReader<ChildStdout>> {
        self.stdout.take()
    }

    /// How the process exited, once it has.
    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.watchdog.try_wait().ok().flatten()
    }

    /// SIGKILL (which ends a stopped process too) through the watchdog; returns once the
    /// process is gone, so that its port and files are free.
    fn kill(&mut self) {
        drop(self.lifeline.take());
        let _ = self.watchdog.wait();
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.kill();
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Waits until `answers` holds, failing early when the process exits.
async fn wait_until_answering(
    process: &mut Watched,
    what: &str,
    log: &Path,
    answers: impl AsyncFn() -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(SERVER_START_SECONDS_MAX);
    while Instant::now() < deadline {
        if answers().await {
            return;
        }
        if let Some(status) = process.exit_status() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} exited during startup ({status}):\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not answer within {SERVER_START_SECONDS_MAX} s");
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// A `redis-server` without persistence on a private port.
#[derive(Debug)]
pub struct PrivateRedis {
    pub port: u16,
    process: Option<Watched>,
    folder: TemporaryFolder,
}

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        let mut redis =
            PrivateRedis { port: free_port(), process: None, folder: TemporaryFolder::new("redis") };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn process_id(&self) -> u32 {
        self.process.as_ref().expect("the server runs").process_id
    }

    /// Starts the server again on the same port (after `kill`, or to replace a running one).
    pub async fn restart(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
        let server = find_binary(&["redis-server"]).expect("redis-server is installed");
        let log = self.folder.path.join("redis.log");
        let mut command = Command::new(server);
        command
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--daemonize", "no", "--dir"])
            .arg(&self.folder.path);
        let url = self.url();
        let process = self.process.insert(Watched::spawn(&command, Some(&log), &log));
        wait_until_answering(process, "the private redis-server", &log, async || ping_redis(&url).await)
            .await;
    }

    pub fn freeze(&self) {
        send_signal(self.process_id(), "STOP");
    }

    pub fn thaw(&self) {
        send_signal(self.process_id(), "CONT");
    }

    /// SIGKILL; the server stays down until `restart`.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True when Redis at `url` answers PING within 500 ms.
pub async fn ping_redis(url: &str) -> bool {
    let ping = async {
        let client = redis::Client::open(url).ok()?;
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING").query_async::<String>(&mut connection).await.ok()
    };
    matches!(tokio::time::timeout(Duration::from_millis(500), ping).await, Ok(Some(_)))
}

// ---------------------------------------------------------------------------------------------
// MariaDB
// ---------------------------------------------------------------------------------------------

/// A `mariadbd` on a private port, its data directory a copy of the template. It is durable
/// (InnoDB's defaults: the log is flushed at every commit), so that a SIGKILL loses nothing
/// that was committed, as a real crash would not.
#[derive(Debug)]
pub struct PrivateMariaDb {
    pub port: u16,
    process: Option<Watched>,
    folder: TemporaryFolder,
}

impl PrivateMariaDb {
    pub async fn start() -> PrivateMariaDb {
        let template = tokio::task::spawn_blocking(mariadb_template)
            .await
            .expect("the template initialization does not panic");
        let folder = TemporaryFolder::new("mariadb");
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(folder.path.join("data"))
            .status()
            .expect("cp runs");
        assert!(copied.success(), "copying the MariaDB template failed");
        let mut mariadb = PrivateMariaDb { port: free_port(), process: None, folder };
        mariadb.restart().await;
        mariadb
    }

    /// The server's URL, without a database.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    pub fn process_id(&self) -> u32 {
        self.process.as_ref().expect("the server runs").process_id
    }

    /// Starts the server again on the same port and data directory (after `kill`: InnoDB
    /// recovers from its log as after a power cut).
    pub async fn restart(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
        let server = find_binary(&["mariadbd", "mysqld"]).expect("mariadbd is installed");
        let folder = &self.folder.path;
        let log = folder.join("mariadb.err");
        let mut command = Command::new(server);
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", folder.join("data").display()))
            .arg(format!("--socket={}", folder.join("mariadb.sock").display()))
            .arg(format!("--port={}", self.port))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
            // Small: several private servers may run at once on a small machine.
            .args(["--innodb-buffer-pool-size=32M", "--max-connections=300"])
            .arg(format!("--pid-file={}", folder.join("mariadb.pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--tmpdir={}", folder.display()));
        if running_as_root() {
            command.arg("--user=root");
        }
        let url = self.url();
        let output = folder.join("mariadb.out");
        let process = self.process.insert(Watched::spawn(&command, Some(&output), &output));
        wait_until_answering(process, "the private mariadbd", &log, async || mariadb_answers(&url).await)
            .await;
    }

    pub fn freeze(&self) {
        send_signal(self.process_id(), "STOP");
    }

    pub fn thaw(&self) {
        send_signal(self.process_id(), "CONT");
    }

    /// SIGKILL; the server stays down until `restart`.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// A new, empty database on this server; its URL.
    pub async fn create_database(&self) -> String {
        let name = format!("kuota_t_{}", kuota_persist::random::token_hex(6));
        let mut connection = <sqlx::MySqlConnection as sqlx::Connection>::connect(&self.url())
            .await
            .expect("the private MariaDB answers");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut connection)
            .await
            .expect("the database is created");
        format!("{}/{name}", self.url())
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True when MariaDB at `url` runs `SELECT 1` within 1 s.
pub async fn mariadb_answers(url: &str) -> bool {
    let select = async {
        let mut connection = <sqlx::MySqlConnection as sqlx::Connection>::connect(url).await.ok()?;
        sqlx::query_scalar::<_, i64>("SELECT 1").fetch_one(&mut connection).await.ok()
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), select).await, Ok(Some(1)))
}

/// The initialized data directory every private MariaDB copies: made once per installed
/// `mariadbd` (named by its size and modification time) and kept for later runs. Made under a
/// process-specific name and renamed into place, so concurrent test binaries never see half of one.
fn mariadb_template() -> PathBuf {
    static TEMPLATE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let server = find_binary(&["mariadbd", "mysqld"]).expect("mariadbd is installed");
            let metadata = std::fs::metadata(&server).expect("mariadbd can be read");
            let modified = metadata
                .modified()
                .ok()
                .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |since| since.as_secs());
            let name = format!("kuota-mariadb-template-{}-{modified}", metadata.len());
            let template = std::env::temp_dir().join(name);
            if template.join("mysql").is_dir() {
                return template;
            }
            let partial = template.with_extension(format!("partial-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&partial);
            let install =
                find_binary(&["mariadb-install-db", "mysql_install_db"]).expect("mariadb-install-db");
            // The install script calls helpers next to itself and the server (my_print_defaults,
            // resolveip), which may be outside PATH.
            let path = format!(
                "{}:{}:{}",
                std::env::var("PATH").unwrap_or_default(),
                server.parent().expect("a folder").display(),
                install.parent().expect("a folder").display()
            );
            let mut command = Command::new(install);
            command
                .env("PATH", path)
                .arg("--no-defaults")
                .arg(format!("--datadir={}", partial.display()))
                // "normal": root with an empty password over TCP, as the tests connect.
                .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
            if running_as_root() {
                command.arg("--user=root");
            }
            let output = command.output().expect("mariadb-install-db runs");
            assert!(
                output.status.success(),
                "mariadb-install-db failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            if std::fs::rename(&partial, &template).is_err() {
                // Another test binary put its template there first; theirs is as good.
                let _ = std::fs::remove_dir_all(&partial);
            }
            template
        })
        .clone()
}

// ---------------------------------------------------------------------------------------------
// Kuota nodes as processes
// ---------------------------------------------------------------------------------------------

/// A real `kuota` process (`CARGO_BIN_EXE_kuota`, or `KUOTA_TEST_KUOTA_BINARY`), which can be frozen, killed with -9 and
/// restarted with the same settings, node id and port. Its log goes to `kuota-<n>.log` in its
/// folder (printed when the node exits unexpectedly).
#[derive(Debug)]
pub struct KuotaProcess {
    pub port: u16,
    environment: Vec<(String, String)>,
    process: Option<Watched>,
    folder: TemporaryFolder,
    starts: u32,
}

/// How long the binary may take to print that it listens (migrations included).
const NODE_START_SECONDS_MAX: u64 = 60;

impl KuotaProcess {
    /// Starts the binary with these `KUOTA_*` settings (the listen address and the advertised
    /// URL are chosen here) and waits for its "kuota listening on" line.
    pub async fn start(environment: &[(&str, &str)]) -> KuotaProcess {
        KuotaProcess::try_start(environment).await.unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// Like `start`, but a node that exits or stays silent is an error with its log.
    pub async fn try_start(environment: &[(&str, &str)]) -> Result<KuotaProcess, String> {
        let environment =
            environment.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect();
        let mut node = KuotaProcess {
            port: 0,
            environment,
            process: None,
            folder: TemporaryFolder::new("node"),
            starts: 0,
        };
        node.launch().await?;
        Ok(node)
    }

    /// Starts the process again: the same settings, node id and port.
    pub async fn restart(&mut self) {
        self.launch().await.unwrap_or_else(|failure| panic!("{failure}"));
    }

    async fn launch(&mut self) -> Result<(), String> {
        self.kill();
        let process = self.spawn();
        let port = tokio::task::spawn_blocking(move || wait_for_listening_line(process))
            .await
            .expect("reading the node's output does not panic");
        match port {
            Ok((process, port)) => {
                self.port = port;
                self.process = Some(process);
                Ok(())
            }
            Err(message) => Err(format!("{message}; its log:\n{}", self.log())),
        }
    }

    /// Spawns the binary without waiting for it.
    fn spawn(&mut self) -> Watched {
        self.starts += 1;
        let log = self.folder.path.join(format!("kuota-{}.log", self.starts));
        // Port 0 the first time; the same port afterwards, so clients find the restarted node.
        let listen = format!("127.0.0.1:{}", self.port);
        // The binary cargo built for these tests, unless told to run another build (the target
        // folder may be shared with other checkouts that rebuild it).
        let binary = std::env::var_os("KUOTA_TEST_KUOTA_BINARY")
            .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kuota")), PathBuf::from);
        let mut command = Command::new(binary);
        command
            .env("KUOTA_LISTEN", &listen)
            // ":0" stands for the bound port.
            .env("KUOTA_ADVERTISE_URL", format!("http://{listen}"))
            .env("KUOTA_LOG_FORMAT", "json")
            // A startup error is then its cause chain, short enough to show in a test failure.
            .env("RUST_BACKTRACE", "0")
            .envs(self.environment.iter().map(|(key, value)| (key, value)));
        Watched::spawn(&command, None, &log)
    }

    pub fn process_id(&self) -> u32 {
        self.process.as_ref().expect("the node runs").process_id
    }

    pub fn freeze(&self) {
        send_signal(self.process_id(), "STOP");
    }

    pub fn thaw(&self) {
        send_signal(self.process_id(), "CONT");
    }

    /// kill -9: no draining, no lease released.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// The process's resident memory (VmRSS), in MiB.
    pub fn resident_mib(&self) -> Option<u64> {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.process.as_ref()?.process_id)).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|process| process.exit_status().is_none())
    }

    /// The end of the log of the latest start (where a failure explains itself).
    pub fn log(&self) -> String {
        self.log_lines_with(&[""], 20)
    }

    /// The last `lines_max` lines of the latest start's log that contain one of `words`.
    pub fn log_lines_with(&self, words: &[&str], lines_max: usize) -> String {
        let path = self.folder.path.join(format!("kuota-{}.log", self.starts));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> =
            text.lines().filter(|line| words.iter().any(|word| line.contains(word))).collect();
        lines[lines.len().saturating_sub(lines_max)..].join("\n")
    }
}

impl Drop for KuotaProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads the node's stdout until "kuota listening on http://host:port", then keeps draining it
/// on a thread (a full pipe would block the node). Gives the process back with its port.
fn wait_for_listening_line(mut process: Watched) -> Result<(Watched, u16), String> {
    let stdout = process.take_stdout().expect("the node's stdout is piped");
    let (port_sender, port_receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut port_sender = Some(port_sender);
        for line in stdout.lines().map_while(Result::ok) {
            let port = line
                .strip_prefix("kuota listening on http://")
                .and_then(|address| address.rsplit_once(':'))
                .and_then(|(_, port)| port.trim().parse::<u16>().ok());
            if let (Some(port), Some(sender)) = (port, port_sender.take()) {
                let _ = sender.send(port);
            }
        }
    });
    match port_receiver.recv_timeout(Duration::from_secs(NODE_START_SECONDS_MAX)) {
        Ok(port) => Ok((process, port)),
        Err(_) => {
            // Its stdout closed, or it stayed silent: give an exiting node a moment to finish
            // (and write its error), so that its status and log say why.
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut status = process.exit_status();
            while status.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                status = process.exit_status();
            }
            process.kill();
            Err(format!("the kuota node did not announce its port (exit status: {status:?})"))
        }
    }
}

#[cfg(test)]
mod harness {
    use super::*;

    async fn redis_get(url: &str, key: &str) -> Option<String> {
        let client = redis::Client::open(url).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("GET").arg(key).query_async(&mut connection).await.unwrap()
    }

    #[actix_rt::test]
    async fn a_private_redis_can_be_frozen_thawed_killed_and_restarted() {
        let mut redis = PrivateRedis::start().await;
        let client = redis::Client::open(redis.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("SET").arg("k").arg("v").query_async(&mut connection).await.unwrap();
        redis.freeze();
        let frozen = tokio::time::timeout(
            Duration::from_millis(300),
            redis::cmd("GET").arg("k").query_async::<String>(&mut connection),
        )
        .await;
        assert!(frozen.is_err(), "a frozen Redis does not answer");
        assert!(!ping_redis(&redis.url()).await);
        redis.thaw();
        assert!(ping_redis(&redis.url()).await, "a thawed Redis answers again");
        assert_eq!(redis_get(&redis.url(), "k").await.as_deref(), Some("v"));
        let process_id = redis.process_id();
        redis.kill();
        assert!(!Path::new(&format!("/proc/{process_id}")).exists(), "the killed server is gone");
        assert!(!ping_redis(&redis.url()).await, "a killed Redis does not answer");
        redis.restart().await;
        assert_eq!(redis_get(&redis.url(), "k").await, None, "nothing is persisted");
        let folder = redis.folder.path.clone();
        drop(redis);
        assert!(!folder.exists(), "the folder is removed on drop");
    }

    #[actix_rt::test]
    async fn a_private_mariadb_can_be_frozen_thawed_killed_and_restarted_without_losing_commits() {
        let mut mariadb = PrivateMariaDb::start().await;
        let database = mariadb.create_database().await;
        let mut connection = <sqlx::MySqlConnection as sqlx::Connection>::connect(&database).await.unwrap();
        sqlx::query("CREATE TABLE t (n BIGINT PRIMARY KEY)").execute(&mut connection).await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)").execute(&mut connection).await.unwrap();
        mariadb.freeze();
        let frozen = tokio::time::timeout(
            Duration::from_millis(300),
            sqlx::query("INSERT INTO t VALUES (2)").execute(&mut connection),
        )
        .await;
        assert!(frozen.is_err(), "a frozen MariaDB does not answer");
        mariadb.thaw();
        assert!(mariadb_answers(&database).await, "a thawed MariaDB answers again");
        mariadb.kill();
        assert!(!mariadb_answers(&database).await, "a killed MariaDB does not answer");
        mariadb.restart().await;
        let mut connection = <sqlx::MySqlConnection as sqlx::Connection>::connect(&database).await.unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t WHERE n = 1")
            .fetch_one(&mut connection)
            .await
            .unwrap();
        assert_eq!(rows, 1, "the committed row survived the SIGKILL");
        let folder = mariadb.folder.path.clone();
        drop(connection);
        drop(mariadb);
        assert!(!folder.exists(), "the folder is removed on drop");
    }

    #[actix_rt::test]
    async fn a_kuota_process_announces_its_port_and_can_be_frozen_killed_and_restarted() {
        let folder = TemporaryFolder::new("store");
        let database = format!("sqlite://{}/kuota.db", folder.path.display());
        let mut node = KuotaProcess::start(&[
            ("KUOTA_DATABASE_URL", database.as_str()),
            ("KUOTA_ADMIN_TOKEN", super::super::support::ADMIN_TOKEN),
            ("KUOTA_NODE_ID", "node-a"),
        ])
        .await;
        let client = super::super::support::TestApp::attach(node.port);
        assert_eq!(client.get("/healthz", &[]).await.status, 200);
        node.freeze();
        let frozen = tokio::time::timeout(Duration::from_millis(300), client.get("/healthz", &[])).await;
        assert!(frozen.is_err(), "a frozen node does not answer");
        node.thaw();
        assert_eq!(client.get("/healthz", &[]).await.status, 200);
        let port = node.port;
        node.kill();
        assert!(!node.is_running());
        assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "nothing listens");
        node.restart().await;
        assert_eq!(node.port, port, "restarted on the same port");
        assert_eq!(client.get("/healthz", &[]).await.status, 200);
    }
}
