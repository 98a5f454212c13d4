-- Inference services (issue 7): a service is a `kind: inference` job file run as `replicas` replica jobs, each on
-- its own host; agents report each replica's health, which `comity endpoints` and the gateway read.
--
-- services: one row per (project, name). `replicas` is the desired count (0 keeps the service with nothing running);
-- `spec` is the job file as validated (each replica job gets a copy with COMITY_SERVICE and COMITY_REPLICA set).
create table services (
    id          bigint generated always as identity primary key,
    project_id  bigint not null references projects(id),
    partner_id  bigint not null references partners(id),
    name        text not null,
    spec        jsonb not null,
    replicas    integer not null check (replicas between 0 and 64),
    created_at  timestamptz not null default now(),
    created_by  bigint not null references principals(id),
    updated_at  timestamptz not null default now(),
    unique (project_id, name)
);

-- A replica job names its service and its index (0 to replicas - 1). A replica that ends is replaced by a new job
-- with the same index (see Store+Services.swift, `reconcileServices`); the old job keeps its row.
alter table jobs add column service_id bigint references services(id);
alter table jobs add column replica integer;
alter table jobs add constraint jobs_replica_check
    check ((service_id is null) = (replica is null) and (replica is null or replica between 0 and 63));
create index jobs_service on jobs (service_id, replica, id) where service_id is not null;

-- What the agent last reported of a replica's attempt (HeartbeatRequest.services).
alter table attempts add column url text;
alter table attempts add column healthy boolean;
alter table attempts add column restarts integer not null default 0;
alter table attempts add column health_message text;
alter table attempts add column checked_at timestamptz;
