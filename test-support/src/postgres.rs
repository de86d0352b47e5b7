//! One fresh Postgres database per test, on `$DATABASE_URL` or on a throwaway cluster.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection};
use tokio::sync::OnceCell;

use crate::util::{find_on_path, free_port, is_executable, log_stdio, log_tail};

/// How long the throwaway cluster may take to accept connections after `initdb`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to try `$DATABASE_URL` before falling back to a throwaway cluster.
const DATABASE_URL_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections per test database pool; tests run in parallel against one server.
const POOL_SIZE: u32 = 5;

const INSTALL_HINT: &str = "run `deploy/local/test.sh` (it installs PostgreSQL 15 with \
     `apt-get install postgresql` and exports DATABASE_URL), or set DATABASE_URL to a Postgres \
     server where this user may CREATE DATABASE";

/// A database created for one test. Dropping it drops the database (best effort, with
/// `WITH (FORCE)` so open connections do not keep it alive).
#[derive(Debug)]
pub struct TestDatabase {
    /// Connection URL of this database.
    pub url: String,
    /// A pool of up to 5 connections to it.
    pub pool: PgPool,
    /// Its name, `test_<uuid>`.
    pub name: String,
    admin_url: String,
}

/// A fresh, empty database for one test: on the server in `$DATABASE_URL` if it is set and
/// reachable (within 5 s; the database named in the URL is only used to run
/// `CREATE DATABASE`), else on a throwaway cluster this process starts once (see
/// [`throwaway_database`]).
///
/// # Panics
///
/// If no server is usable; the message says what to install or set.
pub async fn database() -> TestDatabase {
    static ADMIN_URL: OnceCell<String> = OnceCell::const_new();
    let admin_url = ADMIN_URL
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("DATABASE_URL") {
                match connect(&url, DATABASE_URL_TIMEOUT).await {
                    Ok(conn) => {
                        let _ = conn.close().await;
                        return url;
                    }
                    Err(e) => {
                        #[allow(clippy::print_stderr, reason = "tests show stderr on failure")]
                        {
                            eprintln!(
                                "switchyard-test-support: DATABASE_URL is set but unusable \
                                 ({e}); starting a throwaway Postgres cluster instead"
                            );
                        }
                    }
                }
            }
            throwaway_admin_url().await
        })
        .await;
    create_database(admin_url).await
}

/// A fresh database on this process's throwaway cluster, ignoring `$DATABASE_URL`.
///
/// The cluster is started on first use: `initdb` into a temporary directory with the
/// PostgreSQL binaries from `/usr/lib/postgresql/<version>/bin` (or `initdb` on `$PATH`),
/// trust authentication, listening on a free port on 127.0.0.1 with its unix socket in the
/// temporary directory, fsync off. When running as root it runs as the `postgres` user.
/// A small shell watchdog reads a pipe from this process; when the process exits, however it
/// exits, the pipe closes and the watchdog stops the server and removes the directory.
///
/// # Panics
///
/// If the PostgreSQL binaries are missing or the cluster does not start within 30 s.
pub async fn throwaway_database() -> TestDatabase {
    create_database(&throwaway_admin_url().await).await
}

async fn throwaway_admin_url() -> String {
    static CLUSTER: OnceCell<ThrowawayCluster> = OnceCell::const_new();
    CLUSTER
        .get_or_init(ThrowawayCluster::start)
        .await
        .admin_url
        .clone()
}

async fn connect(url: &str, within: Duration) -> Result<PgConnection, String> {
    match tokio::time::timeout(within, PgConnection::connect(url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {within:?}")),
    }
}

async fn create_database(admin_url: &str) -> TestDatabase {
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = connect(admin_url, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("connecting to Postgres at {admin_url}: {e}; {INSTALL_HINT}"));
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin_url}: {e}"));
    let _ = admin.close().await;

    let url = with_database(admin_url, &name);
    let pool = PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connecting to the new test database {url}: {e}"));
    TestDatabase {
        url,
        pool,
        name,
        admin_url: admin_url.to_owned(),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop is synchronous and may run on the test's runtime (or during a panic), so the
        // DROP DATABASE runs on a private runtime on its own thread and never panics.
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut admin) = connect(&admin_url, Duration::from_secs(5)).await {
                    let drop_db = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut admin);
                    let _ = tokio::time::timeout(Duration::from_secs(10), drop_db).await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// `url` with its database path replaced by `database`, keeping credentials and query.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A Postgres cluster private to this test process.
#[derive(Debug)]
struct ThrowawayCluster {
    admin_url: String,
    /// The watchdog stops the server when this pipe closes, i.e. when the process exits.
    /// Never dropped: it lives in a static.
    _watchdog: Mutex<(Child, ChildStdin)>,
}

/// Runs the server in the background, waits for stdin to reach end-of-file, then stops the
/// server (fast shutdown) and removes its directory. Arguments: directory, bin dir, port.
const WATCHDOG_SCRIPT: &str = r#"
trap '' HUP INT
dir=$1 bin=$2 port=$3
"$bin/postgres" -D "$dir/data" -k "$dir" -h 127.0.0.1 -p "$port" \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c max_connections=200 </dev/null >>"$dir/postgres.log" 2>&1 &
pid=$!
while read -r _line; do :; done
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir"
"#;

impl ThrowawayCluster {
    async fn start() -> ThrowawayCluster {
        let bin_dir = postgres_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("switchyard-pg-")
            .tempdir()
            .expect("creating a temporary directory for the throwaway Postgres cluster")
            // Removed by the watchdog once the server has stopped.
            .keep();
        let is_root = dir.metadata().map(|m| m.uid() == 0).unwrap_or(false);
        // initdb and postgres refuse to run as root.
        let as_postgres = |program: &Path| -> Command {
            let mut cmd = if is_root {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", "postgres", "--"]).arg(program);
                cmd
            } else {
                Command::new(program)
            };
            cmd.current_dir(&dir);
            cmd
        };
        if is_root {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&dir)
                .status()
                .expect("running chown");
            assert!(
                status.success(),
                "chown postgres:postgres {} failed (is there a `postgres` user? installing \
                 PostgreSQL creates it); {INSTALL_HINT}",
                dir.display()
            );
        }

        let output = as_postgres(&bin_dir.join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .unwrap_or_else(|e| panic!("running {}/initdb: {e}", bin_dir.display()));
        assert!(
            output.status.success(),
            "initdb for the throwaway Postgres cluster in {} failed ({}):\n{}{}",
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );

        let port = free_port();
        let watchdog_log = dir.join("watchdog.log");
        let (stdout, stderr) = log_stdio(&watchdog_log);
        let mut child = as_postgres(Path::new("sh"))
            .args(["-c", WATCHDOG_SCRIPT, "sh"])
            .arg(&dir)
            .arg(&bin_dir)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(stderr)
            // Its own process group, so Ctrl-C in a terminal reaches only the test process;
            // the closing pipe then stops the server cleanly.
            .process_group(0)
            .spawn()
            .expect("starting the throwaway Postgres cluster");
        let mut stdin = child.stdin.take().expect("watchdog stdin is piped");
        let _ = stdin.flush();

        let admin_url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        let started = Instant::now();
        loop {
            match connect(&admin_url, Duration::from_secs(2)).await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    break;
                }
                Err(e) => {
                    let exited = matches!(child.try_wait(), Ok(Some(_)));
                    if exited || started.elapsed() > READY_TIMEOUT {
                        panic!(
                            "throwaway Postgres cluster on port {port} not ready after {:?} \
                             ({e}); log:\n{}\nwatchdog log:\n{}",
                            started.elapsed(),
                            log_tail(&dir.join("postgres.log")),
                            log_tail(&watchdog_log)
                        );
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ThrowawayCluster {
            admin_url,
            _watchdog: Mutex::new((child, stdin)),
        }
    }
}

/// The directory holding `initdb` and `postgres`: the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian's layout), else the directory of `initdb` on
/// `$PATH`.
fn postgres_bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            is_executable(&bin.join("initdb")).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    find_on_path("initdb")
        .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| {
            panic!(
                "no PostgreSQL server binaries found (looked for /usr/lib/postgresql/*/bin/initdb \
                 and initdb on $PATH) and DATABASE_URL is not set or not reachable; {INSTALL_HINT}"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_in_a_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "test_1"),
            "postgres://postgres@127.0.0.1:5432/test_1"
        );
        assert_eq!(
            with_database("postgres://u:p@db:5432/app?sslmode=disable", "test_1"),
            "postgres://u:p@db:5432/test_1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@db", "test_1"),
            "postgres://u@db/test_1"
        );
        assert_eq!(
            with_database("postgresql:///app?host=/run/postgresql", "test_1"),
            "postgresql:///test_1?host=/run/postgresql"
        );
    }
}
