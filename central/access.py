"""Access control of a PostgreSQL central store: role kinds, projects, row-level security.

Four group roles hold the privileges (``fieldcap_ingester`` writes records and blobs;
``fieldcap_curator`` imports reviews, withdraws, plans and asks for retakes; ``fieldcap_exporter``
reads for exports and reports; ``fieldcap_auditor`` reads the audit log); login roles are made
members of one or more. A project is a role ``fieldcap_project_<name>``: a device belongs to
projects through ``device_projects``, and an exporter sees the rows of a device only while it is
a member of one of that device's projects (row-level security on every table keyed by device).
Ingesters and curators see every row. Everyone may add audit rows; only auditors read them all
(curators read the withdrawals, which a repeated withdrawal needs), and a trigger stamps each row
with the session's database user, so a role cannot write in another's name.

Setting up is idempotent and runs before every grant, as the store's owner (a superuser, or the
role that owns the tables and has CREATEROLE). SQLite stores are single-user files: none of this.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

from central.commands import audit
from central.pgstore import PostgresStore
from central.store import CentralStore
from sync.errors import SyncError

Kind = Literal["ingester", "curator", "exporter", "auditor"]
KINDS: tuple[Kind, ...] = ("ingester", "curator", "exporter", "auditor")
PROJECT_PREFIX = "fieldcap_project_"
NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

# Tables whose rows belong to a device: exporters see only their projects' devices' rows.
DEVICE_TABLES = ("records", "blob_owners", "dead_letters", "dataset_annotation_sets", "dataset_annotation_versions")
EXPORTER_READS = (
    *DEVICE_TABLES,
    "blobs",
    "device_projects",
    "dataset_reviews",
    "dataset_withdrawn",
    "dataset_named_versions",
)
INGESTER_WRITES = ("records", "blobs", "blob_owners", "staging", "chunks", "dead_letters", "commands", "ingesters")
EVERYONE_READS = ("meta", "schema_migrations")

VISIBLE = f"""CREATE OR REPLACE FUNCTION fieldcap_device_visible(dev TEXT) RETURNS BOOLEAN
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM device_projects dp JOIN pg_roles r ON r.rolname = '{PROJECT_PREFIX}' || dp.project
        WHERE dp.device = dev AND pg_has_role(r.oid, 'MEMBER')
    )
$$"""

STAMP = """CREATE OR REPLACE FUNCTION fieldcap_audit_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.db_user := session_user;
    RETURN NEW;
END
$$"""


class AccessError(SyncError):
    """A grant that cannot be made (bad name, unknown role, a SQLite store, too few privileges)."""


def group(kind: Kind) -> str:
    return f"fieldcap_{kind}"


def check_name(name: str, what: str) -> str:
    if not NAME.match(name):
        raise AccessError(f"{what} {name!r}: use 1-40 lower-case letters, digits and '_', starting with a letter")
    return name


def check_login(role: str) -> str:
    check_name(role, "role")
    if role.startswith("fieldcap_"):
        raise AccessError(f"role {role}: names starting with fieldcap_ are fieldcap's group roles; name a login role")
    return role


def denied(exc: BaseException) -> bool:
    """True for PostgreSQL's 'permission denied' (SQLSTATE 42501)."""
    return getattr(exc, "sqlstate", None) == "42501"


def _pg(store: CentralStore) -> PostgresStore:
    if not isinstance(store, PostgresStore):
        raise AccessError(
            "this is a SQLite central store, a single-user file: roles and per-project access need a"
            " PostgreSQL store (--store postgresql://...); on SQLite, file permissions decide who reads it"
        )
    return store


def _sql() -> Any:
    from psycopg import sql

    return sql


def _role_exists(cur: Any, name: str) -> bool:
    return cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is not None


def role_exists(store: CentralStore, name: str) -> bool:
    with _pg(store)._tx() as cur:
        return _role_exists(cur, name)


def _ensure_group(cur: Any, name: str) -> None:
    if not _role_exists(cur, name):
        cur.execute(_sql().SQL("CREATE ROLE {} NOLOGIN").format(_sql().Identifier(name)))


def _grant(cur: Any, privileges: str, tables: Iterable[str], role: str) -> None:
    sql = _sql()
    for table in tables:
        cur.execute(sql.SQL("GRANT " + privileges + " ON {} TO {}").format(sql.Identifier(table), sql.Identifier(role)))


def _policy(cur: Any, table: str, name: str, rest: str) -> None:
    sql = _sql()
    cur.execute(sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(sql.Identifier(name), sql.Identifier(table)))
    cur.execute(sql.SQL("CREATE POLICY {} ON {} " + rest).format(sql.Identifier(name), sql.Identifier(table)))


def setup(store: CentralStore) -> None:
    """Create the group roles, grants, policies and the audit stamp (again: it is idempotent)."""
    from central.datasets import named, versions

    pg = _pg(store)
    versions.ensure_schema(pg)  # the tables exporters read must exist before they are granted
    named.ensure_schema(pg)
    with pg._tx() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(72696574)")
        for kind in KINDS:
            _ensure_group(cur, group(kind))
        tables = {str(r[0]) for r in cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
        ingester, curator, exporter, auditor = (group(k) for k in KINDS)
        _grant(cur, "SELECT", EVERYONE_READS, ingester)
        _grant(cur, "SELECT", EVERYONE_READS, curator)
        _grant(cur, "SELECT", EVERYONE_READS, exporter)
        _grant(cur, "SELECT", EVERYONE_READS, auditor)
        _grant(cur, "SELECT, INSERT, UPDATE, DELETE", INGESTER_WRITES, ingester)
        _grant(cur, "SELECT", ("device_projects",), ingester)
        curated = sorted(tables - {"audit", "device_projects", *EVERYONE_READS})
        _grant(cur, "SELECT, INSERT, UPDATE, DELETE", curated, curator)
        _grant(cur, "SELECT", ("device_projects",), curator)
        _grant(cur, "SELECT", EXPORTER_READS, exporter)
        _grant(cur, "INSERT", ("audit",), ingester)
        _grant(cur, "SELECT, INSERT", ("audit",), curator)
        _grant(cur, "INSERT", ("audit",), exporter)
        _grant(cur, "SELECT", ("audit",), auditor)
        cur.execute(VISIBLE)
        both = f"TO {ingester}, {curator} USING (true) WITH CHECK (true)"
        for table in DEVICE_TABLES:
            cur.execute(_sql().SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(_sql().Identifier(table)))
            _policy(cur, table, "fieldcap_all_rows", both)
            _policy(
                cur, table, "fieldcap_projects", f"FOR SELECT TO {exporter} USING (fieldcap_device_visible(device))"
            )
        cur.execute("ALTER TABLE blobs ENABLE ROW LEVEL SECURITY")
        _policy(cur, "blobs", "fieldcap_all_rows", both)
        _policy(
            cur,
            "blobs",
            "fieldcap_projects",
            f"FOR SELECT TO {exporter} USING (EXISTS (SELECT 1 FROM blob_owners o WHERE o.sha256 = blobs.sha256))",
        )
        cur.execute("ALTER TABLE audit ENABLE ROW LEVEL SECURITY")
        _policy(cur, "audit", "fieldcap_add", f"FOR INSERT TO {ingester}, {curator}, {exporter} WITH CHECK (true)")
        _policy(cur, "audit", "fieldcap_read", f"FOR SELECT TO {auditor} USING (true)")
        _policy(cur, "audit", "fieldcap_withdrawals", f"FOR SELECT TO {curator} USING (action = 'withdraw')")
        cur.execute(STAMP)
        cur.execute("DROP TRIGGER IF EXISTS fieldcap_audit_stamp ON audit")
        cur.execute(
            "CREATE TRIGGER fieldcap_audit_stamp BEFORE INSERT ON audit"
            " FOR EACH ROW EXECUTE FUNCTION fieldcap_audit_stamp()"
        )


def _password_verifier(pg: PostgresStore, role: str, password: str) -> str:
    """A SCRAM verifier computed here: the password itself never reaches the server or its logs."""
    conn = pg._conn()
    return bytes(conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")).decode()


def grant_role(store: CentralStore, role: str, kinds: Iterable[Kind], password: str | None, who: str) -> dict[str, Any]:
    """Create the login role (or set its password) and make it a member of the kinds' groups."""
    check_login(role)
    pg = _pg(store)
    kinds = sorted(set(kinds))
    setup(pg)
    sql = _sql()
    with pg._tx() as cur:
        exists = _role_exists(cur, role)
        if not exists and password is None:
            raise AccessError(f"role {role} does not exist: give its password (--password-file FILE, '-' for stdin)")
        if password is not None:
            verb = "ALTER" if exists else "CREATE"
            secret = _password_verifier(pg, role, password)
            cur.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(secret)))
        for kind in kinds:
            cur.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group(kind)), sql.Identifier(role)))
        detail = {"kinds": list(kinds), "created": not exists, "password_set": password is not None}
        audit(pg, "grant_role", role, detail, who)
    return {"role": role, **detail}


def grant_projects(store: CentralStore, role: str, projects: Iterable[str], revoke: bool, who: str) -> dict[str, Any]:
    """Let the role see (or stop it seeing) the devices of these projects."""
    check_name(role, "role")
    names = sorted({check_name(p, "project") for p in projects})
    pg = _pg(store)
    setup(pg)
    sql = _sql()
    with pg._tx() as cur:
        if not _role_exists(cur, role):
            raise AccessError(
                f"no role {role} on this server: create it first (fieldcap central grant role {role} --kind exporter)"
            )
        for project in names:
            _ensure_group(cur, PROJECT_PREFIX + project)
            stmt = "REVOKE {} FROM {}" if revoke else "GRANT {} TO {}"
            cur.execute(sql.SQL(stmt).format(sql.Identifier(PROJECT_PREFIX + project), sql.Identifier(role)))
        detail = {"projects": names, "revoked": revoke}
        audit(pg, "revoke_projects" if revoke else "grant_projects", role, detail, who)
    return {"role": role, **detail}


def assign_devices(store: CentralStore, project: str, devices: Iterable[str], remove: bool, who: str) -> dict[str, Any]:
    """Put devices in a project (or take them out): their rows follow the project's grants."""
    check_name(project, "project")
    devs = sorted(set(devices))
    if not devs:
        raise AccessError("name at least one device")
    pg = _pg(store)
    setup(pg)
    changed = 0
    with pg._tx() as cur:
        _ensure_group(cur, PROJECT_PREFIX + project)
        for device in devs:
            if remove:
                pg._exec(cur, "DELETE FROM device_projects WHERE device = ? AND project = ?", (device, project))
            else:
                pg._exec(
                    cur,
                    "INSERT INTO device_projects (device, project) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (device, project),
                )
            changed += int(cur.rowcount or 0)
        detail = {"devices": devs, "removed": remove, "changed": changed}
        audit(pg, "unassign_devices" if remove else "assign_devices", project, detail, who)
    return {"project": project, **detail}


def overview(store: CentralStore) -> dict[str, Any]:
    """Login roles with their kinds and projects, and the devices of each project."""
    pg = _pg(store)
    with pg._tx() as cur:
        rows = cur.execute(
            "SELECT m.rolname, g.rolname FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid"
            " JOIN pg_roles m ON m.oid = a.member WHERE g.rolname LIKE 'fieldcap\\_%' ORDER BY 1, 2"
        ).fetchall()
        devices = pg._exec(cur, "SELECT project, device FROM device_projects ORDER BY project, device").fetchall()
    roles: dict[str, dict[str, list[str]]] = {}
    for member, grp in rows:
        entry = roles.setdefault(str(member), {"kinds": [], "projects": []})
        name = str(grp)
        if name.startswith(PROJECT_PREFIX):
            entry["projects"].append(name.removeprefix(PROJECT_PREFIX))
        else:
            entry["kinds"].append(name.removeprefix("fieldcap_"))
    projects: dict[str, list[str]] = {}
    for project, device in devices:
        projects.setdefault(str(project), []).append(str(device))
    return {"roles": roles, "projects": projects}
