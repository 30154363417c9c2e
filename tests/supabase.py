"""A cluster laid out the way a hosted Supabase project is, for the suites that must hold on it.

- `supabase_admin` is the bootstrap superuser; it owns schema `extensions` and the extensions in
  it (pg_stat_statements, hypopg where the server offers it, amcheck, pgcrypto) and the `auth`
  and `storage` schemas.
- `postgres` — the role a team connects as — is NOSUPERUSER with CREATEROLE, CREATEDB,
  REPLICATION and BYPASSRLS, a member of pg_read_all_stats, and with ADMIN OPTION of
  pg_read_all_data, pg_monitor, anon, authenticated and service_role, with
  `search_path "$user", public, extensions`; it owns the application
  tables (the HotDash sample, loaded as `postgres`).
- `anon`, `authenticated`, `service_role` (BYPASSRLS) are NOLOGIN; `authenticator` is LOGIN
  NOINHERIT; `auth.users` and `storage.objects` have RLS and policies; the `pgrst_ddl_watch`
  event trigger fires on every DDL command, as PostgREST's does.
"""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql

from bot import pgcluster
from bot.sample import hotdash

ADMIN = "supabase_admin"
POSTGRES = "postgres"
PASSWORD = "supabase-Pa55"
TEMPLATE = "supabase_template"
SCALE = 0.05
EXTENSIONS = ("pg_stat_statements", "hypopg", "amcheck", "pgcrypto")

ROLES_SQL = f"""
CREATE ROLE postgres LOGIN PASSWORD '{PASSWORD}' NOSUPERUSER CREATEROLE CREATEDB REPLICATION
  BYPASSRLS;
CREATE ROLE anon NOLOGIN NOINHERIT;
CREATE ROLE authenticated NOLOGIN NOINHERIT;
CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
CREATE ROLE authenticator LOGIN NOINHERIT PASSWORD '{PASSWORD}';
CREATE ROLE supabase_auth_admin NOLOGIN NOINHERIT CREATEROLE;
CREATE ROLE supabase_storage_admin NOLOGIN NOINHERIT CREATEROLE;
GRANT anon, authenticated, service_role TO authenticator;
GRANT pg_read_all_stats TO postgres;
GRANT pg_read_all_data, pg_monitor TO postgres WITH ADMIN OPTION;
GRANT anon, authenticated, service_role TO postgres WITH ADMIN OPTION;
ALTER ROLE postgres SET search_path = "$user", public, extensions;
"""

# Run by supabase_admin in the template database, {extensions} being a CREATE EXTENSION … WITH
# SCHEMA extensions for each of EXTENSIONS the server offers, {gen_random_uuid} pgcrypto's
# (extensions.gen_random_uuid) or, without it, PostgreSQL's own.
PLATFORM_SQL = """
CREATE SCHEMA extensions;
GRANT USAGE ON SCHEMA extensions TO postgres, anon, authenticated, service_role;
{extensions}
GRANT ALL ON ALL FUNCTIONS IN SCHEMA extensions TO postgres WITH GRANT OPTION;
GRANT ALL ON ALL TABLES IN SCHEMA extensions TO postgres WITH GRANT OPTION;
GRANT ALL ON SCHEMA public TO postgres, anon, authenticated, service_role;

CREATE SCHEMA auth AUTHORIZATION supabase_auth_admin;
GRANT USAGE ON SCHEMA auth TO postgres, anon, authenticated, service_role;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
  AS $$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
ALTER FUNCTION auth.uid() OWNER TO supabase_auth_admin;
CREATE TABLE auth.users (id uuid PRIMARY KEY DEFAULT {gen_random_uuid}(),
                         email text NOT NULL UNIQUE, created_at timestamptz DEFAULT now());
ALTER TABLE auth.users OWNER TO supabase_auth_admin;
ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;
GRANT ALL ON auth.users TO postgres;
INSERT INTO auth.users (email)
  SELECT 'user' || i || '@example.com' FROM generate_series(1, 50) i;

CREATE SCHEMA storage AUTHORIZATION supabase_storage_admin;
GRANT USAGE ON SCHEMA storage TO postgres, anon, authenticated, service_role;
CREATE TABLE storage.buckets (id text PRIMARY KEY, public boolean DEFAULT false);
CREATE TABLE storage.objects (id uuid PRIMARY KEY DEFAULT {gen_random_uuid}(),
                              bucket_id text REFERENCES storage.buckets, name text,
                              owner uuid);
ALTER TABLE storage.buckets OWNER TO supabase_storage_admin;
ALTER TABLE storage.objects OWNER TO supabase_storage_admin;
ALTER TABLE storage.buckets ENABLE ROW LEVEL SECURITY;
ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY;
CREATE POLICY "own objects" ON storage.objects FOR SELECT TO authenticated
  USING (owner = auth.uid());
GRANT ALL ON storage.buckets, storage.objects TO postgres, service_role;
GRANT SELECT ON storage.buckets, storage.objects TO authenticated, anon;
INSERT INTO storage.buckets VALUES ('avatars', true);
INSERT INTO storage.objects (bucket_id, name, owner)
  SELECT 'avatars', 'a' || id, id FROM auth.users;

CREATE FUNCTION extensions.pgrst_ddl_watch() RETURNS event_trigger LANGUAGE plpgsql
  AS $$ BEGIN PERFORM pg_notify('pgrst', 'reload schema'); END $$;
CREATE EVENT TRIGGER pgrst_ddl_watch ON ddl_command_end
  EXECUTE FUNCTION extensions.pgrst_ddl_watch();

ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
  GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
  GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;
"""

# Run by postgres after the sample: a table the API exposes without RLS.
APP_SQL = """
CREATE TABLE public.announcements (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                   body text NOT NULL);
INSERT INTO public.announcements (body) VALUES ('welcome'), ('maintenance tonight');
"""


def create_cluster(settings: dict[str, str] | None = None) -> pgcluster.Cluster:
    """A throwaway cluster bootstrapped as `supabase_admin`, with Supabase's roles and the
    template database every test clones; the caller must `destroy()` it."""
    cluster = pgcluster.create(settings, superuser=ADMIN)
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(ROLES_SQL)
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER postgres").format(
                sql.Identifier(TEMPLATE)))
        with psycopg.connect(cluster.dsn(TEMPLATE), autocommit=True) as conn:
            available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions")}
            conn.execute(PLATFORM_SQL.replace("{extensions}", "\n".join(
                f"CREATE EXTENSION {name} WITH SCHEMA extensions;"
                for name in EXTENSIONS if name in available)).replace(
                "{gen_random_uuid}", "extensions.gen_random_uuid" if "pgcrypto" in available
                else "pg_catalog.gen_random_uuid"))
        with psycopg.connect(cluster.dsn(TEMPLATE, POSTGRES, PASSWORD),
                             autocommit=True) as conn:
            hotdash.load(conn, scale=SCALE)
            conn.execute(APP_SQL)
    except BaseException:
        cluster.destroy()
        raise
    return cluster


def clone(cluster: pgcluster.Cluster) -> str:
    """A fresh database copied from the template, owned by `postgres`; its name."""
    name = f"sb_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER postgres").format(
            sql.Identifier(name), sql.Identifier(TEMPLATE)))
    return name


def url(cluster: pgcluster.Cluster, name: str) -> str:
    """How a team connects: as `postgres`, with its password, directly."""
    return cluster.url(name, POSTGRES, PASSWORD)
