-- Comity schema, part 2: the sovereignty engine. Rule documents are versioned and immutable; jobs carry their
-- inputs and the jurisdictions their data may reach, which PostgreSQL itself checks whenever an attempt is bound to a
-- host (see docs/sovereignty.md).

alter table partners add column commercial boolean not null default false;
alter table projects add column purpose text check (purpose is null or purpose ~ '^[a-z0-9][a-z0-9._-]{0,62}$');
alter table projects add column commercial boolean not null default false;

-- Every applied version of every rule document (jurisdiction sets, datasets, donor and federation policies).
-- Never updated or deleted: a change is a new version.
create table policies (
    id              bigint generated always as identity primary key,
    kind            text not null check (kind in ('jurisdiction-set', 'dataset', 'donor-policy', 'federation')),
    name            text not null,
    version         integer not null check (version > 0),
    document        jsonb not null,
    source          text,
    effective_from  timestamptz not null,
    applied_at      timestamptz not null default now(),
    applied_by      bigint references principals(id),
    -- For datasets registered from a job's declared outputs.
    produced_by_job bigint references jobs(id),
    reason          text,
    unique (kind, name, version)
);

create function policies_immutable() returns trigger language plpgsql as $$
begin
    raise exception 'rule versions are immutable: apply a new version instead' using errcode = '55000';
end $$;
create trigger policies_immutable before update or delete on policies
    for each row execute function policies_immutable();

-- Bumped whenever anything the rules are evaluated against changes, so servers reload their snapshot only then.
create table policy_state (
    singleton   boolean primary key default true check (singleton),
    generation  bigint not null default 0,
    -- The rules (ActivePolicies id) running jobs were last checked against: when an announced version takes
    -- effect, the first replica to notice checks them again.
    enforced    text
);
insert into policy_state (singleton, generation) values (true, 0);

create function policy_state_bump() returns trigger language plpgsql as $$
begin
    update policy_state set generation = generation + 1;
    return null;
end $$;
create trigger policies_bump after insert on policies for each statement execute function policy_state_bump();
create trigger partners_bump after insert or update or delete on partners for each statement execute function policy_state_bump();
create trigger projects_bump after insert or update or delete on projects for each statement execute function policy_state_bump();
create trigger jurisdictions_bump after insert or update or delete on jurisdictions for each statement execute function policy_state_bump();
create trigger regions_bump after insert or update or delete on regions for each statement execute function policy_state_bump();

alter table jobs add column inputs text[] not null default '{}';
alter table jobs add column max_runtime_seconds bigint not null default 86400;
-- Jurisdictions the job's data may reach (null: anywhere), materialized from its inputs' rules at submission and
-- on every rule change.
alter table jobs add column permitted_jurisdictions text[];
-- Attempts ended by a rule change or a refused claim: they requeue without using a retry.
alter table jobs add column policy_stops integer not null default 0;

-- The rules in force when the attempt was placed (ActivePolicies.id).
alter table attempts add column policy_version text;
-- A donor policy change excludes a running guest: it is preempted at stop_after (the donor's grace).
alter table attempts add column stop_after timestamptz;
alter table attempts add column stop_reason text;
create index attempts_stop_after on attempts (stop_after) where stop_after is not null and state in ('assigned', 'running');

-- The last line of defence: no code path, present or future, binds an attempt to a host outside the job's
-- permitted jurisdictions. Inserts (a scheduling pass writes thousands in one statement) are checked once per
-- statement over the inserted rows; a change of an attempt's host or job is checked row by row.
create function attempts_residency_inserted() returns trigger language plpgsql as $$
declare
    bad record;
begin
    select a.job_id, a.host_id, j.permitted_jurisdictions as allowed, r.jurisdiction into bad
    from inserted a
    join jobs j on j.id = a.job_id
    join hosts h on h.id = a.host_id
    join regions r on r.name = h.region
    where j.permitted_jurisdictions is not null and not (r.jurisdiction = any(j.permitted_jurisdictions))
    limit 1;
    if found then
        raise exception 'residency violation: job % may run only in {%}, host % is in %',
            bad.job_id, array_to_string(bad.allowed, ','), bad.host_id, bad.jurisdiction
            using errcode = '23514';
    end if;
    return null;
end $$;
create trigger attempts_residency_inserted after insert on attempts
    referencing new table as inserted
    for each statement execute function attempts_residency_inserted();

create function attempts_residency_moved() returns trigger language plpgsql as $$
declare
    allowed text[];
    host_jurisdiction text;
begin
    select permitted_jurisdictions into allowed from jobs where id = new.job_id;
    if allowed is null then
        return new;
    end if;
    select r.jurisdiction into host_jurisdiction from hosts h join regions r on r.name = h.region where h.id = new.host_id;
    if host_jurisdiction is null or not (host_jurisdiction = any(allowed)) then
        raise exception 'residency violation: job % may run only in {%}, host % is in %',
            new.job_id, array_to_string(allowed, ','), new.host_id, coalesce(host_jurisdiction, '?')
            using errcode = '23514';
    end if;
    return new;
end $$;
create trigger attempts_residency_moved before update of host_id, job_id on attempts
    for each row execute function attempts_residency_moved();

-- Moving a host to a region in another jurisdiction may not carry active work out of its permitted area.
create function hosts_residency() returns trigger language plpgsql as $$
begin
    if exists (
        select 1 from attempts a join jobs j on j.id = a.job_id join regions r on r.name = new.region
        where a.host_id = new.id and a.state in ('assigned', 'running')
          and j.permitted_jurisdictions is not null and not (r.jurisdiction = any(j.permitted_jurisdictions))
    ) then
        raise exception 'residency violation: host % runs work that may not move to region %', new.id, new.region
            using errcode = '23514';
    end if;
    return new;
end $$;
create trigger hosts_residency before update of region on hosts
    for each row execute function hosts_residency();
