//! The local servers of `sigma dev`, and what an earlier run left of them.
//!
//! Each server runs in its own process group (so a Ctrl-C in the terminal reaches `sigma dev`
//! alone, which then stops them in order) with its pid in `<data>/run/<name>.pid`. Before
//! starting anything, a run looks at every port it needs. A process of ours there (the one in
//! the pid file, or one whose command line is ours) was left by an earlier run that died without
//! stopping it: it is adopted when it passes its health check and replaced (stopped, started
//! again) when it does not. Any other process on one of the ports stops the run before anything
//! starts, with the port, its pid and its command line. The run owns what it starts and what it
//! adopts, and stops all of it (SIGTERM to the process group, SIGKILL after a grace period) and
//! removes the pid files when it ends, however it ends short of `kill -9`; after a `kill -9` the
//! next run adopts. `<data>/run/lock` keeps two runs off one data directory. Linux (`/proc`).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sigma_shared::config::TemporalSettings;
use tokio::process::{Child, Command};

/// How a server shows it is up.
pub enum Probe {
    /// Any HTTP answer at all (s3s-fs answers an unsigned GET with an error).
    AnyHttp(String),
    /// An HTTP 2xx answer.
    Ok(String),
    /// Temporal: the gRPC frontend answers a client's `GetSystemInfo`, and the Web UI answers.
    Temporal(TemporalSettings),
}

impl Probe {
    /// One check, given at most `timeout`.
    async fn check(&self, timeout: Duration) -> bool {
        let http = |url: &str, any: bool| {
            let request = reqwest::Client::new().get(url).timeout(timeout).send();
            async move {
                match request.await {
                    Ok(response) => any || response.status().is_success(),
                    Err(_) => false,
                }
            }
        };
        match self {
            Probe::AnyHttp(url) => http(url, true).await,
            Probe::Ok(url) => http(url, false).await,
            Probe::Temporal(settings) => {
                let identity = super::super::identity("dev");
                let grpc = tokio::time::timeout(
                    timeout,
                    sigma_workflows::worker::connect(settings, &identity),
                );
                matches!(grpc.await, Ok(Ok(_))) && http(&settings.ui_url, true).await
            }
        }
    }

    fn target(&self) -> &str {
        match self {
            Probe::AnyHttp(url) | Probe::Ok(url) => url,
            Probe::Temporal(settings) => &settings.address,
        }
    }
}

/// One local server: how to start it, where it listens, how to recognise it.
pub struct Spec {
    /// File stem of its pid file and log.
    pub key: &'static str,
    pub title: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Every port it listens on; any of them held by another program is a conflict.
    pub ports: Vec<u16>,
    /// Runs of arguments that a command line of ours contains (the data directory or model, the
    /// port), so an orphan of an earlier run is told apart from someone else's server.
    pub marks: Vec<Vec<String>>,
    pub probe: Probe,
    pub start_timeout: Duration,
    /// How long it may take to exit after SIGTERM before it gets SIGKILL.
    pub stop_grace: Duration,
    /// How long a server left by an earlier run may take to answer its health check. The local
    /// LLM answers `/v1/models` only between two completions, so it gets longer.
    pub adopt_timeout: Duration,
}

impl Spec {
    /// Runs this program (the interpreter of a script comes first) with this spec's marks.
    fn is_ours(&self, cmdline: &[String]) -> bool {
        let program = self.program.to_string_lossy();
        cmdline.iter().take(2).any(|arg| *arg == program)
            && self
                .marks
                .iter()
                .all(|mark| cmdline.windows(mark.len()).any(|w| w == mark.as_slice()))
    }

    /// Runs exactly as this run would start it (an older `sigma dev` or another configuration
    /// may have started it otherwise).
    fn same_config(&self, cmdline: &[String]) -> bool {
        let expected: Vec<String> = std::iter::once(self.program.to_string_lossy().into_owned())
            .chain(self.args.iter().cloned())
            .collect();
        cmdline.ends_with(&expected)
    }
}

/// A server this run owns: started by it, or adopted from an earlier run.
struct Owned {
    key: &'static str,
    title: &'static str,
    pid: u32,
    stop_grace: Duration,
    /// Set when this run started it (and must reap it).
    child: Option<Child>,
    log: PathBuf,
}

/// What this run owns; stopped on [`Servers::stop_all`] or drop.
pub struct Servers {
    run_dir: PathBuf,
    log_dir: PathBuf,
    owned: Vec<Owned>,
    _lock: File,
}

/// What is on a server's ports before this run touches them.
enum Found {
    Nothing,
    /// Ours from an earlier run, by pid file or by command line; and whether it runs with the
    /// arguments this run would give it.
    Orphan {
        pid: u32,
        same_config: bool,
    },
}

impl Servers {
    /// Takes the data directory's lock: a second `sigma dev` on it is refused, naming the first.
    pub fn open(data: &Path) -> anyhow::Result<Self> {
        let run_dir = data.join("run");
        let log_dir = data.join("logs");
        std::fs::create_dir_all(&run_dir)?;
        std::fs::create_dir_all(&log_dir)?;
        let path = run_dir.join("lock");
        let mut lock = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if lock.try_lock().is_err() {
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            bail!(
                "another `sigma dev` (pid {}) is running on {}; stop it first",
                holder.trim(),
                data.display()
            );
        }
        lock.set_len(0)?;
        lock.rewind()?;
        writeln!(lock, "{}", std::process::id())?;
        Ok(Self {
            run_dir,
            log_dir,
            owned: Vec::new(),
            _lock: lock,
        })
    }

    fn pid_file(&self, key: &str) -> PathBuf {
        self.run_dir.join(format!("{key}.pid"))
    }

    /// Refuses to go on when a port is held by a program that is not the expected server of an
    /// earlier run; otherwise says whether such an orphan is there.
    fn inspect(&self, spec: &Spec) -> anyhow::Result<Found> {
        let pid_file = self.pid_file(spec.key);
        if let Some(pid) = read_pid(&pid_file) {
            if let Some(args) = cmdline(pid).filter(|c| alive(pid) && spec.is_ours(c)) {
                let same_config = spec.same_config(&args);
                return Ok(Found::Orphan { pid, same_config });
            }
            // Dead, or the pid now belongs to something else.
            let _ = std::fs::remove_file(&pid_file);
        }
        for &port in &spec.ports {
            if !port_held(port) {
                continue;
            }
            let holder = listener_pid(port);
            match holder.and_then(cmdline).filter(|c| spec.is_ours(c)) {
                Some(args) => {
                    let same_config = spec.same_config(&args);
                    let pid = holder.expect("a command line comes from a pid");
                    return Ok(Found::Orphan { pid, same_config });
                }
                None => bail!(
                    "port {port}, needed by {}, is held by {}; stop it and run again",
                    spec.title,
                    describe(holder),
                ),
            }
        }
        Ok(Found::Nothing)
    }

    /// Checks every server's ports before anything starts or stops, so a conflict stops the run
    /// with nothing changed; returns what was found, in the order of `specs`.
    fn inspect_all(
        &self,
        specs: &[Spec],
        other_ports: &[(u16, &str)],
    ) -> anyhow::Result<Vec<Found>> {
        for &(port, title) in other_ports {
            if port_held(port) {
                bail!(
                    "port {port}, needed by {title}, is held by {}; stop it and run again",
                    describe(listener_pid(port))
                );
            }
        }
        specs.iter().map(|spec| self.inspect(spec)).collect()
    }

    /// Adopts or replaces what an earlier run left, starts what is missing, and waits until
    /// every server answers. `other_ports` are ports this process binds itself (the API).
    pub async fn ensure_all(
        &mut self,
        specs: &[Spec],
        other_ports: &[(u16, &str)],
    ) -> anyhow::Result<()> {
        let found = self.inspect_all(specs, other_ports)?;
        // An orphan is this run's from here on: adopted, or stopped and started again; an
        // interruption during the checks below stops it as well.
        for (spec, found) in specs.iter().zip(&found) {
            if let Found::Orphan { pid, .. } = *found {
                self.owned.push(Owned {
                    key: spec.key,
                    title: spec.title,
                    pid,
                    stop_grace: spec.stop_grace,
                    child: None,
                    log: self.log_dir.join(format!("{}.log", spec.key)),
                });
            }
        }
        // Orphans are checked together: the slow one (a busy LLM) sets the pace, not the sum.
        let verdicts =
            futures::future::join_all(specs.iter().zip(&found).map(|(spec, found)| async move {
                match *found {
                    Found::Nothing => None,
                    Found::Orphan {
                        pid,
                        same_config: false,
                    } => Some((
                        pid,
                        Err("runs with other arguments than this run would give it"),
                    )),
                    Found::Orphan {
                        pid,
                        same_config: true,
                    } => Some((pid, adopt_check(spec, pid).await)),
                }
            }))
            .await;
        let mut to_start = Vec::new();
        for (spec, verdict) in specs.iter().zip(verdicts) {
            match verdict {
                Some((pid, Ok(()))) => {
                    eprintln!(
                        "  {} (pid {pid}) left by an earlier run answers: adopted",
                        spec.title
                    );
                    write_pid(&self.pid_file(spec.key), pid)?;
                }
                Some((pid, Err(why))) => {
                    eprintln!(
                        "  {} (pid {pid}) left by an earlier run {why}: replacing it",
                        spec.title
                    );
                    stop_pids(&[(spec.title, pid, spec.stop_grace)]);
                    self.owned.retain(|o| o.pid != pid);
                    let _ = std::fs::remove_file(self.pid_file(spec.key));
                    to_start.push(spec);
                }
                None => to_start.push(spec),
            }
        }
        // Started together, then waited for one by one: the wait is the slowest start.
        let first = self.owned.len();
        for spec in &to_start {
            self.spawn(spec)?;
        }
        for (owned, spec) in self.owned[first..].iter_mut().zip(&to_start) {
            wait_ready(owned, spec).await?;
        }
        Ok(())
    }

    /// Starts one server in its own process group and records it at once, so that an
    /// interruption from here on still stops it.
    fn spawn(&mut self, spec: &Spec) -> anyhow::Result<()> {
        anyhow::ensure!(
            spec.program.exists(),
            "{}: {} not found; run scripts/install-tools.sh",
            spec.title,
            spec.program.display()
        );
        for &port in &spec.ports {
            // A replaced server may take a moment to release its ports.
            let deadline = Instant::now() + Duration::from_secs(5);
            while port_held(port) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if port_held(port) {
                bail!(
                    "port {port}, needed by {}, is still held by {}",
                    spec.title,
                    describe(listener_pid(port))
                );
            }
        }
        let log = self.log_dir.join(format!("{}.log", spec.key));
        let log_file =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(&spec.program)
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", spec.title))?;
        let pid = child.id().context("a just-started child has a pid")?;
        self.owned.push(Owned {
            key: spec.key,
            title: spec.title,
            pid,
            stop_grace: spec.stop_grace,
            child: Some(child),
            log,
        });
        write_pid(&self.pid_file(spec.key), pid)
    }

    /// Stops everything this run owns, all at once: SIGTERM to each process group, SIGKILL to
    /// what is left after the grace period; removes the pid files.
    pub fn stop_all(&mut self) {
        if self.owned.is_empty() {
            return;
        }
        let pids: Vec<(&str, u32, Duration)> = self
            .owned
            .iter()
            .map(|o| (o.title, o.pid, o.stop_grace))
            .collect();
        eprintln!("stopping the local servers");
        let started = Instant::now();
        stop_pids(&pids);
        for mut owned in self.owned.drain(..) {
            if let Some(child) = owned.child.as_mut() {
                let _ = child.try_wait();
            }
            let _ = std::fs::remove_file(self.run_dir.join(format!("{}.pid", owned.key)));
            eprintln!("  stopped {} (pid {})", owned.title, owned.pid);
        }
        eprintln!("servers stopped in {:.1}s", started.elapsed().as_secs_f32());
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The health check of a server left by an earlier run: alive, and answering within its
/// adopt timeout. The LLM is asked once with the whole timeout: asking again would only queue
/// another request behind the completions it is busy with.
async fn adopt_check(spec: &Spec, pid: u32) -> Result<(), &'static str> {
    let check = spec.probe.check(spec.adopt_timeout);
    tokio::pin!(check);
    let healthy = tokio::select! {
        healthy = &mut check => healthy,
        () = tokio::time::sleep(Duration::from_secs(2)) => {
            eprintln!(
                "  {} (pid {pid}) left by an earlier run is slow to answer; waiting up to {}s",
                spec.title,
                spec.adopt_timeout.as_secs()
            );
            check.await
        }
    };
    if !alive(pid) {
        Err("exited during its health check")
    } else if !healthy {
        Err("does not answer its health check")
    } else {
        Ok(())
    }
}

/// Waits until a started server answers; fails at once, with its log's tail, if it exits.
async fn wait_ready(owned: &mut Owned, spec: &Spec) -> anyhow::Result<()> {
    let started = Instant::now();
    let child = owned
        .child
        .as_mut()
        .context("only started servers are waited for")?;
    while started.elapsed() < spec.start_timeout {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{} exited during start ({status}); the end of {}:\n{}",
                spec.title,
                owned.log.display(),
                tail(&owned.log, 15)
            );
        }
        if spec.probe.check(Duration::from_secs(2)).await {
            eprintln!(
                "  {} ready, pid {} ({:.1}s)",
                spec.title,
                owned.pid,
                started.elapsed().as_secs_f32()
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "{} did not answer at {} within {}s; see {}",
        spec.title,
        spec.probe.target(),
        spec.start_timeout.as_secs(),
        owned.log.display()
    )
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn write_pid(path: &Path, pid: u32) -> anyhow::Result<()> {
    std::fs::write(path, format!("{pid}\n"))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `/proc/<pid>/stat` after the command name: state, ppid, pgrp, …
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Running (a zombie is not).
fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z" && s != "X"))
}

fn process_group(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!args.is_empty()).then_some(args)
}

fn describe(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => match cmdline(pid) {
            Some(args) => format!("pid {pid} ({})", args.join(" ")),
            None => format!("pid {pid}"),
        },
        None => "a process this user cannot see (`ss -ltnp` as root names it)".into(),
    }
}

/// Something listens on the port, on any local address.
fn port_held(port: u16) -> bool {
    !listen_inodes(port).is_empty()
        || std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(300),
        )
        .is_ok()
}

/// Socket inodes of TCP listeners on `port`, from `/proc/net/tcp{,6}`.
fn listen_inodes(port: u16) -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let listening = *state == "0A";
            let on_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port);
            if listening && on_port && *inode != "0" {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    inodes
}

/// The process listening on `port`, when this user may see it.
fn listener_pid(port: u16) -> Option<u32> {
    let inodes = listen_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// Sends `signal` to the pid's process group when it leads one (ours do), else to the pid alone
/// (a server started by an older `sigma dev` shares its dead parent's group with nothing else
/// of ours, but the group is not ours to signal).
fn signal(pid: u32, signal: &str) {
    let target = if process_group(pid) == Some(pid) {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    let _ = std::process::Command::new("kill")
        .args([signal, "--", &target])
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM to all at once; SIGKILL to each one still running after its grace period.
fn stop_pids(pids: &[(&str, u32, Duration)]) {
    for &(_, pid, _) in pids {
        if alive(pid) {
            signal(pid, "-TERM");
        }
    }
    let started = Instant::now();
    let mut left = pids.to_vec();
    while !left.is_empty() {
        left.retain(|&(title, pid, grace)| {
            if !alive(pid) {
                return false;
            }
            if started.elapsed() < grace {
                return true;
            }
            eprintln!(
                "  {title} (pid {pid}) still busy {:.1}s after SIGTERM: SIGKILL",
                grace.as_secs_f32()
            );
            signal(pid, "-KILL");
            false
        });
        std::thread::sleep(Duration::from_millis(50));
    }
}
