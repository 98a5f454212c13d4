-- Comity schema, part 1: the federation, principals, hosts, jobs, attempts, events and logs.
-- Applied once, in one transaction, by `comity-server migrate` (see Sources/ComityStore/Migrator.swift).

create table jurisdictions (
    code        text primary key check (code ~ '^[A-Z][A-Z0-9-]{1,15}$'),
    parent      text references jurisdictions(code),
    created_at  timestamptz not null default now(),
    check (parent is null or parent <> code)
);

create table regions (
    name          text primary key check (name ~ '^[a-z0-9][a-z0-9.-]{0,62}$'),
    jurisdiction  text not null references jurisdictions(code),
    created_at    timestamptz not null default now()
);

create table partners (
    id            bigint generated always as identity primary key,
    name          text not null unique check (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    jurisdiction  text not null references jurisdictions(code),
    created_at    timestamptz not null default now()
);

create table projects (
    id          bigint generated always as identity primary key,
    name        text not null unique check (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    partner_id  bigint not null references partners(id),
    created_at  timestamptz not null default now()
);

create table hosts (
    id              bigint generated always as identity primary key,
    name            text not null,
    partner_id      bigint not null references partners(id),
    region          text not null references regions(name),
    state           text not null default 'active' check (state in ('active', 'draining', 'down')),
    cpu_millis      integer not null check (cpu_millis >= 0),
    memory_bytes    bigint not null check (memory_bytes >= 0),
    -- [{index, uuid, model, memory_bytes}], ordered by index
    gpus            jsonb not null default '[]',
    labels          jsonb not null default '{}',
    agent_version   text,
    last_heartbeat  timestamptz,
    enrolled_at     timestamptz not null default now(),
    unique (partner_id, name)
);

-- A principal is who acts: a person or service (admin, auditor, partner-admin, researcher) or a host's agent.
create table principals (
    id          bigint generated always as identity primary key,
    name        text not null,
    role        text not null check (role in ('admin', 'auditor', 'partner-admin', 'researcher', 'agent')),
    partner_id  bigint references partners(id),
    project_id  bigint references projects(id),
    host_id     bigint references hosts(id),
    created_at  timestamptz not null default now(),
    check (role <> 'partner-admin' or partner_id is not null),
    check (role <> 'researcher' or project_id is not null),
    check (role <> 'agent' or host_id is not null)
);

-- Bearer tokens; only the SHA-256 of the secret is stored.
create table api_tokens (
    id            bigint generated always as identity primary key,
    principal_id  bigint not null references principals(id),
    token_hash    bytea not null unique,
    created_at    timestamptz not null default now(),
    revoked_at    timestamptz
);

-- One-time enrollment tokens, bound to a partner and a region.
create table join_tokens (
    id          bigint generated always as identity primary key,
    token_hash  bytea not null unique,
    partner_id  bigint not null references partners(id),
    region      text not null references regions(name),
    created_by  bigint references principals(id),
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null,
    used_at     timestamptz,
    host_id     bigint references hosts(id)
);

create table jobs (
    id                 bigint generated always as identity primary key,
    project_id         bigint not null references projects(id),
    partner_id         bigint not null references partners(id),
    submitted_by       bigint not null references principals(id),
    name               text not null,
    kind               text not null check (kind in ('training', 'inference')),
    spec               jsonb not null,
    state              text not null default 'queued'
                       check (state in ('queued', 'assigned', 'running', 'succeeded', 'failed', 'cancelled')),
    priority           integer not null,
    cpu_millis         integer not null,
    memory_bytes       bigint not null,
    gpus               integer not null default 0,
    gpu_model          text,
    gpu_memory_bytes   bigint,
    retries            integer not null,
    attempts           integer not null default 0,
    current_attempt    bigint,
    cancel_requested   boolean not null default false,
    exit_code          integer,
    reason             text,
    log_bytes          bigint not null default 0,
    log_seq            bigint not null default 0,
    log_truncated      boolean not null default false,
    submitted_at       timestamptz not null default now(),
    started_at         timestamptz,
    finished_at        timestamptz
) with (fillfactor = 80);

-- The scheduler's head-of-queue scan: exactly its ORDER BY, only queued rows.
create index jobs_queue on jobs (priority desc, id) where state = 'queued';
create index jobs_project on jobs (project_id, id desc);
create index jobs_active on jobs (state) where state in ('assigned', 'running');

create table attempts (
    id                bigint generated always as identity primary key,
    job_id            bigint not null references jobs(id),
    host_id           bigint not null references hosts(id),
    number            integer not null,
    state             text not null default 'assigned'
                      check (state in ('assigned', 'running', 'succeeded', 'failed', 'cancelled', 'lost', 'preempted')),
    cpu_millis        integer not null,
    memory_bytes      bigint not null,
    gpu_indices       integer[] not null default '{}',
    lease_expires_at  timestamptz not null,
    assigned_at       timestamptz not null default now(),
    started_at        timestamptz,
    ended_at          timestamptz,
    exit_code         integer,
    reason            text,
    unique (job_id, number)
);

alter table jobs add foreign key (current_attempt) references attempts(id);

-- What holds resources on hosts now, and what the reaper scans.
create index attempts_active on attempts (host_id) include (cpu_millis, memory_bytes, gpu_indices)
    where state in ('assigned', 'running');
create index attempts_lease on attempts (lease_expires_at) where state in ('assigned', 'running');

create table job_events (
    id          bigint generated always as identity primary key,
    job_id      bigint not null references jobs(id),
    attempt_id  bigint references attempts(id),
    at          timestamptz not null default now(),
    kind        text not null,
    message     text not null default ''
);
create index job_events_job on job_events (job_id, id);

-- Job output, bounded per job (see jobs.log_bytes and the server's log limit).
create table job_logs (
    job_id      bigint not null references jobs(id),
    seq         bigint not null,
    attempt_id  bigint not null references attempts(id),
    agent_seq   bigint not null,
    stream      text not null check (stream in ('stdout', 'stderr')),
    data        text not null,
    at          timestamptz not null default now(),
    primary key (job_id, seq),
    unique (attempt_id, agent_seq)
);
