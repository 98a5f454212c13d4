-- Comity schema, part 4: fair sharing by contribution (docs/sharing.md). Partners are entitled to a share of each
-- pool from what their hosts measurably offered (decayed) plus admins' grants; the scheduler orders the queue by
-- how far each partner and project is from its share, enforces hard quotas, and reclaims capacity from borrowers.

-- Within a partner, its projects share in proportion to these.
alter table projects add column shares integer not null default 1 check (shares > 0);
-- Fraction of each pool a partner may hold beyond its entitlement (null: any idle capacity).
alter table partners add column borrow_limit double precision check (borrow_limit is null or borrow_limit >= 0);
-- Fraction of its own hosts' capacity that guests may hold at once (null: all of it).
alter table partners add column lend_limit double precision check (lend_limit is null or (lend_limit >= 0 and lend_limit <= 1));
-- Its hosts take inference services as guests, and never reclaim them.
alter table partners add column lends_non_reclaimable boolean not null default false;

-- Bumped whenever what fair sharing reads changes (weights, grants, quotas, limits, accounting), so servers
-- reload their sharing context only then.
create table sharing_state (
    singleton     boolean primary key default true check (singleton),
    generation    bigint not null default 0,
    -- Contribution and usage are accounted up to here.
    accounted_at  timestamptz not null default now()
);
insert into sharing_state (singleton) values (true);

create function sharing_state_bump() returns trigger language plpgsql as $$
begin
    update sharing_state set generation = generation + 1;
    return null;
end $$;

-- How much one GPU of a model counts for (an H100-hour is not an L4-hour): the longest pattern contained in the
-- model name, case-insensitively; 1 when none matches.
create table gpu_weights (
    pattern     text primary key check (length(pattern) between 1 and 100 and pattern = lower(pattern)),
    weight      double precision not null check (weight > 0 and weight <= 1000),
    updated_at  timestamptz not null default now()
);

-- Shares of a pool given to a partner regardless of its hardware.
create table grants (
    id          bigint generated always as identity primary key,
    partner_id  bigint not null references partners(id),
    kind        text not null check (kind in ('gpu', 'cpu', 'memory')),
    fraction    double precision not null check (fraction > 0 and fraction <= 1),
    reason      text not null default '',
    created_by  bigint references principals(id),
    created_at  timestamptz not null default now(),
    revoked_at  timestamptz,
    revoked_by  bigint references principals(id)
);
create unique index grants_active on grants (partner_id, kind) where revoked_at is null;

-- Hard limits on what a partner or project holds at once, everywhere or in one region.
create table quotas (
    id            bigint generated always as identity primary key,
    scope         text not null check (scope in ('partner', 'project')),
    partner_id    bigint references partners(id),
    project_id    bigint references projects(id),
    region        text references regions(name),
    gpus          integer check (gpus >= 0),
    cpu_millis    integer check (cpu_millis >= 0),
    memory_bytes  bigint check (memory_bytes >= 0),
    set_by        bigint references principals(id),
    set_at        timestamptz not null default now(),
    check ((scope = 'partner') = (partner_id is not null) and (scope = 'project') = (project_id is not null)),
    unique nulls not distinct (scope, partner_id, project_id, region)
);

-- Decayed contribution (capacity × seconds offered) per partner and decayed usage per project, in weighted GPU,
-- CPU-core and GiB seconds, up to sharing_state.accounted_at.
create table partner_contribution (
    partner_id  bigint primary key references partners(id),
    gpu         double precision not null default 0,
    cpu         double precision not null default 0,
    memory      double precision not null default 0
);
create table project_usage (
    project_id  bigint primary key references projects(id),
    partner_id  bigint not null references partners(id),
    gpu         double precision not null default 0,
    cpu         double precision not null default 0,
    memory      double precision not null default 0
);

-- What each host offered, per hour, undecayed: for `comity usage`.
create table host_hours (
    host_id         bigint not null references hosts(id),
    hour            timestamptz not null,
    up_seconds      double precision not null default 0,
    gpu_seconds     double precision not null default 0,
    cpu_seconds     double precision not null default 0,
    memory_seconds  double precision not null default 0,
    primary key (host_id, hour)
);

create trigger gpu_weights_bump after insert or update or delete on gpu_weights for each statement execute function sharing_state_bump();
create trigger grants_bump after insert or update or delete on grants for each statement execute function sharing_state_bump();
create trigger quotas_bump after insert or update or delete on quotas for each statement execute function sharing_state_bump();
create trigger partners_sharing_bump after insert or update or delete on partners for each statement execute function sharing_state_bump();
create trigger projects_sharing_bump after insert or update or delete on projects for each statement execute function sharing_state_bump();

-- Services (inference) are not preempted unless their spec opts in; batch jobs are.
alter table jobs add column preemptible boolean not null default true;
-- The last time a reclaim preempted the job: it is not preempted again within the cool-down window.
alter table jobs add column last_preempted_at timestamptz;

-- Who holds what, without a join: quotas and standings sum the active attempts by partner and project. Copies of
-- the job's (whose foreign keys stand for them: no second check on the placement path).
alter table attempts add column partner_id bigint;
alter table attempts add column project_id bigint;
-- Placed on another partner's host; borrowed: beyond its partner's entitlement when placed.
alter table attempts add column guest boolean not null default false;
alter table attempts add column borrowed boolean not null default false;
update attempts a set partner_id = j.partner_id, project_id = j.project_id, guest = (j.partner_id <> h.partner_id)
from jobs j, hosts h where j.id = a.job_id and h.id = a.host_id;

drop index attempts_active;
create index attempts_active on attempts (host_id) include (cpu_millis, memory_bytes, gpu_indices, partner_id, project_id, guest)
    where state in ('assigned', 'running');
-- Accounting reads the attempts that ended since it last ran.
create index attempts_ended on attempts (ended_at) where ended_at is not null;

-- Each project's queue head, for a pass that takes the head of every project rather than of the whole queue.
create index jobs_queue_project on jobs (project_id, priority desc, id) where state = 'queued';

-- A host being reclaimed for a waiting job: only that job may be placed on it until it is placed or the
-- reservation expires.
create table reservations (
    job_id      bigint primary key references jobs(id),
    host_id     bigint not null references hosts(id),
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null
);
